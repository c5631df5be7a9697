"""Checkpoints: a small adapters-only file (usable without DeepSpeed) and the engine state for resuming.

Layout of a run folder:
    config.yaml                       the resolved config
    best/ / last/                     adapters folders (`msta.adapters_io`: model.safetensors + config.json), replaced
                                      atomically
    checkpoints/step_000120/          one resumable checkpoint, renamed into place only once complete:
        engine/state/...              `engine.save_checkpoint` (trainable params, optimiser, client_state)
        rng_rank{r}.pt                each rank's RNG state (tensors and numbers only: torch.load(weights_only=True))
        adapters/                     the adapters folder of that step (older runs: adapters.pt)
        complete                      the marker, written last (JSON: step, epoch, files: {relative path: bytes})

`check_checkpoint` tells a damaged checkpoint (a file missing, truncated or failing its zip CRCs) from a good one
before anything is loaded. Every write goes through a temporary name that is removed on failure; a full disk is
reported as `DiskFullError` naming the file, with the previous files kept.

Nothing here imports DeepSpeed: the engine state is written through a callable.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from msta import adapters_io as _adapters_io
from msta.adapters_io import ADAPTERS_FORMAT, adapter_payload, save_adapters
from msta.errors import UserError

__all__ = [
    "ADAPTERS_FORMAT", "DiskFullError", "is_disk_full", "atomic_torch_save", "save_adapters_checked",
    "check_checkpoint", "load_rng_state", "adapter_payload", "load_adapters", "checkpoint_dir", "list_complete",
    "find_last_complete", "read_marker", "save_checkpoint", "prune_checkpoints", "rng_state", "set_rng_state",
]

_logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")
COMPLETE = "complete"
RNG_FORMAT = "msta-rng/1"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(UserError, OSError):
    """No space (or quota, or file-size limit) left while writing a file; the previous version is kept."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" prefix
        return self.strerror or super().__str__()


def is_disk_full(exc: Optional[BaseException], folder: Optional[Path] = None) -> bool:
    """Whether `exc` (or an exception it was raised from) means the disk, quota or file-size limit is exhausted.

    torch's zip writer reports ENOSPC as `RuntimeError: [enforce fail at inline_container.cc] ... file write failed`
    (or `basic_ios::clear`) without the errno: those count when `folder` has less than 1 MiB free.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS):
            return True
        text = str(exc)
        if "No space left" in text or "Disk quota" in text or "File too large" in text:
            return True
        if isinstance(exc, RuntimeError) and ("file write failed" in text or "basic_ios::clear" in text) \
                and folder is not None and _free_bytes(folder) < 2 ** 20:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _free_bytes(folder: Path) -> int:
    for p in [folder, *folder.parents]:
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                break
    return 1 << 62


def disk_full_error(what: Path, exc: BaseException, kept: str) -> DiskFullError:
    """The one message for a full disk: the file, what was kept, and how to go on."""
    return DiskFullError(errno.ENOSPC, f"no space left while writing {what} ({exc}); {kept}. Free space on "
                         f"{what.parent} (or move the run) and continue with --resume auto")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file in the same folder, fsync, then `os.replace`: never a half-written file.

    The object is serialised in memory first, so that a full disk surfaces as the `OSError` of a plain file write
    (torch's own zip writer hides the errno).

    Raises:
        DiskFullError: no space left; `path` keeps its previous content and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if is_disk_full(e):
            kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
            raise disk_full_error(path, e, kept) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_adapters_checked(payload: dict, folder: str | Path) -> Path:
    """`save_adapters`, with a full disk reported as `DiskFullError` naming the folder (the previous one is kept)."""
    folder = Path(folder)
    try:
        return save_adapters(payload, folder)
    except OSError as e:
        if is_disk_full(e, folder.parent):
            kept = f"the previous {folder.name}/ is kept" if folder.exists() else f"no {folder.name}/ was written"
            raise disk_full_error(folder, e, kept) from e
        raise


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
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / COMPLETE).is_file()]
    return [p for _, p in sorted(found)]


def find_last_complete(run_dir: str | Path) -> Optional[Path]:
    done = list_complete(run_dir)
    return done[-1] if done else None


def rng_state() -> dict:
    """This process's RNG states as tensors, numbers and strings only (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"format": RNG_FORMAT, "torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Restores `rng_state()` (or the numpy/tuple form of the files written before RNG_FORMAT)."""
    torch.set_rng_state(state["torch"])
    npy, py = state["numpy"], state["python"]
    if isinstance(npy, dict):
        npy = (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    np.random.set_state(npy)
    if isinstance(py, dict):
        py = (py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"])
    random.setstate(py)
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_rng_state(path: str | Path) -> dict:
    """Reads an `rng_rank{r}.pt` with weights_only=True. Files of older versions (numpy arrays inside) are read with
    exactly numpy's array-rebuilding globals allowed, nothing else.

    Raises:
        ValueError: the file is not an RNG state that can be read as data (the message names the file).
    """
    path = Path(path)
    errors = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except errors as first:
        core = getattr(np, "_core", None) or np.core
        allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except errors:
            raise ValueError(f"{path} is not an RNG state msta can read as data ({first.__class__.__name__}); "
                             "remove that file to resume with fresh RNG streams (the data order and the "
                             "augmentation do not depend on them)") from None


def save_checkpoint(run_dir: str | Path, step: int, *, write_engine_state: Callable[[Path], None],
                    adapters: Optional[dict], marker: dict, rank: int, barrier: Callable[[], None],
                    keep_last: int, all_ok: Callable[[bool], bool] = lambda ok: ok) -> Optional[Path]:
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
        all_ok: True on every rank iff every rank passed True (a collective "and"), so that all ranks stop together
            when one rank's write failed.

    Returns:
        The checkpoint folder (on rank 0; None elsewhere).

    Raises:
        DiskFullError: no space left on some rank; the temporary folder is removed, earlier checkpoints are kept.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    failure: Optional[BaseException] = None
    try:
        write_engine_state(tmp / "engine")
        atomic_torch_save(rng_state(), tmp / f"rng_rank{rank}.pt")
        if rank == 0 and adapters is not None:
            save_adapters_checked(adapters, tmp / "adapters")
    except Exception as e:  # noqa: BLE001 - re-raised below, once every rank knows
        failure = e
    full = failure is not None and is_disk_full(failure, tmp)
    if not all_ok(failure is None):
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if failure is None:
            raise DiskFullError(errno.EIO, f"another process failed to write the checkpoint {final}; the previous "
                                "checkpoints are kept")
        if full:
            raise disk_full_error(final, failure, "the previous checkpoints and adapters are kept") from failure
        raise failure
    out = None
    if rank == 0:
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        _write_marker(tmp / COMPLETE, {**marker, "files": files})
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


def check_checkpoint(folder: str | Path) -> Optional[str]:
    """Why the checkpoint `folder` cannot be resumed from (None if it looks whole), without unpickling anything.

    Checks the marker's file list (each file present, with the size it had when written) and the CRCs of every
    member of every torch (zip) file, which catch truncation and flipped bytes. Checkpoints written before the
    marker listed its files get the zip checks only.

    Returns:
        e.g. "engine/state/mp_rank_00_model_states.pt: 1234 bytes, 5678 when written (truncated?)", or None.
    """
    folder = Path(folder)
    try:
        marker = read_marker(folder)
    except (OSError, ValueError) as e:
        return f"{COMPLETE}: unreadable ({e})"
    listed = marker.get("files") if isinstance(marker, dict) else None
    for rel, size in (listed or {}).items():
        p = folder / rel
        if not p.is_file():
            return f"{rel}: missing"
        if p.stat().st_size != size:
            return f"{rel}: {p.stat().st_size} bytes, {size} when written (truncated?)"
    for p in sorted(folder.rglob("*.pt")):
        rel = p.relative_to(folder)
        if not zipfile.is_zipfile(p):
            return f"{rel}: not a whole torch file (no zip directory: truncated?)"
        try:
            with zipfile.ZipFile(p) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
            return f"{rel}: unreadable ({e})"
        if bad is not None:
            return f"{rel}: damaged (CRC mismatch in {bad})"
    return None
