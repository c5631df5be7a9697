"""scripts/predict.py, zeroshot_eval.py and eval.py on a ViCLIP checkpoint: a local .pth in the released layout
(weights under ``model``, scalar ``temp``; random values for viclip-tiny) read through ``model.pretrained``, with and
without an adapters checkpoint, on real tiny mp4 files."""
from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from msta.data.annotations import write_video_list
from tests.eval.test_protocols import cfg_dict, make_checkpoint, make_world
from tests.scripts.test_eval_scripts import load_script

LABELS = "a red square,a green circle,a blue triangle"


def released_viclip_tiny(path, seed: int):
    """A viclip-tiny file as the released checkpoints are written: ``{"model": state_dict}``, ``temp`` a scalar."""
    from msta.models.backbones.viclip import VICLIP_SIZES, ViCLIP

    torch.manual_seed(seed)
    state = ViCLIP(VICLIP_SIZES["viclip-tiny"], "viclip-tiny").state_dict()
    state["temp"] = state["temp"].reshape(())
    torch.save({"model": state}, path)
    return path


def viclip_cfg(world: dict, weights, **eval_kw) -> dict:
    cfg = cfg_dict(world, **eval_kw)
    cfg["model"] = {"name": "viclip-tiny", "pretrained": str(weights), "num_frames": 8,
                    "msta": {"text_blocks": [2, 2], "vision_blocks": [1, 2], "dim": 8}}
    cfg["data"]["eval_resize"] = "squash"
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from msta.config import config_from_dict
    from msta.models import build_model

    root = tmp_path_factory.mktemp("viclip_scripts")
    world = make_world(root)
    weights = [released_viclip_tiny(root / f"ViCLIP-tiny-{s}.pth", seed=s) for s in (0, 1)]
    lists = [write_video_list(root / f"split{s}.txt", world["items"][s::2]) for s in (1, 2)]
    target = viclip_cfg(world, weights[0], splits=[str(p) for p in lists], video_pool="synthetic test videos")
    (root / "target.yaml").write_text(yaml.safe_dump(target))
    (root / "main.yaml").write_text(yaml.safe_dump(
        viclip_cfg(world, weights[0], protocol="zeroshot", targets=[str(root / "target.yaml")])))
    (root / "sup.yaml").write_text(yaml.safe_dump(viclip_cfg(world, weights[0], protocol="supervised")))
    cfg = config_from_dict(viclip_cfg(world, weights[0]))
    ckpt = make_checkpoint(root / "run" / "best.pt", cfg, build_model(cfg.model), seed=3, shots=2)
    return {"root": root, "world": world, "weights": weights, "ckpt": ckpt}


def _predict(argv, capsys) -> list[dict]:
    assert load_script("predict").main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _probs(doc) -> list[float]:
    text = json.dumps(doc)
    return [float(x) for x in re.findall(r'"prob[a-z]*": ([0-9.e-]+)', text)]


@pytest.mark.slow
def test_predict_reads_the_viclip_file(setup, capsys):
    """--model/--pretrained of a released-layout file, then the same through a config: equal predictions; another
    file (other random weights) predicts differently, so the weights really come from the file; the config's
    data.eval_resize is honoured."""
    video = str(setup["world"]["videos"] / setup["world"]["items"][0].path)
    a = _predict([video, "--labels", LABELS, "--model", "viclip-tiny", "--pretrained", str(setup["weights"][0])],
                 capsys)
    b = _predict([video, "--labels", LABELS, "--model", "viclip-tiny", "--pretrained", str(setup["weights"][1])],
                 capsys)
    # the config evaluates with ViCLIP's squash resize; without a config predict uses data.eval_resize's default
    c = _predict([video, "--labels", LABELS, "--cfg", str(setup["root"] / "target.yaml"),
                  "--opts", "data.eval_resize=crop"], capsys)
    squash = _predict([video, "--labels", LABELS, "--cfg", str(setup["root"] / "target.yaml")], capsys)
    assert _probs(a) and _probs(a) == _probs(c) and _probs(a) != _probs(b)
    assert _probs(squash) != _probs(c)   # data.eval_resize reaches predict
    assert abs(sum(_probs(a)) - 100.0) < 0.1 or abs(sum(_probs(a)) - 1.0) < 1e-3


@pytest.mark.slow
def test_predict_with_adapters_on_viclip(setup, capsys):
    """An adapters checkpoint trained on ViCLIP: its config names the backbone file; the adapters change the scores."""
    video = str(setup["world"]["videos"] / setup["world"]["items"][0].path)
    frozen = _predict([video, "--labels", LABELS, "--cfg", str(setup["root"] / "target.yaml")], capsys)
    adapted = _predict([video, "--labels", LABELS, "--ckpt", str(setup["ckpt"])], capsys)
    assert _probs(adapted) and _probs(adapted) != _probs(frozen)


@pytest.mark.slow
def test_zeroshot_and_eval_on_viclip(setup, capsys):
    root = setup["root"]
    assert load_script("zeroshot_eval").main(["--cfg", str(root / "main.yaml"), "--ckpt", str(setup["ckpt"]),
                                              "--out", str(root / "zs")]) == 0
    assert "synth: top-1" in capsys.readouterr().out
    record = json.loads((root / "zs" / "results.json").read_text())
    assert record["protocol"] == "zeroshot" and len(record["split_files"]) == 2
    assert load_script("zeroshot_eval").main(["--cfg", str(root / "target.yaml"), "--out", str(root / "base")]) == 0
    capsys.readouterr()
    assert json.loads((root / "base" / "results.json").read_text())["checkpoint"] == ""
    assert load_script("eval").main(["--cfg", str(root / "sup.yaml"), "--ckpt", str(setup["ckpt"]),
                                     "--out", str(root / "sup")]) == 0
    assert json.loads((root / "sup" / "results.json").read_text())["protocol"] == "supervised"


def test_missing_viclip_file_is_one_message(setup, capsys):
    video = str(setup["world"]["videos"] / setup["world"]["items"][0].path)
    missing = setup["root"] / "weights" / "ViCLIP-B_InternVid-FLT-10M.pth"
    code = load_script("predict").main([video, "--labels", LABELS, "--model", "viclip-b16",
                                        "--pretrained", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "Traceback" not in err
