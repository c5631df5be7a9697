"""scripts/zeroshot_eval.py and scripts/eval.py, run in-process (their `main(argv)`) on synthetic mp4 videos."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from msta.data.annotations import write_video_list
from tests.eval.test_protocols import cfg_dict, make_cfg, make_checkpoint, make_world

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A world, a zero-shot target config with 2 splits and half-class draws, a main config naming it, a ckpt."""
    from msta.models import build_model

    root = tmp_path_factory.mktemp("scripts")
    world = make_world(root)
    lists = [write_video_list(root / f"split{s}.txt", world["items"][s::2]) for s in (1, 2)]
    target = cfg_dict(world, splits=[str(p) for p in lists], half_class_draws=2, video_pool="synthetic test videos")
    (root / "target.yaml").write_text(yaml.safe_dump(target))
    main = cfg_dict(world, protocol="zeroshot", targets=[str(root / "target.yaml")])
    (root / "main.yaml").write_text(yaml.safe_dump(main))
    (root / "sup.yaml").write_text(yaml.safe_dump(cfg_dict(world, protocol="supervised")))
    cfg = make_cfg(world)
    ckpt = make_checkpoint(root / "run" / "best.pt", cfg, build_model(cfg.model), seed=3, shots=2)
    return {"root": root, "ckpt": ckpt, "world": world}


def test_zeroshot_eval_script(setup, capsys):
    root = setup["root"]
    code = load_script("zeroshot_eval").main(["--cfg", str(root / "main.yaml"), "--ckpt", str(setup["ckpt"]),
                                              "--out", str(root / "zs")])
    assert code == 0
    out = capsys.readouterr().out
    assert "synth: top-1" in out and "over 2 splits" in out and "half-class" in out and "4 frames" in out
    record = json.loads((root / "zs" / "results.json").read_text())
    assert record["protocol"] == "zeroshot" and record["checkpoint"] == str(setup["ckpt"])
    assert record["video_pool"] == "synthetic test videos" and len(record["split_files"]) == 2


def test_zeroshot_eval_without_checkpoint_is_frozen_baseline(setup, capsys):
    root = setup["root"]
    assert load_script("zeroshot_eval").main(["--cfg", str(root / "target.yaml"), "--out", str(root / "base")]) == 0
    assert "frozen CLIP" in capsys.readouterr().out
    assert json.loads((root / "base" / "results.json").read_text())["checkpoint"] == ""


def test_zeroshot_eval_several_checkpoints(setup, capsys):
    """--ckpt takes several: each evaluated on every target, one sub-folder per run under --out."""
    root = setup["root"]
    second = root / "run2" / "best.pt"
    second.parent.mkdir(exist_ok=True)
    second.write_bytes(Path(setup["ckpt"]).read_bytes())
    code = load_script("zeroshot_eval").main(["--cfg", str(root / "target.yaml"), "--ckpt", str(setup["ckpt"]),
                                              str(second), "--out", str(root / "zs_many")])
    assert code == 0
    first = json.loads((root / "zs_many" / "run" / "results.json").read_text())
    other = json.loads((root / "zs_many" / "run2" / "results.json").read_text())
    assert (first["checkpoint"], other["checkpoint"]) == (str(setup["ckpt"]), str(second))
    assert first["metrics"]["top1_mean"] == other["metrics"]["top1_mean"]          # the same adapters
    assert capsys.readouterr().out.count("synth: top-1") == 2


def test_eval_script_supervised_and_overrides(setup, capsys):
    root = setup["root"]
    code = load_script("eval").main(["--cfg", str(root / "sup.yaml"), "--ckpt", str(setup["ckpt"]),
                                     "--opts", "eval.views.clips=2", "--out", str(root / "sup")])
    assert code == 0
    record = json.loads((root / "sup" / "results.json").read_text())
    assert record["protocol"] == "supervised" and record["views"] == {"clips": 2, "crops": 1}
    assert (root / "sup" / "results.md").is_file() and (root / "sup" / "per_class_test.png").is_file()
    assert "supervised synth" in capsys.readouterr().out


def test_eval_script_fewshot_then_gather(setup, capsys):
    root = setup["root"]
    eval_script = load_script("eval")
    # default output: next to the checkpoint, where --gather finds it from the run folder
    assert eval_script.main(["--cfg", str(root / "sup.yaml"), "--protocol", "fewshot",
                             "--ckpt", str(setup["ckpt"])]) == 0
    assert (root / "run" / "eval_fewshot" / "results.json").is_file()
    assert eval_script.main(["--gather", str(root / "run"), "--out", str(root / "table")]) == 0
    assert "K=2" in capsys.readouterr().out
    assert (root / "table" / "accuracy_vs_shots.png").is_file()


def test_eval_script_errors(setup, capsys, tmp_path):
    eval_script = load_script("eval")
    assert eval_script.main(["--cfg", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"steps": 3, "selected_on": "val"}))  # a training summary
    assert eval_script.main(["--gather", str(tmp_path)]) == 2
    assert "scripts/eval.py" in capsys.readouterr().err
