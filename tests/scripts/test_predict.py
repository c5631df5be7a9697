"""scripts/predict.py on generated mp4 files, one of them corrupt and one missing."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from msta.data.mp4 import write_mp4
from tests.eval.test_protocols import cfg_dict, make_cfg, make_checkpoint, make_world
from tests.scripts.test_eval_scripts import load_script


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from msta.models import build_model

    root = tmp_path_factory.mktemp("predict")
    world = make_world(root)
    rng = np.random.default_rng(0)
    good = [write_mp4(root / f"good{i}.mp4", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)) for i in range(2)]
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    cfg_file = root / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg_dict(world)))
    cfg = make_cfg(world)
    ckpt = make_checkpoint(root / "run" / "best.pt", cfg, build_model(cfg.model), seed=5)
    return {"root": root, "good": good, "corrupt": corrupt, "cfg": cfg_file, "ckpt": ckpt}


def test_predict_labels_with_a_corrupt_file(files, capsys):
    argv = [str(files["good"][0]), str(files["corrupt"]), str(files["root"] / "missing.mp4"), str(files["good"][1]),
            "--labels", "a red square, a green circle,a blue triangle", "--cfg", str(files["cfg"]), "--topk", "2"]
    code = load_script("predict").main(argv)
    out, err = capsys.readouterr()
    assert code == 1
    for good in files["good"]:
        assert f"{good}:" in out
    assert out.count("%") == 4          # 2 files x top-2
    assert f"{files['corrupt']}: ERROR cannot read" in err and "missing.mp4: ERROR cannot read" in err
    assert "2 of 4 files could not be read" in err
    probs = [float(line.split("%")[0]) for line in out.splitlines() if "%" in line]
    assert all(0 <= p <= 100 for p in probs) and probs[0] >= probs[1]


def test_predict_checkpoint_config_and_dataset_classes(files, capsys):
    """No --cfg: the model config comes from the checkpoint; --dataset takes the classes of its prompts file."""
    argv = [str(files["good"][0]), "--dataset", "synth", "--ckpt", str(files["ckpt"]), "--topk", "3",
            "--opts", f"text.prompts_dir={files['root'] / 'prompts'}"]
    assert load_script("predict").main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("%") == 3
    assert sum(name in out for name in ("a red square", "a green circle", "a blue triangle", "a yellow square",
                                        "a red circle", "a green triangle")) == 3


def test_predict_usage_errors(files, capsys):
    script = load_script("predict")
    assert script.main([str(files["good"][0])]) == 2   # no labels and no checkpoint with classes
    assert "no labels were given" in capsys.readouterr().err
    assert script.main([str(files["good"][0]), "--labels", "x", "--cfg", str(files["root"] / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
