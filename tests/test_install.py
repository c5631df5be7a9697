"""msta as an installed package: the wheel carries the shipped configs and prompts (the repository's one copy), and
after `pip install` of that wheel (not editable) into a fresh venv its console entry points run from any directory.

Offline: the wheel is built with `--no-build-isolation --no-deps`, installed with `--no-index --no-deps`, and the
venv reuses this environment's installed dependencies through a `.pth` line (not this checkout: the installed copy
of msta is the one imported, which the test checks).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("msta", "msta-train", "msta-eval", "msta-zeroshot", "msta-predict", "msta-prepare", "msta-check-data",
                "msta-descriptions", "msta-import-descriptions", "msta-benchmark")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=300)
    (found,) = out.glob("msta-*.whl")
    return found


@pytest.mark.slow
def test_wheel_carries_the_shipped_configs_and_prompts(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("configs", "prompts"):
        shipped = {str(p.relative_to(ROOT / kind)) for p in (ROOT / kind).rglob("*") if p.is_file()}
        assert shipped and {f"msta/_shipped/{kind}/{s}" for s in shipped} <= names, kind
    assert "msta/models/model_configs/msta-tiny.json" in names or any("model_configs/" in n for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    for ep in ENTRY_POINTS:
        assert f"\n{ep} = " in text, ep
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    v = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(v)], check=True, timeout=120)
    site = next((v / "lib").glob("python3*/site-packages"))
    (site / "_reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")   # torch, open_clip, ...
    subprocess.run([sys.executable, "-m", "pip", "--python", str(v / "bin" / "python"), "install", "-q",
                    "--no-index", "--no-deps", str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return v


def _run(venv: Path, cmd: list, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    e.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
             PATH=f"{venv / 'bin'}{os.pathsep}{e.get('PATH', '')}")
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_installed_entry_points_from_another_directory(venv, tmp_path):
    """Every entry point answers --help; the installed msta (not the checkout) finds its shipped configs by name and
    its shipped prompts; a prompts/ folder in the working directory overrides them; predict runs end to end."""
    from msta.data.mp4 import write_mp4
    from msta.models import build_model
    from tests.eval.test_protocols import make_cfg, make_checkpoint, make_world

    for ep in ENTRY_POINTS:
        proc = _run(venv, [venv / "bin" / ep, "--help"], tmp_path)
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (ep, proc.stderr[-2000:])
    probe = ("import msta, msta.resources as r; from msta.config import load_config; c = load_config('fewshot_hmdb');"
             "import json; print(json.dumps([msta.__file__, str(r.shipped_dir('prompts')), c.text.prompts_dir, "
             "list(load_config('zeroshot_k400').eval.targets)]))")
    where, prompts, prompts_dir, targets = json.loads(_run(venv, [venv / "bin" / "python", "-c", probe],
                                                           tmp_path).stdout)
    assert str(venv) in where and str(ROOT) not in where                 # the installed copy, not the checkout
    assert prompts_dir == prompts and Path(prompts, "hmdb51.yaml").is_file()
    assert all(Path(t).is_file() and str(venv) in t for t in targets)

    import dataclasses

    world = make_world(tmp_path / "w")
    cfg = make_cfg(world)
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, prompts_dir="prompts"))   # as shipped configs
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", cfg, build_model(cfg.model), seed=2)
    clip = write_mp4(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run(venv, [venv / "bin" / "msta-predict", clip, "--ckpt", ckpt, "--dataset", "hmdb51", "--topk", "2",
                       "--json"], elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    shipped = yaml.safe_load(Path(prompts, "hmdb51.yaml").read_text())["classes"]
    assert len(doc["labels"]) == len(shipped) == 51 and len(doc["predictions"][0]["top"]) == 2
    # the user's own prompts/ folder overrides the shipped one
    (elsewhere / "prompts").mkdir()
    (elsewhere / "prompts" / "hmdb51.yaml").write_text(yaml.safe_dump(
        {"dataset": "hmdb51", "classes": {"wave": {"name": "waving"}, "jump": {"name": "jumping"}}}, sort_keys=False))
    proc = _run(venv, [venv / "bin" / "msta", "predict", clip, "--ckpt", ckpt, "--dataset", "hmdb51", "--json"],
                elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["labels"] == ["waving", "jumping"]


def test_the_one_path_rule_from_another_directory(tmp_path, monkeypatch):
    """Shipped configs by name and shipped prompts from any directory; the working directory's own files win."""
    from msta.config import load_config
    from msta.resources import resolve_path, shipped_dir

    monkeypatch.chdir(tmp_path)
    cfg = load_config("fewshot_hmdb")
    assert cfg.name == "fewshot_hmdb" and cfg.text.prompts_dir == str(shipped_dir("prompts"))
    assert cfg.data.root == "data/hmdb51"                                   # data paths stay the user's
    assert all(Path(t).is_file() for t in load_config("zeroshot_k400").eval.targets)
    assert resolve_path("prompts/nope.yaml") == "prompts/nope.yaml"         # nothing shipped: as given
    (tmp_path / "prompts").mkdir()
    assert load_config("fewshot_hmdb").text.prompts_dir == "prompts"        # ./prompts overrides the shipped ones
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fewshot_hmdb.yaml").write_text("name: mine\n")
    assert load_config("fewshot_hmdb").name == "mine"                       # ./configs first
    assert load_config(ROOT / "configs" / "fewshot_hmdb.yaml").name == "fewshot_hmdb"
