"""Shared by the engine and script tests: a synthetic mp4 dataset and a tiny-model config that trains in seconds."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "scripts" / "train.py"


def write_dataset(root: Path, *, per_class: int = 6, val: int = 2, task: str = "appearance",
                  captions: bool = False) -> dict:
    """4 classes x `per_class` training and `val` test videos (8 frames, 32 px) plus prompts; returns data keys.

    With `captions`, the lists are caption lists (2 captions per video), there is no class table, and the keys
    include loss.kind=infonce.
    """
    from msta.data.synthetic import write_synthetic_dataset

    prompts = root / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "prompts" / "templates.yaml", prompts / "templates.yaml")
    classes = ["red_square", "green_circle", "blue_triangle", "yellow_square"] if task == "appearance" else None
    ds = write_synthetic_dataset(root / "data", task, splits={"train": per_class, "test": val}, seed=0,
                                 classes=classes, num_frames=8, size=32, prompts_dir=prompts, progress=False,
                                 captions=captions)
    if captions:
        return {"data": {"dataset": ds.name, "root": str(ds.root), "class_table": "",
                         "train_list": str(ds.caption_lists["train"]), "test_list": str(ds.caption_lists["test"])},
                "text": {"prompts_dir": str(prompts)}, "loss": {"kind": "infonce"}}
    return {"data": {"dataset": ds.name, "root": str(ds.root), "class_table": str(ds.class_table),
                     "train_list": str(ds.lists["train"]), "test_list": str(ds.lists["test"])},
            "text": {"prompts_dir": str(prompts)}}


def tiny_config(tmp: Path, data_keys: dict, **sections) -> Path:
    """A config for msta-tiny on the synthetic data; `sections` override (e.g. train={"zero_stage": 2})."""
    cfg = {
        "_base_": [str(REPO / "configs" / "_base_" / "default.yaml")],
        "name": "tiny",
        "model": {"name": "msta-tiny", "pretrained": None, "num_frames": 8,
                  "msta": {"text_blocks": [2, 2], "vision_blocks": [1, 2], "dim": 32, "scale": 0.1}},
        "data": {**data_keys["data"], "input_size": 32, "num_workers": 0, "val_fraction": 0.25,
                 "flip": True, "views": {"clips": 1, "crops": 1}},
        "text": data_keys["text"],
        "loss": data_keys.get("loss", {}),
        "optim": {"lr": 2e-2, "epochs": 4, "warmup_epochs": 1, "min_lr": 1e-4},
        "train": {"out_dir": str(tmp / "run"), "batch_size": 6, "micro_batch": 3, "zero_stage": 0,
                  "eval_every": 1, "ckpt_every": 1, "log_every": 1, "keep_last": 2},
        "eval": {"batch_size": 4, "views": {"clips": 1, "crops": 1}},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def env(tmp: Path) -> dict:
    e = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MSTA_CACHE_DIR=str(tmp / "cache"),
             PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def run_train(cfg: Path, tmp: Path, *extra: str, nproc: int = 1, launcher: str = "torchrun",
              timeout: int = 180, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs scripts/train.py as a subprocess: plainly (nproc 1) or with `nproc` processes under `launcher`
    ("torchrun", or "deepspeed", which passes --local_rank=N to the script)."""
    from msta.engine.distributed import free_port

    if nproc == 1:
        cmd = [sys.executable, str(TRAIN), "--cfg", str(cfg), *extra]
    elif launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(TRAIN), "--cfg", str(cfg), *extra]
    elif launcher == "deepspeed":
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nproc), "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(TRAIN), "--cfg", str(cfg), *extra]
    else:
        raise ValueError(f"unknown launcher {launcher!r}")
    return subprocess.run(cmd, env={**env(tmp), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
