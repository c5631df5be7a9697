"""Checkpoints: a small adapters-only file (usable without DeepSpeed) and the engine state for resuming.

Layout of a run folder:
    config.yaml                       the resolved config
    best/ / last/                     adapters folders (`msta.adapters_io`: model.safetensors + config.json), replaced
                                      atomically
    checkpoints/step_000120/          one resumable checkpoint, renamed into place only once complete:
        engine/state/...              `engine.save_checkpoint` (trainable params, optimiser, client_state)
        rng_rank{r}.pt                each rank's RNG state
        adapters/                     the adapters folder of that step (older runs: adapters.pt)
        complete                      the marker, written last (JSON: step, epoch)

Nothing here imports DeepSpeed: the engine state is written through a callable.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from msta import adapters_io as _adapters_io
from msta.adapters_io import ADAPTERS_FORMAT, adapter_payload, save_adapters

__all__ = [
    "ADAPTERS_FORMAT", "atomic_torch_save", "adapter_payload", "load_adapters", "checkpoint_dir", "list_complete",
    "find_last_complete", "read_marker", "save_checkpoint", "prune_checkpoints", "rng_state", "set_rng_state",
]

_logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")
COMPLETE = "complete"


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file in the same folder, fsync, then `os.replace`: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_adapters(path: str | Path) -> dict:
    """Reads adapters: an adapters folder (`run/best`), a checkpoint folder, a Hub id, or an old `.pt` (as data).

    See `msta.adapters_io.load_adapters`, which this delegates to.

    Returns:
        The payload of `adapter_payload`; apply it with `model.load_adapter_state_dict(payload["state_dict"])`.
    """
    return _adapters_io.load_adapters(path)


# ----------------------------------------------------------------------------------------------------------------
# resumable checkpoints


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def list_complete(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (folders without the marker are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / COMPLETE).is_file()]
    return [p for _, p in sorted(found)]


def find_last_complete(run_dir: str | Path) -> Optional[Path]:
    done = list_complete(run_dir)
    return done[-1] if done else None


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | Path, step: int, *, write_engine_state: Callable[[Path], None],
                    adapters: Optional[dict], marker: dict, rank: int, barrier: Callable[[], None],
                    keep_last: int) -> Optional[Path]:
    """Writes a resumable checkpoint atomically: a temporary folder, renamed into place with a `complete` marker.

    Collective: every rank calls it (DeepSpeed writes per-rank optimiser shards). A crash at any point leaves the
    previous complete checkpoints as they were; the next run ignores and later removes the half-written folder.

    Args:
        run_dir: the run folder.
        step: optimiser step the checkpoint resumes from.
        write_engine_state: writes the engine state into the given folder (e.g. `engine.save_checkpoint`).
        adapters: the adapters-only payload (rank 0's is written; others may pass None).
        marker: small JSON-able dict stored in the marker (step, epoch, ...).
        rank: this process's rank.
        barrier: synchronises all ranks.
        keep_last: complete checkpoints to keep (older ones are deleted); 0 keeps all.

    Returns:
        The checkpoint folder (on rank 0; None elsewhere).
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    write_engine_state(tmp / "engine")
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    barrier()
    out = None
    if rank == 0:
        if adapters is not None:
            save_adapters(adapters, tmp / "adapters")
        _write_marker(tmp / COMPLETE, marker)
        if final.exists():  # the same step saved again (a resumed run): move the old one aside, never delete first
            old = final.with_name(f".tmp-old-{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        prune_checkpoints(run_dir, keep_last)
        out = final
    barrier()
    return out


def _write_marker(path: Path, marker: dict) -> None:
    with open(path, "w") as f:
        json.dump(marker, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Deletes all but the newest `keep_last` complete checkpoints, and stale temporary folders. Returns the deleted."""
    done = list_complete(run_dir)
    doomed = done[:-keep_last] if keep_last > 0 else []
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        doomed += [p for p in root.iterdir() if p.name.startswith(".tmp-") and p.is_dir()]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def read_marker(ckpt: str | Path) -> dict:
    return json.loads((Path(ckpt) / COMPLETE).read_text())
