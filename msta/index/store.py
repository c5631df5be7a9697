"""The index file: one safetensors file holding the view embeddings, with everything else as JSON in its header.

Layout (format ``msta-index/1``):
- tensor ``views``: (N, V, E) float32 L2-normalised view embeddings, row i for entry i;
- header metadata ``msta_index``: JSON with ``format``, ``root`` (the indexed folder, absolute), ``identity``
  (``msta.index.model.IDENTITY_KEYS``), ``ckpt`` (the adapters file, or null), ``config`` (the resolved config the
  model was built from), ``entries`` (N x {path relative to root, size, mtime_ns}) and ``failed`` (videos that
  could not be read: path, size, mtime_ns, reason).

No pickle anywhere: safetensors holds only tensors and strings. Writes are atomic (a temporary file in the same
folder, fsync, ``os.replace``), so a reader, or a run killed mid-write, sees either the old file or the new one.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from msta.errors import UserError

__all__ = ["FORMAT", "Entry", "Failed", "IndexData", "IndexFileError", "read_index", "write_index"]

FORMAT = "msta-index/1"
_META_KEY = "msta_index"


class IndexFileError(UserError, ValueError):
    """An index file that is missing, not an msta index, or damaged (the message names the file and the fix)."""


@dataclass(frozen=True)
class Entry:
    """One indexed video: ``path`` relative to the index root (POSIX separators), its size and mtime when embedded."""
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Failed:
    """A video that could not be read, with the file state it was tried on and why."""
    path: str
    size: int
    mtime_ns: int
    reason: str


@dataclass
class IndexData:
    """The contents of an index file.

    Attributes:
        root: the indexed folder (absolute).
        identity: the model identity (``msta.index.model.IDENTITY_KEYS`` -> value).
        ckpt: the adapters file the index was built with (absolute), or None (frozen CLIP).
        config: the resolved experiment config as a dict (rebuilds the model for text queries).
        entries: N videos, in the order of ``views``' rows.
        views: (N, V, E) float32 view embeddings.
        failed: unreadable videos.
    """
    root: str
    identity: dict
    ckpt: Optional[str]
    config: dict
    entries: list[Entry] = field(default_factory=list)
    views: Optional[Tensor] = None
    failed: list[Failed] = field(default_factory=list)


def write_index(path: str | os.PathLike, data: IndexData) -> Path:
    """Writes ``data`` to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    views = data.views if data.views is not None else torch.zeros(0, 1, 1)
    if views.shape[0] != len(data.entries):
        raise ValueError(f"{views.shape[0]} embedding rows for {len(data.entries)} entries")
    meta = {"format": FORMAT, "root": data.root, "identity": data.identity, "ckpt": data.ckpt,
            "config": data.config, "entries": [[e.path, e.size, e.mtime_ns] for e in data.entries],
            "failed": [[f.path, f.size, f.mtime_ns, f.reason] for f in data.failed]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({"views": views.to(torch.float32).contiguous()}, tmp, metadata={_META_KEY: json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_index(path: str | os.PathLike) -> IndexData:
    """Reads an index file.

    Raises:
        IndexFileError: no such file, or not a readable msta index.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise IndexFileError(f"no index file at {path}; build one with `msta index DIR --out {path}`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META_KEY, "null"))
            views = f.get_tensor("views") if "views" in f.keys() else None
    except Exception as e:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise IndexFileError(f"{path} is not a readable msta index ({type(e).__name__}: {e}); "
                             "rebuild it with `msta index DIR --out FILE --rebuild`") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or views is None:
        raise IndexFileError(f"{path} is not an msta index (format {FORMAT!r}); "
                             "build one with `msta index DIR --out FILE`")
    entries = [Entry(p, int(s), int(m)) for p, s, m in meta["entries"]]
    failed = [Failed(p, int(s), int(m), r) for p, s, m, r in meta["failed"]]
    if views.shape[0] != len(entries):
        raise IndexFileError(f"{path}: {views.shape[0]} embedding rows for {len(entries)} entries; the file is "
                             "damaged, rebuild it with --rebuild")
    return IndexData(meta["root"], meta["identity"], meta["ckpt"], meta["config"], entries, views, failed)
