"""Shared fixtures of the index tests: synthetic mp4 videos (real H.264 written by PyAV), a tiny-model adapters
file, a config with 2 temporal views, and helpers to copy the folder so that each test can change its own."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.eval.test_protocols import cfg_dict, make_cfg, make_checkpoint, make_world


@pytest.fixture(scope="session")
def index_world(tmp_path_factory) -> dict:
    """18 videos (6 classes x 3) under ``videos``, ``cfg`` (YAML, 2 clips per video), ``ckpt`` / ``ckpt2``
    (adapters with different random weights)."""
    from msta.models import build_model

    root = tmp_path_factory.mktemp("index_world")
    world = make_world(root)
    cfg = make_cfg(world, views={"clips": 2})
    template = build_model(cfg.model)
    cfg_file = root / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg_dict(world, views={"clips": 2})))
    return {"videos": Path(world["videos"]), "cfg": cfg_file, "prompts": world["prompts"],
            "ckpt": make_checkpoint(root / "a" / "best.pt", cfg, template, seed=1),
            "ckpt2": make_checkpoint(root / "b" / "best.pt", cfg, template, seed=2)}


@pytest.fixture
def folder(index_world, tmp_path) -> Path:
    """A private copy of the videos (mtimes preserved) plus an unreadable .mp4 and a file that is no video."""
    dst = tmp_path / "videos"
    shutil.copytree(index_world["videos"], dst)
    (dst / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (dst / "notes.txt").write_text("not a video")
    return dst


@pytest.fixture(scope="session")
def index_model(index_world):
    from msta.index import load_index_model

    return load_index_model(str(index_world["ckpt"]), str(index_world["cfg"]))


def good_videos(folder: Path) -> list[str]:
    """Relative paths of the decodable videos under ``folder``."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.mp4") if p.name != "broken.mp4")
