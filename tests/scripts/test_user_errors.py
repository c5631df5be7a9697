"""Every mistake a user can make ends as ONE message naming the file, key or value, exit code 2, no traceback.

Each kind is fed through the real script in a subprocess (the one-message contract is about what a terminal shows);
training kinds also on 2 processes under torchrun. Mistakes caught before any model is built run in-process
(`main(argv)`, the same wrapper) to keep the suite fast.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from msta.data.mp4 import write_mp4
from tests.engine.helpers import REPO, env, tiny_config, write_dataset
from tests.eval.test_protocols import CLASSES, cfg_dict, make_cfg, make_checkpoint, make_world
from tests.scripts.test_eval_scripts import load_script


def run_script(name: str, *args, tmp: Path, nproc: int = 1, launcher: str = "torchrun", timeout: int = 240,
               extra_env=None, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "scripts" / f"{name}.py"), *map(str, args)]
    if nproc > 1:
        from msta.engine.distributed import free_port

        if launcher == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}", *cmd[1:]]
        else:
            cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nproc), "--master_addr",
                   "127.0.0.1", "--master_port", str(free_port()), *cmd[1:]]
    return subprocess.run(cmd, env={**env(tmp), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or tmp)


def assert_one_message(proc: subprocess.CompletedProcess, *needles: str, launcher: bool = False) -> str:
    """Exit 2 (torchrun: non-zero, its workers exit 2), the message once on stderr naming `needles`, no traceback
    of msta (torchrun's own report of failed workers is the launcher's, not ours)."""
    err = proc.stderr
    if launcher:
        assert proc.returncode != 0, err
        # torchrun: "exitcode: 2"; deepspeed: "exits with return code = 2"
        assert "exitcode: 2" in err or "return code = 2" in proc.stdout + err, (proc.stdout + err)[-3000:]
        assert f'File "{REPO / "msta"}' not in err, err[-3000:]
    else:
        assert proc.returncode == 2, (proc.returncode, err[-3000:])
        assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    for n in needles:
        assert n in err, (n, err[-3000:])
    return err


# ------------------------------------------------------------------------------------------------------------------
# training: mistakes found after the model is built (data, prompts, precision, folders), 1 process and torchrun


@pytest.fixture(scope="module")
def data_keys(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("errdata"), per_class=2, val=1)


def _train_cfg(tmp: Path, data_keys, **sections) -> Path:
    return tiny_config(tmp, data_keys, train={"out_dir": str(tmp / "run"), "max_steps": 1}, **sections)


def _prompts_missing_a_class(tmp: Path, data_keys) -> dict:
    src = Path(data_keys["text"]["prompts_dir"])
    dst = tmp / "prompts"
    shutil.copytree(src, dst)
    f = dst / f"{data_keys['data']['dataset']}.yaml"
    doc = yaml.safe_load(f.read_text())
    del doc["classes"]["blue_triangle"]
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"prompts_dir": str(dst)}


@pytest.mark.slow
def test_train_prompts_missing_a_class(tmp_path, data_keys):
    cfg = _train_cfg(tmp_path, data_keys, text=_prompts_missing_a_class(tmp_path, data_keys))
    err = assert_one_message(run_script("train", "--cfg", cfg, tmp=tmp_path), "blue_triangle")
    assert (tmp_path / "run" / "train.log").is_file() and "Traceback" in (tmp_path / "run" / "train.log").read_text()
    assert "--debug" not in err


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_train_prompts_missing_a_class_under_a_launcher(tmp_path, data_keys, launcher):
    """2 processes: each exits 2, rank 0 prints the message once, no traceback of msta (the launcher reports)."""
    cfg = _train_cfg(tmp_path, data_keys, text=_prompts_missing_a_class(tmp_path, data_keys))
    proc = run_script("train", "--cfg", cfg, tmp=tmp_path, nproc=2, launcher=launcher)
    assert_one_message(proc, "blue_triangle", launcher=True)


@pytest.mark.slow
def test_train_bad_videos_over_the_limit_in_a_worker(tmp_path, data_keys):
    """All training videos broken, decoded in a DataLoader worker: the report, not the worker's traceback."""
    videos = tmp_path / "videos"
    shutil.copytree(data_keys["data"]["root"], videos)
    for f in videos.rglob("*.mp4"):
        f.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 20)
    keys = {**data_keys, "data": {**data_keys["data"], "root": str(videos)}}
    cfg = tiny_config(tmp_path, keys, train={"out_dir": str(tmp_path / "run"), "max_steps": 1},
                      data={"num_workers": 1, "max_bad_fraction": 0.2})
    err = assert_one_message(run_script("train", "--cfg", cfg, tmp=tmp_path), "data.max_bad_fraction", ".mp4")
    assert "DataLoader worker" not in err


@pytest.mark.slow
def test_train_fp16_on_cpu_and_a_bad_class_table(tmp_path, data_keys):
    cfg = tiny_config(tmp_path, data_keys, train={"out_dir": str(tmp_path / "run"), "max_steps": 1,
                                                  "precision": "fp16"})
    assert_one_message(run_script("train", "--cfg", cfg, tmp=tmp_path), "train.precision", "fp16")
    table = tmp_path / "classes.csv"
    table.write_text("id,name\n0,red_square\nzero,green_circle\n")
    keys = {**data_keys, "data": {**data_keys["data"], "class_table": str(table)}}
    cfg = tiny_config(tmp_path, keys, train={"out_dir": str(tmp_path / "run2"), "max_steps": 1})
    assert_one_message(run_script("train", "--cfg", cfg, tmp=tmp_path), str(table))


@pytest.mark.slow
def test_train_out_dir_under_a_file(tmp_path, data_keys):
    (tmp_path / "afile").write_text("not a folder")
    cfg = tiny_config(tmp_path, data_keys, train={"out_dir": str(tmp_path / "afile" / "run"), "max_steps": 1})
    assert_one_message(run_script("train", "--cfg", cfg, tmp=tmp_path), str(tmp_path / "afile"))


def test_train_config_mistakes_in_process(tmp_path, data_keys, capsys):
    train = load_script("train")
    assert train.main(["--cfg", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert train.main(["--cfg", "fewshot_hmbd"]) == 2            # a shipped config's name, misspelt
    assert "fewshot_hmdb" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:                          # --opts takes KEY=VALUE tokens only
        train.main(["--cfg", "fewshot_hmdb", "--opts", "data.shots"])
    assert e.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err
    # an adapter width the model cannot take is found while building, and still ends as one message
    cfg = _train_cfg(tmp_path, data_keys)
    assert train.main(["--cfg", str(cfg), "--dry-run", "--opts", "model.msta.dim=128"]) == 2
    err = capsys.readouterr().err
    assert "model.msta.dim" in err and "r=128 must divide the vision width 64" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    train = load_script("train")
    assert train.main(["--cfg", str(tmp_path / "nope.yaml"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.count("error: config file not found") == 1


# ------------------------------------------------------------------------------------------------------------------
# eval, zeroshot_eval, predict


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from msta.models import build_model

    root = tmp_path_factory.mktemp("errworld")
    w = make_world(root)
    (root / "sup.yaml").write_text(yaml.safe_dump(cfg_dict(w, protocol="supervised")))
    cfg = make_cfg(w)
    ckpt = make_checkpoint(root / "run" / "best.pt", cfg, build_model(cfg.model), seed=3)
    truncated = root / "truncated.pt"
    truncated.write_bytes(Path(ckpt).read_bytes()[:300])
    rng = np.random.default_rng(0)
    clips = root / "clips"
    for i in range(2):
        write_mp4(clips / f"c{i}.mp4", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    (root / "empty").mkdir()
    return {"root": root, "cfg": root / "sup.yaml", "ckpt": Path(ckpt), "truncated": truncated, "clips": clips}


def test_eval_out_is_checked_before_any_work(world, capsys):
    root, ev = world["root"], load_script("eval")
    (root / "results_file").write_text("x")
    t0 = time.perf_counter()
    assert ev.main(["--cfg", str(world["cfg"]), "--ckpt", str(world["ckpt"]), "--out", str(root / "results_file")]) == 2
    assert "is a file" in capsys.readouterr().err and str(root / "results_file")
    assert ev.main(["--cfg", str(world["cfg"]), "--out", str(root / "results_file" / "sub")]) == 2
    assert f"{root / 'results_file'} is a file" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 30                       # no video was scored
    assert not (root / "run" / "eval_supervised").exists()


@pytest.mark.slow
def test_eval_and_predict_truncated_checkpoint(world, tmp_path):
    for script, args in (("eval", ["--cfg", world["cfg"]]), ("predict", [world["clips"] / "c0.mp4"])):
        proc = run_script(script, *args, "--ckpt", world["truncated"], tmp=tmp_path)
        assert_one_message(proc, str(world["truncated"]), "not a valid adapters file")


def test_checkpoint_of_another_shape(world, capsys):
    """Adapters trained with r=8 evaluated with a config of r=16: one message with the shapes and the key to check."""
    code = load_script("eval").main(["--cfg", str(world["cfg"]), "--ckpt", str(world["ckpt"]), "--opts",
                                     "model.msta.dim=16", "--out", str(world["root"] / "shape")])
    err = capsys.readouterr().err
    assert code == 2 and "wrong shapes" in err and "model.msta.dim" in err and "Traceback" not in err


def test_checkpoint_without_state_dict(world, tmp_path, capsys):
    import torch

    bad = tmp_path / "nostate.pt"
    torch.save({"format": "msta-adapters-v1", "config": {}}, bad)
    assert load_script("predict").main([str(world["clips"] / "c0.mp4"), "--ckpt", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "adapters" in err


def test_zeroshot_out_under_a_file(world, capsys):
    root = world["root"]
    (root / "zs_file").write_text("x")
    assert load_script("zeroshot_eval").main(["--cfg", str(world["cfg"]), "--out", str(root / "zs_file")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--labels", ""], "no labels were given (--labels is empty)"),
    (["--labels", " , ,"], "no labels were given"),
    (["--labels", "a red square,A Red  Square"], "duplicate label"),
    (["--labels", "x,y", "--topk", "0"], "--topk must be >= 1, got 0"),
    (["--labels", "x,y", "--opts", "data.min_frames=2"], "--opts data.min_frames=2 has no config"),
], ids=["empty", "blank", "duplicate", "topk0", "opts-without-config"])
def test_predict_usage_mistakes(world, capsys, args, needle):
    assert load_script("predict").main([str(world["clips"] / "c0.mp4"), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_predict_empty_folder_and_missing_labels_file(world, capsys):
    predict = load_script("predict")
    assert predict.main([str(world["root"] / "empty"), "--labels", "a,b"]) == 2
    assert f"{world['root'] / 'empty'} is a folder without video files" in capsys.readouterr().err
    assert predict.main([str(world["clips"]), "--labels-file", str(world["root"] / "nope.txt")]) == 2
    assert "nope.txt not found" in capsys.readouterr().err


def test_predict_folder_labels_file_json_and_checkpoint_classes(world, tmp_path, capsys):
    """A folder predicts every video in it; --labels-file keeps commas inside names (BOM ignored); --json; without
    labels the checkpoint's own classes; --opts before a positional does not swallow it."""
    predict = load_script("predict")
    labels = tmp_path / "labels.txt"
    labels.write_text("\ufeffa red square, the shape\n\na green circle\n", encoding="utf-8")
    out = tmp_path / "pred" / "p.json"
    assert predict.main(["--cfg", str(world["cfg"]), "--opts", "eval.views.clips=1", str(world["clips"]),
                         "--labels-file", str(labels), "--json", "--topk", "9", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["labels"] == ["a red square, the shape", "a green circle"]
    assert [Path(p["path"]).name for p in doc["predictions"]] == ["c0.mp4", "c1.mp4"]
    assert all(len(p["top"]) == 2 and p["error"] is None for p in doc["predictions"])   # topk capped at 2 classes
    assert abs(sum(t["prob"] for t in doc["predictions"][0]["top"]) - 1) < 1e-4
    assert json.loads(out.read_text()) == doc
    assert predict.main([str(world["clips"] / "c1.mp4"), "--ckpt", str(world["ckpt"]), "--topk", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("%") == 2 and sum(f"  {c}\n" in text for c in CLASSES) == 2   # the checkpoint's names


@pytest.mark.slow
def test_predict_without_cached_weights_says_so_at_once(world, tmp_path):
    """Frozen CLIP ViT-B/16 by tag, an empty Hugging Face cache and offline: one message with the fix, in seconds."""
    t0 = time.perf_counter()
    proc = run_script("predict", world["clips"] / "c0.mp4", "--labels", "a,b", tmp=tmp_path,
                      extra_env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME":
                                 str(tmp_path / "xdg")})
    took = time.perf_counter() - t0
    assert_one_message(proc, "ViT-B-16", "'openai'", "not cached", "--pretrained=/path/to/")
    assert took < 60, took   # imports only (measured ~10 s on a loaded 2-core VM); was 65 s of retries + download


def test_weights_check_finds_a_prefilled_cache(tmp_path, monkeypatch):
    """The check looks where open_clip looks: a file in the Hugging Face cache layout counts as cached."""
    import huggingface_hub.constants as hc

    from msta.cli import weights

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    assert weights.cached_weights("ViT-B-32", "openai")[0] is None
    with pytest.raises(weights.WeightsNotAvailable, match="ViT-B-32.*not cached"):
        weights.ensure_pretrained_available("ViT-B-32", "openai")
    import open_clip

    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/")
    snap = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"stand-in")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    hit, _ = weights.cached_weights("ViT-B-32", "openai")
    assert hit is not None and Path(hit).name == "open_clip_model.safetensors"
    weights.ensure_pretrained_available("ViT-B-32", "openai")       # no raise
    weights.ensure_pretrained_available("ViT-B-32", str(snap / "open_clip_model.safetensors"))   # a local file


# ------------------------------------------------------------------------------------------------------------------
# the other commands


def test_check_data_and_prepare_and_descriptions_mistakes(tmp_path, capsys):
    assert load_script("check_data").main([str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err
    assert load_script("prepare_data").main(["hmdb51", "--root", str(tmp_path / "nope"), "--out",
                                            str(tmp_path / "lists")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    (tmp_path / "f").write_text("x")
    assert load_script("prepare_data").main(["hmdb51", "--root", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert load_script("generate_descriptions").main(["--classes", str(tmp_path / "c.csv"), "--out",
                                                     str(tmp_path / "p.yaml"), "--num", "0"]) == 2
    assert "num_descriptions >= 1" in capsys.readouterr().err


def test_a_binary_list_and_a_bad_yaml_override(tmp_path, capsys):
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x01garbage")
    assert load_script("check_data").main([str(tmp_path / "bin.txt")]) == 2
    assert f"{tmp_path / 'bin.txt'}: not UTF-8 text" in capsys.readouterr().err
    assert load_script("train").main(["--cfg", "fewshot_hmdb", "--opts", "data.shots=[", "--dry-run"]) == 2
    assert "override 'data.shots=[': the value is not valid YAML" in capsys.readouterr().err


def test_opts_stop_at_the_first_positional():
    from msta.cli.common import _take_opts

    rest, opts = _take_opts(["--opts", "a.b=1", "c=x y", "clip.mp4", "--topk", "3", "--opts=d.e=2"])
    assert rest == ["clip.mp4", "--topk", "3"] and opts == ["a.b=1", "c=x y", "d.e=2"]
    assert _take_opts(["--opts", "--", "a=1"]) == (["--", "a=1"], [])


def test_worker_traceback_is_stripped_from_the_message():
    from msta.cli.common import user_error_message
    from msta.data.bad_videos import TooManyBadVideos

    e = TooManyBadVideos("Caught TooManyBadVideos in DataLoader worker process 0.\nOriginal Traceback (most recent "
                         "call last):\n  File \"x.py\", line 1, in f\nmsta.data.bad_videos.TooManyBadVideos: more than "
                         "5.0% of the videos are bad\n1 of 3 videos are bad")
    assert user_error_message(e) == "more than 5.0% of the videos are bad\n1 of 3 videos are bad"
    wrapped = RuntimeError("collective failed")
    wrapped.__cause__ = TooManyBadVideos("too many")
    assert user_error_message(wrapped) == "too many"
    assert user_error_message(RuntimeError("a bug")) is None
    assert user_error_message(NotADirectoryError(20, "Not a directory", "/x/f")) == "/x/f: Not a directory"


def test_non_user_errors_keep_their_traceback():
    from msta.cli.common import CliParser, run_command

    def body(args):
        raise RuntimeError("a bug in msta")

    with pytest.raises(RuntimeError, match="a bug"):
        run_command(body, CliParser("x"), [])
    assert os.environ.get("RANK") in (None, "", "0")
