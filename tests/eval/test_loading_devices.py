"""Where evaluation runs: the device choice, the autocast dtype of the training precision, the clean error for CUDA
where there is none, and evaluation sharded over 2 CPU processes (gloo, torchrun) giving the 1-process results."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from msta import devices as D
from msta.errors import UsageError
from tests.eval.test_protocols import cfg_dict, make_world

REPO = Path(__file__).resolve().parents[2]


def test_select_device_auto_and_explicit(monkeypatch):
    assert not torch.cuda.is_available()          # the suite hides GPUs (conftest); the CUDA answers are faked below
    assert D.select_device() == D.select_device("auto") == torch.device("cpu")
    assert D.select_device("cpu") == D.select_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    assert D.select_device() == torch.device("cuda", 1)          # under torchrun: this process's GPU
    assert D.select_device("cuda") == torch.device("cuda", 1)
    assert D.select_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UsageError, match=r"--device cuda:5: there are 2 GPUs"):
        D.select_device("cuda:5")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")                  # the trainer's rule: DS_ACCELERATOR=cpu wins
    assert D.select_device() == torch.device("cpu")


def test_cuda_without_cuda_is_one_clean_error():
    for asked in ("cuda", "cuda:0"):
        with pytest.raises(UsageError, match=rf"--device {asked}: CUDA is not available .*use --device cpu"):
            D.select_device(asked)
    for asked in ("tpu", "gpu0", "mps"):
        with pytest.raises(UsageError, match=rf"--device {asked}: "):
            D.select_device(asked)


def test_autocast_dtype_selection(monkeypatch):
    for precision in ("fp32", "bf16", "fp16"):
        assert D.autocast_dtype("cpu", precision) is None          # the CPU always evaluates in fp32
    assert D.autocast_dtype("cuda", "fp32") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert D.autocast_dtype("cuda", "bf16") is torch.bfloat16
    assert D.autocast_dtype("cuda:1", "fp16") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert D.autocast_dtype("cuda", "bf16") is torch.float16      # a GPU without bf16 falls back to fp16
    with pytest.raises(UsageError, match="precision 'int8'"):
        D.autocast_dtype("cuda", "int8")


def test_autocast_context_really_casts():
    a = torch.randn(4, 4)
    with D.autocast("cpu", None):
        assert (a @ a).dtype == torch.float32
    with D.autocast("cpu", torch.bfloat16):                        # the same context object runs CUDA's autocast
        assert (a @ a).dtype == torch.bfloat16


def test_runner_places_the_model_on_the_chosen_device(tmp_path, monkeypatch):
    """run_protocol moves the model to the device it was given (the model code never picks one)."""
    from msta.config import config_from_dict
    from msta.eval import runner

    world = make_world(tmp_path)
    placed = []
    real = runner.build_eval_model
    monkeypatch.setattr(runner, "build_eval_model", lambda *a, **k: placed.append(k.get("device")) or real(*a, **k))
    cfg = config_from_dict(cfg_dict(world))
    runner.run_protocol(cfg, "supervised", [], tmp_path / "out", device="cpu")
    assert placed == [torch.device("cpu")]
    with pytest.raises(UsageError, match="CUDA is not available"):
        runner.run_protocol(cfg, "supervised", [], tmp_path / "out2", device="cuda")
    assert not (tmp_path / "out2").exists()


def _run(nproc: int, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """The real command, ``msta.cli.eval``: plainly, or with ``nproc`` processes under torchrun (gloo)."""
    from msta.engine.distributed import free_port
    from tests.engine.helpers import env

    launch = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "-m"] if nproc > 1 else [sys.executable, "-m"])
    done = subprocess.run([*launch, "msta.cli.eval", *args], env=env(tmp), capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.distributed
def test_sharded_evaluation_equals_one_process(tmp_path):
    """2 gloo processes each score part of the videos (5 batches: 3 + 2, one undecodable video in a shard) and
    rank 0 writes one results.json equal to the 1-process one (all fields but the time of writing)."""
    from msta import adapters_io as A
    from msta.config import config_from_dict, config_to_dict
    from msta.models import build_model
    from tests.eval.test_protocols import CLASSES

    world = make_world(tmp_path / "w")
    lines = Path(world["test"]).read_text().splitlines()
    (world["videos"] / "broken.mp4").write_bytes(b"\x00" * 64)
    lines.insert(6, f"broken.mp4 {int(lines[0].split()[-1])}")
    Path(world["test"]).write_text("\n".join(lines) + "\n")        # 19 videos, batch 4: 5 batches
    raw = cfg_dict(world, views={"clips": 2, "crops": 1})
    raw["eval"]["batch_size"] = 4
    raw["data"]["max_bad_fraction"] = 0.2
    raw["model"]["pretrained"] = str(tmp_path / "tiny.pt")           # both runs must build the same backbone
    import open_clip

    torch.manual_seed(0)
    torch.save(open_clip.create_model("msta-tiny", pretrained=None).state_dict(), tmp_path / "tiny.pt")
    cfg = config_from_dict(raw)
    template = build_model(cfg.model)
    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in template.adapter_state_dict().items()}
    ckpt = A.save_adapters(A.adapter_payload(state_dict=state, config=config_to_dict(cfg), class_names=CLASSES,
                                             raw_labels=CLASSES, templates=["a video of {}."], step=1, epoch=1),
                           tmp_path / "run" / "best")
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))

    args = ["--cfg", str(cfg_file), "--ckpt", str(ckpt), "--protocol", "supervised", "--device", "cpu", "--out"]
    one = _run(1, tmp_path, *args, str(tmp_path / "one"))
    two = _run(2, tmp_path, *args, str(tmp_path / "two"))
    assert "evaluation process 1 of 2" in two.stderr and "evaluation process" not in one.stderr
    assert two.stdout.count("supervised synth") == 1 == one.stdout.count("supervised synth")   # rank 0 prints
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    a.pop("created"), b.pop("created")
    assert a == b
    assert a["num_videos"] == 18 and a["num_bad_videos"] == 1
    assert (tmp_path / "one" / "results.md").read_text() == (tmp_path / "two" / "results.md").read_text()


def test_cli_device_cuda_without_cuda_is_exit_2(tmp_path, capsys):
    from msta.cli import eval as eval_cli, predict as predict_cli

    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    for main, argv in ((predict_cli.main, [str(video), "--model", "msta-tiny", "--pretrained", "", "--labels", "a,b",
                                           "--device", "cuda"]),
                       (eval_cli.main, ["--cfg", str(tmp_path / "none.yaml"), "--device", "cuda:0"])):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "CUDA is not available" in err and "Traceback" not in err, err


def test_similarities_stay_fp32_under_autocast(tmp_path):
    """Under bf16 autocast the encoders run in bf16 but the scaled cosines are taken in fp32: bf16 would round
    logits near 100 to steps of 0.5 and turn close classes into ties."""
    from msta.config import config_from_dict
    from msta.data.datasets import build_video_dataset
    from msta.eval.evaluator import ClassBank, logit_scale_of, score_dataset
    from msta.eval.loading import build_eval_model
    from tests.eval.test_protocols import CLASSES

    world = make_world(tmp_path)
    cfg = config_from_dict(cfg_dict(world))
    model = build_eval_model(cfg.model)
    ds = build_video_dataset(world["items"][:3], cfg.data, train=False, num_frames=cfg.model.num_frames,
                             image_size=model.image_size, mean=model.image_mean, std=model.image_std,
                             views=cfg.eval.views)
    with D.autocast("cpu", torch.bfloat16):
        emb = ClassBank(model)(CLASSES, ["a video of {}."])
        matrix = score_dataset(model, ds, emb, CLASSES, batch_size=1)
        outs = [model.encode_video(ds[i]["video"].unsqueeze(0).flatten(0, 1).float()).float() for i in range(3)]
    scale = logit_scale_of(model)
    fp32 = torch.stack([scale * o @ emb.t() for o in outs])                      # (3, V, C)
    bf16 = torch.stack([(scale * o).bfloat16() @ emb.bfloat16().t() for o in outs]).float()
    torch.testing.assert_close(matrix.logits, fp32, atol=1e-4, rtol=1e-5)
    assert (matrix.logits - bf16).abs().max() > 1e-3                              # the test can tell them apart


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                           reason="needs a GPU: run with CUDA_VISIBLE_DEVICES=0 (the suite hides GPUs by default)")


@_CUDA
def test_cuda_bf16_evaluation_and_api_match_the_cpu(tmp_path):
    """The GPU path for real: the model and inputs on cuda, encoders under bf16 autocast, scores back on the CPU and
    close to the fp32 CPU scores; the API on cuda predicts the same classes."""
    import open_clip

    import msta
    import msta.models  # noqa: F401  (registers msta-tiny with open_clip)
    from msta import adapters_io as A
    from msta.config import config_from_dict, config_to_dict
    from msta.data.datasets import build_video_dataset
    from msta.eval.evaluator import ClassBank, score_dataset
    from msta.eval.loading import build_eval_model
    from tests.eval.test_protocols import CLASSES

    world = make_world(tmp_path / "w")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("msta-tiny", pretrained=None).state_dict(), tmp_path / "tiny.pt")
    raw = cfg_dict(world)
    raw["model"]["pretrained"] = str(tmp_path / "tiny.pt")
    raw["train"] = {"precision": "bf16"}
    cfg = config_from_dict(raw)
    scores = {}
    for name in ("cpu", "cuda"):
        device = D.select_device(name)
        model = build_eval_model(cfg.model, device=device)
        assert next(model.parameters()).device.type == name
        ds = build_video_dataset(world["items"], cfg.data, train=False, num_frames=cfg.model.num_frames,
                                 image_size=model.image_size, mean=model.image_mean, std=model.image_std,
                                 views=cfg.eval.views)
        with D.autocast(device, D.autocast_dtype(device, cfg.train.precision)):
            emb = ClassBank(model)(CLASSES, ["a video of {}."])
            scores[name] = score_dataset(model, ds, emb, CLASSES, batch_size=4)
    assert D.autocast_dtype("cuda", "bf16") in (torch.bfloat16, torch.float16)
    assert scores["cuda"].logits.device.type == "cpu" and scores["cuda"].logits.dtype == torch.float32
    torch.testing.assert_close(scores["cuda"].logits, scores["cpu"].logits, atol=1.0, rtol=0.05)   # scale ~14

    state = msta.models.build_model(cfg.model).adapter_state_dict()
    ckpt = A.save_adapters(A.adapter_payload(state_dict=state, config=config_to_dict(cfg), class_names=CLASSES,
                                             raw_labels=CLASSES, templates=["a video of {}."], step=1, epoch=1),
                           tmp_path / "run" / "best")
    video = str(world["videos"] / world["items"][0].path)
    on_gpu, on_cpu = msta.load(ckpt, device="cuda"), msta.load(ckpt, device="cpu")
    assert on_gpu.device.type == "cuda" and on_gpu.dtype is not None and on_cpu.dtype is None
    torch.testing.assert_close(on_gpu.classify(video), on_cpu.classify(video), atol=0.1, rtol=0.1)
    assert on_gpu.encode_text("a video of red square").device.type == "cpu"
