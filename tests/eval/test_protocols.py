"""The evaluation protocols end to end on synthetic mp4 videos with the tiny model, plus the exactness checks:
restricting a pooled score matrix equals evaluating the smaller class set directly, and batching the views equals
encoding them one by one."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from msta.config import ExperimentCfg, config_from_dict, config_to_dict
from msta.data.annotations import VideoItem, read_video_list, write_class_table, write_video_list
from msta.eval import protocols as P
from msta.eval.evaluator import ClassBank, score_dataset
from msta.eval.loading import build_eval_model, read_checkpoint
from msta.eval.report import load_results
from msta.eval.runner import run_protocol

CLASSES = ["red_square", "green_circle", "blue_triangle", "yellow_square", "red_circle", "green_triangle"]
PER_CLASS = 3


def make_world(root: Path) -> dict:
    """Synthetic mp4 videos (6 classes x 3), a class table, prompts and templates, all under ``root``."""
    from msta.data.synthetic import write_synthetic_dataset

    ds = write_synthetic_dataset(root / "data", "appearance", splits={"test": PER_CLASS}, classes=CLASSES,
                                 num_frames=8, size=32, name="synth", prompts_dir=root / "prompts", progress=False)
    (root / "prompts" / "templates.yaml").write_text(
        'default: ["a video of {}."]\nensemble: ["a video of {}.", "a clip of {}."]\n')
    return {"root": root, "videos": ds.root, "table": ds.class_table, "test": ds.lists["test"],
            "items": read_video_list(ds.lists["test"]), "prompts": root / "prompts"}


def cfg_dict(world: dict, **eval_kw) -> dict:
    return {"name": "t",
            "model": {"name": "msta-tiny", "num_frames": 4,
                      "msta": {"text_blocks": [1, 2], "vision_blocks": [1, 2], "dim": 8}},
            "data": {"dataset": "synth", "root": str(world["videos"]), "class_table": str(world["table"]),
                     "test_list": str(world["test"]), "num_workers": 0, "input_size": 32},
            "text": {"prompts_dir": str(world["prompts"])},
            "eval": {"batch_size": 4, **eval_kw}}


def make_cfg(world: dict, **eval_kw) -> ExperimentCfg:
    return config_from_dict(cfg_dict(world, **eval_kw))


def make_checkpoint(path: Path, cfg: ExperimentCfg, template_model, *, seed: int = 0, shots: int = 0) -> Path:
    """An adapters-only file with random (non-identity) adapters and ``cfg`` (data.shots/seed set) embedded."""
    from msta.engine.checkpoint import adapter_payload, atomic_torch_save

    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) for k, v in template_model.adapter_state_dict().items()}
    run_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shots=shots, seed=seed))
    payload = adapter_payload(state_dict=state, config=config_to_dict(run_cfg), class_names=CLASSES,
                              raw_labels=CLASSES, templates=["a video of {}."], step=1, epoch=1)
    return atomic_torch_save(payload, path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def frozen(world):
    return build_eval_model(make_cfg(world).model)


@pytest.fixture(scope="module")
def adapted(world, tmp_path_factory):
    """(model with adapters of checkpoint seed 1, the checkpoint)."""
    from msta.models import build_model

    cfg = make_cfg(world)
    template = build_model(cfg.model)
    ckpt = read_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", cfg, template, seed=1))
    return build_eval_model(cfg.model, ckpt), ckpt


def _dataset(cfg, model, items):
    from msta.data.datasets import build_video_dataset

    return build_video_dataset(items, cfg.data, train=False, num_frames=cfg.model.num_frames,
                               image_size=model.image_size, mean=model.image_mean, std=model.image_std,
                               views=cfg.eval.views)


def _write_split(root: Path, name: str, items, classes) -> tuple[Path, Path]:
    """A list + table for ``classes`` (a subset), labels re-indexed into it."""
    index = {c: i for i, c in enumerate(classes)}
    local = [VideoItem(it.path, index[CLASSES[it.label]]) for it in items if CLASSES[it.label] in index]
    return write_video_list(root / f"{name}.txt", local), write_class_table(root / f"{name}.csv", classes)


def test_views_batched_equals_per_view(world, adapted):
    model, _ = adapted
    cfg = make_cfg(world, views={"clips": 2, "crops": 3})
    emb = ClassBank(model)(CLASSES, ["a video of {}."])
    ds = _dataset(cfg, model, world["items"][:5])
    batched = score_dataset(model, ds, emb, CLASSES, batch_size=2, batch_views=True)
    per_view = score_dataset(model, ds, emb, CLASSES, batch_size=2, batch_views=False)
    assert batched.logits.shape == (5, 6, len(CLASSES))
    torch.testing.assert_close(batched.logits, per_view.logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(batched.labels, per_view.labels)


def test_class_bank_encodes_each_class_set_once(frozen):
    bank = ClassBank(frozen)
    a = bank(["a red square", "a blue circle"], ["a video of {}."])
    b = bank(["a red square", "a blue circle"], ["a video of {}."])
    bank(["a red square"], ["a video of {}."])
    assert a is b and bank.computed == 2
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))


def test_eval_batch_views_key_reaches_the_scoring(world, adapted, monkeypatch):
    """eval.batch_views=false scores view by view, through the protocols, with the same scores."""
    model, _ = adapted
    seen = []
    real = P.score_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_views"])
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "score_dataset", spy)
    batched = P.score_splits(make_cfg(world, views={"clips": 2, "crops": 1}), model, P.split_specs(make_cfg(world)))
    per_view_cfg = make_cfg(world, views={"clips": 2, "crops": 1}, batch_views=False)
    per_view = P.score_splits(per_view_cfg, model, P.split_specs(per_view_cfg))
    assert seen == [True, False]
    torch.testing.assert_close(batched.pool.scores, per_view.pool.scores, atol=1e-5, rtol=1e-5)


def test_half_class_restriction_equals_direct_evaluation(world, adapted, tmp_path):
    """Differential: columns and rows cut from the pooled (multi-view) matrix == a run on the half class set."""
    model, _ = adapted
    cfg = make_cfg(world, views={"clips": 2, "crops": 1}, half_class_draws=2)
    pooled = P.score_splits(cfg, model, P.split_specs(cfg))
    for half in P.half_class_draws(CLASSES, 2):
        restricted = pooled.pool.restrict(half)
        lst, tab = _write_split(tmp_path, "half", world["items"], half)
        direct_cfg = make_cfg(world, views={"clips": 2, "crops": 1}, splits=[str(lst)], class_tables=[str(tab)])
        direct = P.score_splits(direct_cfg, model, P.split_specs(direct_cfg)).splits["half"]
        assert restricted.paths == direct.paths and restricted.classes == direct.classes
        torch.testing.assert_close(restricted.logits, direct.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(restricted.scores, direct.scores, atol=1e-5, rtol=1e-5)
        assert restricted.accuracy() == direct.accuracy()


def test_k600_style_draws_equal_direct_evaluation(world, adapted, tmp_path):
    """Splits with their own class tables (K600 draws) are restrictions of one pooled scoring."""
    model, _ = adapted
    draws = [CLASSES[:4], CLASSES[2:], [CLASSES[0], CLASSES[5], CLASSES[3]]]
    files = [_write_split(tmp_path, f"draw{i}", world["items"], d) for i, d in enumerate(draws)]
    cfg = make_cfg(world, splits=[str(f[0]) for f in files], class_tables=[str(f[1]) for f in files],
                   video_pool="all synthetic test videos")
    record = P.zeroshot(cfg, model)
    for i in (1, 2):  # draw 0 shares its classes' order with the pool; the others do not
        single = make_cfg(world, splits=[str(files[i][0])], class_tables=[str(files[i][1])])
        alone = P.zeroshot(single, model)
        assert record.split_metrics[f"draw{i}"] == pytest.approx(alone.split_metrics[f"draw{i}"])
    assert record.video_pool == "all synthetic test videos"
    assert record.class_tables == [str(f[1]) for f in files]
    assert record.num_videos == sum(len(read_video_list(f[0])) for f in files)


@pytest.mark.slow
def test_zeroshot_end_to_end(world, adapted, tmp_path):
    model, ckpt = adapted
    items = world["items"]
    lists = [write_video_list(tmp_path / f"test{s}.txt", items[s::2] if s < 2 else items) for s in range(3)]
    cfg = make_cfg(world, protocol="zeroshot", splits=[str(p) for p in lists], half_class_draws=3)
    record = P.zeroshot(cfg, model, checkpoint=ckpt, out_dir=tmp_path / "zs")
    assert set(record.split_metrics) == {"test0", "test1", "test2"}
    tops = [m["top1"] for m in record.split_metrics.values()]
    assert record.metrics["top1_mean"] == pytest.approx(sum(tops) / 3)
    assert {"top1_std", "top5_mean", "half_top1_mean", "half_top1_std"} <= set(record.metrics)
    assert record.extra["half_class"]["seeds"] == [0, 1, 2]
    assert all(len(c) == 3 for c in record.extra["half_class"]["classes"])
    assert record.checkpoint == ckpt.path and record.model_name == "msta-tiny" and record.num_frames == 4
    assert record.split_files == [str(p) for p in lists] and record.templates == ["a video of {}."]
    assert record.num_videos == 6 + 12 + 18 and record.num_bad_videos == 0
    out = tmp_path / "zs"
    assert load_results(out).metrics == pytest.approx(record.metrics)
    md = (out / "results.md").read_text()
    assert "half-class" in md and "test1.txt" in md and "mean ± std" in md and ckpt.path in md
    assert (out / "confusion_test0.png").stat().st_size > 0 and (out / "per_class_test2.png").is_file()


def test_frozen_baseline_records_no_checkpoint(world, frozen, tmp_path):
    record = P.zeroshot(make_cfg(world), frozen, out_dir=tmp_path)
    assert record.checkpoint == "" and record.extra["baseline"].startswith("frozen CLIP")
    assert "none (frozen CLIP" in (tmp_path / "results.md").read_text()
    assert 0 <= record.metrics["top1_mean"] <= 100


def test_bad_video_is_left_out_and_counted(world, frozen, tmp_path):
    bad = Path(world["videos"]) / "corrupt.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    lst = write_video_list(tmp_path / "with_bad.txt", [VideoItem("corrupt.mp4", 0)] + world["items"])
    cfg = config_from_dict({**cfg_dict(world), "data": {**cfg_dict(world)["data"], "test_list": str(lst),
                                                        "max_bad_fraction": 0.5}})
    record = P.supervised(cfg, frozen)
    assert record.num_bad_videos == 1 and record.num_videos == len(world["items"])
    bad.unlink()


def test_supervised_metrics(world, adapted, tmp_path):
    model, ckpt = adapted
    cfg = make_cfg(world, protocol="supervised", views={"clips": 2, "crops": 3})
    record = P.supervised(cfg, model, checkpoint=ckpt, out_dir=tmp_path)
    assert {"top1_mean", "top5_mean", "mean_class_mean"} <= set(record.metrics)
    assert record.views == {"clips": 2, "crops": 3}
    assert (tmp_path / "confusion_test.png").is_file() and (tmp_path / "results.json").is_file()


@pytest.mark.slow
def test_fewshot_runs_gathered(world, adapted, tmp_path):
    model, ckpt = adapted
    cfg = make_cfg(world, protocol="fewshot")
    paths = []
    for k in (2, 4):
        run = tmp_path / f"k{k}"
        paths.append(make_checkpoint(run / "best.pt", cfg, model, seed=k, shots=k))
    ckpts = [read_checkpoint(p) for p in paths]
    records = run_protocol(cfg, "fewshot", ckpts, tmp_path / "out")
    assert [r.extra["shots"] for r in records] == [2, 4]
    summary = json.loads((tmp_path / "out" / "fewshot_summary.json").read_text())
    assert set(summary["table"]["synth"]) == {"2", "4"}
    assert summary["table"]["synth"]["2"] == pytest.approx(records[0].metrics["top1_mean"])
    assert (tmp_path / "out" / "accuracy_vs_shots.png").is_file()
    assert "K=2" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.slow
def test_base_to_novel(world, adapted, tmp_path):
    model, ckpt = adapted
    base, novel = CLASSES[:3], CLASSES[3:]
    (bl, bt), (nl, nt) = (_write_split(tmp_path, "base", world["items"], base),
                          _write_split(tmp_path, "novel", world["items"], novel))
    cfg = make_cfg(world, protocol="b2n", splits=[str(bl), str(nl)], class_tables=[str(bt), str(nt)])
    seeds = [read_checkpoint(make_checkpoint(tmp_path / f"s{s}.pt", cfg, model, seed=s)) for s in (1, 2)]
    record = P.base_to_novel(cfg, model, seeds, out_dir=tmp_path / "b2n")
    assert set(record.split_metrics) == {"seed 1", "seed 2"}
    m = record.metrics
    assert m["hm"] == pytest.approx(2 * m["base_mean"] * m["novel_mean"] / (m["base_mean"] + m["novel_mean"]))
    assert {"gbase_mean", "gnovel_mean", "ghm_mean", "ghm"} <= set(m)
    # base accuracy with its own classifier == a plain evaluation of the base split with that seed's adapters
    model.load_adapter_state_dict(seeds[1].state_dict)
    direct = P.supervised(make_cfg(world, splits=[str(bl)], class_tables=[str(bt)]), model)
    assert record.split_metrics["seed 2"]["base"] == pytest.approx(direct.split_metrics["base"]["top1"])
    assert "generalised" in (tmp_path / "b2n" / "results.md").read_text()
    model.load_adapter_state_dict(adapted[1].state_dict)  # restore the shared fixture's weights


def test_fewshot_record_says_the_starting_point(world, adapted, tmp_path):
    model, ckpt = adapted
    cfg = make_cfg(world, protocol="fewshot")
    k400 = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset="k400"))
    init = make_checkpoint(tmp_path / "k400" / "best.pt", k400, model, seed=4)
    run = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_adapters=str(init)))
    ckpt_k400 = read_checkpoint(make_checkpoint(tmp_path / "k2" / "best.pt", run, model, seed=2, shots=2))
    record = P.fewshot(cfg, model, checkpoint=ckpt_k400, out_dir=tmp_path / "out")
    assert record.extra["start"] == f"K400-finetuned (adapters initialised from {init})"
    assert record.extra["init_adapters"] == str(init)
    assert "K400-finetuned" in (tmp_path / "out" / "results.md").read_text()
    assert P._start(ckpt) == "CLIP (adapters trained from scratch)" and P._start(None).startswith("frozen CLIP")
    init.unlink()   # the initial adapters are gone: the record still names where the run started
    assert P._start(ckpt_k400) == f"adapters initialised from {init}"
