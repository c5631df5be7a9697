"""The retrieval protocol on synthetic captioned mp4 clips with the tiny model: its numbers equal a direct
computation, every video and caption is embedded once, views are averaged, bad videos leave with their captions,
and the runner and `msta-eval --protocol retrieval` write results.json / results.md."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from msta.config import config_from_dict
from msta.data.captions import group_by_video, read_caption_list
from msta.eval.loading import build_eval_model
from msta.eval.retrieval import retrieval_metrics
from msta.eval.retrieval_protocol import embed_captioned_videos, retrieval
from msta.eval.runner import run_protocol

CLASSES = ["red_square", "green_circle", "blue_triangle"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """3 classes x 3 test videos (9 mp4s, 4 frames, 32 px), 2 captions each."""
    from msta.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("retrieval")
    ds = write_synthetic_dataset(root / "data", "appearance", splits={"test": 3}, classes=CLASSES, num_frames=4,
                                 size=32, name="synth", prompts_dir=root / "prompts", progress=False, captions=True)
    return {"root": root, "videos": ds.root, "test": ds.caption_lists["test"]}


def _cfg(world: dict, **eval_kw):
    return config_from_dict({
        "name": "r", "model": {"name": "msta-tiny", "num_frames": 4,
                               "msta": {"text_blocks": [1, 2], "vision_blocks": [1, 2], "dim": 8}},
        "data": {"dataset": "synth", "root": str(world["videos"]), "test_list": str(world["test"]),
                 "num_workers": 0, "input_size": 32},
        "loss": {"kind": "infonce"}, "eval": {"protocol": "retrieval", "batch_size": 4, **eval_kw}})


@pytest.fixture(scope="module")
def model(world):
    torch.manual_seed(0)
    m = build_eval_model(_cfg(world).model, None)
    state = m.adapter_state_dict()      # non-identity adapters: the adapted text and video branches both matter
    g = torch.Generator().manual_seed(1)
    m.load_adapter_state_dict({k: 0.5 * torch.randn(v.shape, generator=g) for k, v in state.items()})
    return m.eval()


def test_numbers_equal_a_direct_computation_and_inputs_are_embedded_once(world, model, tmp_path, monkeypatch):
    calls = {"video": 0, "text": 0}
    enc_v, enc_t = model.encode_video, model.encode_text

    def count_video(x):
        calls["video"] += 1
        return enc_v(x)

    def count_text(ids):
        calls["text"] += 1
        return enc_t(ids)

    monkeypatch.setattr(model, "encode_video", count_video)
    monkeypatch.setattr(model, "encode_text", count_text)
    record = retrieval(_cfg(world, dual_softmax=100.0), model, out_dir=tmp_path)
    assert calls == {"video": 3, "text": 1}                  # 9 videos in batches of 4, 18 captions in one batch
    monkeypatch.undo()

    from msta.data.datasets import CaptionDataset, build_video_dataset

    videos = group_by_video(read_caption_list(world["test"]))
    ds = build_video_dataset(videos, _cfg(world).data, train=False, num_frames=4, image_size=32,
                             mean=model.image_mean, std=model.image_std, dataset_cls=CaptionDataset)
    with torch.no_grad():
        v = torch.cat([model.encode_video(ds[i]["video"]) for i in range(len(ds))])          # one view each
        texts = [c for vid in videos for c in vid.captions]
        t = model.encode_text(model.tokenize(texts))
    owner = [i for i, vid in enumerate(videos) for _ in vid.captions]
    want = retrieval_metrics(F.normalize(t, dim=-1) @ F.normalize(v, dim=-1).t(), owner)
    for k, value in want.items():
        assert record.metrics[k] == pytest.approx(value, abs=1e-9), k
    assert record.num_videos == 9 and record.extra["counts"]["test_captions"] == {"videos": 9, "captions": 18}
    assert any(k.startswith("dsl_t2v_r1") for k in record.metrics)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["protocol"] == "retrieval" and saved["metrics"]["t2v_r1"] == record.metrics["t2v_r1"]
    md = (tmp_path / "results.md").read_text()
    assert "dual softmax (scale 100, transductive)" in md and "t2v_medr" in md and "frozen CLIP" in md


def test_views_are_averaged_and_batching_them_changes_nothing(world, model):
    from msta.config import ViewsCfg
    from msta.data.datasets import CaptionDataset, build_video_dataset

    cfg = _cfg(world, views={"clips": 2, "crops": 1})
    videos = group_by_video(read_caption_list(world["test"]))
    ds = build_video_dataset(videos, cfg.data, train=False, num_frames=4, image_size=32, mean=model.image_mean,
                             std=model.image_std, views=ViewsCfg(clips=2, crops=1), dataset_cls=CaptionDataset)
    folded = embed_captioned_videos(model, ds, batch_size=4)
    by_view = embed_captioned_videos(model, ds, batch_size=4, batch_views=False)
    torch.testing.assert_close(folded.video_emb, by_view.video_emb, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        views = F.normalize(model.encode_video(ds[4]["video"]), dim=-1)                        # (2, E)
    torch.testing.assert_close(folded.video_emb[4], F.normalize(views.mean(0), dim=0), atol=1e-5, rtol=1e-5)


def test_a_bad_video_leaves_with_its_captions(world, model, tmp_path):
    import shutil

    videos = tmp_path / "videos"
    shutil.copytree(world["videos"], videos)
    first = read_caption_list(world["test"])[0].path
    (videos / first).write_bytes(b"not an mp4")
    cfg = _cfg({**world, "videos": videos}, batch_size=2)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_bad_fraction=0.5))
    record = retrieval(cfg, model)
    assert record.num_videos == 8 and record.num_bad_videos == 1
    assert record.extra["counts"]["test_captions"] == {"videos": 8, "captions": 16}


def test_runner_and_cli_write_the_retrieval_results(world, tmp_path, capsys):
    cfg = _cfg(world)
    torch.manual_seed(0)     # the frozen model is randomly initialised: the same draw for both runs
    records = run_protocol(cfg, "retrieval", (), tmp_path / "runner")
    assert records[0].protocol == "retrieval" and (tmp_path / "runner" / "results.md").is_file()

    import yaml

    from msta.cli.eval import main as eval_main
    from msta.config import config_to_dict

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    torch.manual_seed(0)
    assert eval_main(["--cfg", str(path), "--protocol", "retrieval", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("retrieval synth [frozen CLIP") and "t2v_r1" in out
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["metrics"] == pytest.approx(
        records[0].metrics)

    from msta.cli.zeroshot_eval import main as zeroshot_main

    torch.manual_seed(0)     # zeroshot_eval on a retrieval config: the zero-shot retrieval of the frozen model
    assert zeroshot_main(["--cfg", str(path), "--out", str(tmp_path / "zs")]) == 0
    assert capsys.readouterr().out.startswith("synth: text->video R@1 ")
    assert json.loads((tmp_path / "zs" / "results.json").read_text())["metrics"] == pytest.approx(records[0].metrics)


@pytest.mark.parametrize("name, model", [("retrieval_msrvtt.yaml", ("ViT-B-16", "openai")),
                                         ("retrieval_msrvtt_viclip.yaml", ("viclip-b16", None))])
def test_shipped_retrieval_configs_read_the_preparers_outputs(name, model):
    from msta.config import load_config
    from msta.data.msrvtt import SPLITS

    cfg = load_config(Path(__file__).parents[2] / "configs" / name)
    assert cfg.model.name == model[0] and (model[1] is None or cfg.model.pretrained == model[1])
    assert cfg.data.root == "data/msrvtt" and cfg.data.class_table == ""
    lists = {cfg.data.train_list, cfg.data.test_list}
    assert lists == {"data/msrvtt/lists/train_9k.txt", "data/msrvtt/lists/test_1k.txt"}
    assert {Path(p).stem for p in lists} <= set(SPLITS)            # the file names prepare_data msrvtt writes
    assert (cfg.loss.kind, cfg.loss.negatives, cfg.loss.consistency) == ("infonce", "global", False)
    assert cfg.eval.protocol == "retrieval" and (cfg.eval.views.clips, cfg.eval.views.crops) == (1, 1)
    m = cfg.model.msta
    assert m.enabled and m.text and m.vision and m.dim == 128 and cfg.model.num_frames == 8
    assert (cfg.data.color_jitter, cfg.data.grayscale, cfg.data.flip) == (0.0, 0.0, False)


@pytest.mark.slow
@pytest.mark.distributed
def test_retrieval_sharded_over_two_processes_equals_one(world, tmp_path):
    """msta.cli.eval --protocol retrieval under torchrun (2 gloo processes, each embedding its share of the batches,
    one undecodable video in a shard) writes the same results.json as one process."""
    import shutil
    import subprocess
    import sys

    import open_clip
    import yaml

    import msta.models  # noqa: F401  (registers msta-tiny with open_clip)
    from msta.config import config_to_dict
    from msta.engine.distributed import free_port
    from tests.engine.helpers import REPO, env

    videos = tmp_path / "videos"
    shutil.copytree(world["videos"], videos)
    (videos / "broken.mp4").write_bytes(b"\x00" * 64)
    lines = Path(world["test"]).read_text().splitlines()
    lines.insert(5, "broken.mp4\ta clip that cannot be decoded")          # 10 videos, batch 4: 3 batches
    test_list = tmp_path / "test_captions.txt"
    test_list.write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("msta-tiny", pretrained=None).state_dict(), tmp_path / "tiny.pt")
    raw = config_to_dict(_cfg({**world, "videos": videos, "test": test_list}, dual_softmax=1.0))
    raw["model"]["pretrained"] = str(tmp_path / "tiny.pt")              # both runs build the same backbone
    raw["data"]["max_bad_fraction"] = 0.2
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(raw))

    def run(nproc: int, out: str) -> subprocess.CompletedProcess:
        launch = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m"] if nproc > 1
                  else [sys.executable, "-m"])
        done = subprocess.run([*launch, "msta.cli.eval", "--cfg", str(tmp_path / "eval.yaml"), "--protocol",
                               "retrieval", "--device", "cpu", "--out", str(tmp_path / out)], env=env(tmp_path),
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    run(1, "one")
    two = run(2, "two")
    assert two.stdout.count("retrieval synth") == 1                       # rank 0 prints and writes
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    a.pop("created"), b.pop("created")
    assert a == b
    assert a["num_videos"] == 9 and a["num_bad_videos"] == 1 and "dsl_t2v_r1" in a["metrics"]
