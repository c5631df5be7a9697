"""Reports: JSON round trip, markdown table, PNG plots."""
import json
import math

import numpy as np
import pytest

from msta import __version__
from msta.eval.report import (EvalRecord, load_results, plot_accuracy_vs_shots, plot_confusion_matrix,
                              plot_per_class_accuracy, render_markdown, write_results)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _record(**kw) -> EvalRecord:
    base = dict(
        protocol="zeroshot", dataset="hmdb51", model_name="ViT-B-16", pretrained="openai",
        checkpoint="runs/k400/best", num_frames=8, views={"clips": 4, "crops": 3},
        templates=["a video of {label}."], split_files=["val1.txt", "val2.txt", "val3.txt"],
        class_tables=["hmdb_labels.csv"], video_pool="HMDB51 official test splits", num_videos=4590,
        num_bad_videos=2,
        metrics={"top1_mean": 54.2, "top1_std": 0.8},
        split_metrics={"val1": {"top1": 53.1, "top5": 80.0}, "val2": {"top1": 55.0, "top5": 81.0},
                       "val3": {"top1": 54.5, "top5": float("nan")}},
        extra={"per_class": np.array([10.0, np.nan]), "shots": np.int64(16)},
    )
    base.update(kw)
    return EvalRecord(**base)


def _strict_loads(text):
    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=reject)


def test_results_json_round_trip(tmp_path):
    record = _record()
    path = write_results(record, tmp_path / "run")
    assert path == tmp_path / "run" / "results.json"
    data = _strict_loads(path.read_text())                 # valid strict JSON: NaN written as null
    assert data["split_metrics"]["val3"]["top5"] is None
    assert data["views"] == {"clips": 4, "crops": 3}
    assert data["extra"] == {"per_class": [10.0, None], "shots": 16}
    assert data["msta_version"] == __version__
    assert "T" in data["created"]
    for key in ("protocol", "dataset", "model_name", "pretrained", "checkpoint", "num_frames", "templates",
                "split_files", "class_tables", "video_pool", "num_videos", "num_bad_videos", "metrics"):
        assert key in data
    loaded = load_results(tmp_path / "run")
    assert loaded.metrics == record.metrics and loaded.split_files == record.split_files
    assert loaded.created == record.created
    explicit = write_results(record, tmp_path / "other.json")
    assert load_results(explicit).dataset == "hmdb51"
    assert not list(tmp_path.rglob("*.tmp"))


def test_record_validation():
    with pytest.raises(ValueError):
        _record(views={"clips": 1})
    with pytest.raises(ValueError):
        _record(num_frames=0)
    with pytest.raises(ValueError):
        EvalRecord.from_dict({**_record().to_dict(), "bogus": 1})


def test_markdown_has_rows_and_mean_std():
    rows = {"split1": {"top1": 70.0, "top5": 90.0}, "split2": {"top1": 72.0, "top5": 92.0},
            "split3": {"top1": 74.0, "top5": math.nan}}
    md = render_markdown(rows)
    lines = md.strip().splitlines()
    assert lines[0] == "| run | top1 | top5 |"
    assert len(lines) == 2 + 3 + 1
    assert "| split3 | 74.00 | - |" in md
    std = math.sqrt(8 / 3)
    assert f"| mean ± std | 72.00 ± {std:.2f} | 91.00 ± 1.00 |" in md
    assert "mean ± std" not in render_markdown(rows, summary=False)
    assert render_markdown(rows, columns=["top5"], digits=1).splitlines()[0] == "| run | top5 |"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 2000                                   # a real figure, not an empty canvas


def test_plots_write_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 10, size=(5, 5))
    names = [f"class_{i}" for i in range(5)]
    p1 = plot_confusion_matrix(cm, tmp_path / "plots" / "cm.png", names)
    p2 = plot_per_class_accuracy([50.0, np.nan, 75.0, 100.0, 0.0], tmp_path / "acc.png", names)
    p3 = plot_accuracy_vs_shots({"hmdb51": {2: 60.0, 4: 64.0, 8: 68.0, 16: 71.0},
                                 "ucf101": {"2": 80.0, "16": 90.0}}, tmp_path / "shots.png")
    p4 = plot_confusion_matrix(rng.integers(0, 3, size=(80, 80)), tmp_path / "big.png", normalize=False)
    for p in (p1, p2, p3, p4):
        _assert_png(p)
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")
    with pytest.raises(ValueError):
        plot_per_class_accuracy([1.0, 2.0], tmp_path / "bad.png", ["a"])
    with pytest.raises(ValueError):
        plot_accuracy_vs_shots({}, tmp_path / "bad.png")


def test_table_title_names_the_columns_that_are_there(tmp_path):
    from msta.eval.report import table_title

    assert table_title("per split", {"s1": {"top1": 50.0, "top5": 90.0}}) == "per split (top-1 / top-5, %)"
    assert table_title("per split", {"s1": {"top1": 50.0}}) == "per split (top-1, %)"
    assert table_title("accuracy", {"s1": {"top1": 1.0, "top5": 2.0, "mean_class": 3.0}}) == \
        "accuracy (top-1 / top-5 / mean-class, %)"
    # end to end: a 3-class split has no top-5 column, and its results.md header no longer promises one
    from msta.config import config_from_dict
    from msta.eval import protocols as P
    from msta.eval.loading import build_eval_model
    from tests.eval.test_protocols import CLASSES, _write_split, cfg_dict, make_world

    world = make_world(tmp_path / "w")
    lst, tab = _write_split(tmp_path, "three", world["items"], CLASSES[:3])
    raw = cfg_dict(world)
    raw["data"].update(test_list=str(lst), class_table=str(tab))
    cfg = config_from_dict(raw)
    P.zeroshot(cfg, build_eval_model(cfg.model), out_dir=tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## per split (top-1, %)" in md and "top-5" not in md and "| top5" not in md
