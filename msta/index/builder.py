"""Builds and updates a folder index: walk the folder, embed what is new or changed, drop what is gone.

A video is identified by its path relative to the folder plus its size and modification time: an entry whose file
still has the recorded size and mtime is kept as it is, a changed one is embedded again, a deleted one is dropped.
A video that cannot be read is listed in the index's ``failed`` list with the reason and is tried again only once
the file changes. The index is rewritten atomically every ``flush_every`` videos or ``flush_seconds`` seconds and
on the way out of any exception (Ctrl-C included), so stopping a run loses at most the videos embedded since the
last write, and nothing at all when it is stopped by an exception or a signal Python sees.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from msta.errors import UserError
from msta.index.model import IDENTITY_KEYS, IndexModel
from msta.index.store import Entry, Failed, IndexData, read_index, write_index

__all__ = ["VIDEO_EXTENSIONS", "IndexMismatchError", "IndexInputError", "UpdateReport", "scan_folder", "update_index"]

_logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".3gp", ".ts"})


class IndexMismatchError(UserError, ValueError):
    """An existing index made with another model, adapters, view settings or folder."""


class IndexInputError(UserError, ValueError):
    """The folder to index is not a folder."""


@dataclass
class UpdateReport:
    """What one ``update_index`` run did (counts of videos) and the index's unreadable videos."""
    path: Path
    added: int = 0
    updated: int = 0
    kept: int = 0
    dropped: int = 0
    failed: list[Failed] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    def line(self) -> str:
        return (f"{self.path}: {self.kept + self.embedded} videos ({self.added} new, {self.updated} changed, "
                f"{self.kept} unchanged, {self.dropped} dropped), {len(self.failed)} unreadable, "
                f"{self.seconds:.1f} s")


def scan_folder(folder: str | os.PathLike, extensions=VIDEO_EXTENSIONS) -> dict[str, os.stat_result]:
    """Video files under ``folder`` (recursively; hidden files and folders, and linked folders, skipped) -> their
    stat, by relative path.

    Raises:
        IndexInputError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise IndexInputError(f"{folder} is not a folder; give the folder of videos to index")
    found = {}
    # linked files are listed; linked folders are not entered (a link cycle would never end)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in VIDEO_EXTENSIONS & set(extensions):
                continue
            full = Path(dirpath) / name
            try:
                found[full.relative_to(root).as_posix()] = full.stat()
            except OSError as e:  # vanished between listing and stat, or a dangling link: no video there
                _logger.warning("skipping %s: %s", full, e)
    return found


class _Videos(Dataset):
    """Decodes the views of each pending video; a failure is returned as its reason, not raised."""

    def __init__(self, decode: Callable, root: Path, paths: list[str]):
        self.decode, self.root, self.paths = decode, root, paths   # no model here: workers get a small pickle

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from msta.data.decoding import VideoDecodeError

        try:
            return i, self.decode(self.root / self.paths[i]), None
        except VideoDecodeError as e:
            return i, None, e.reason + (f" ({e.detail})" if e.detail else "")
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's problem, not the run's
            return i, None, f"{type(e).__name__}: {e}"


def _check_same(old: IndexData, model: IndexModel, root: str, out: Path) -> None:
    diff = [f"{k}: index {old.identity.get(k)!r} vs now {model.identity.get(k)!r}"
            for k in IDENTITY_KEYS if old.identity.get(k) != model.identity.get(k)]
    if diff:
        raise IndexMismatchError(f"{out} was built with another model ({'; '.join(diff)}); its embeddings are not "
                                 "comparable with this model's. Use the same --ckpt/--cfg, another --out, or "
                                 "--rebuild to replace it")
    if old.root != root:
        raise IndexMismatchError(f"{out} indexes the folder {old.root}, not {root}; use another --out, or "
                                 "--rebuild to replace it")


def update_index(folder: str | os.PathLike, out: str | os.PathLike, model: IndexModel, *, rebuild: bool = False,
                 batch_size: int = 8, workers: int = 0, flush_every: int = 256, flush_seconds: float = 30.0,
                 progress: bool = True, on_batch: Optional[Callable[[int], None]] = None) -> UpdateReport:
    """Creates or updates the index ``out`` of the videos under ``folder``.

    Args:
        folder: the folder to index (recursively).
        out: the index file (created, or updated in place).
        model: the model to embed with; an existing index must have been built with the same identity.
        rebuild: ignore (and replace) an existing index.
        batch_size: videos per forward (each forward encodes ``batch_size * V`` clips).
        workers: DataLoader processes decoding videos ahead of the model.
        flush_every, flush_seconds: write the index after this many newly embedded videos or seconds.
        progress: show a progress bar (stderr).
        on_batch: called with the number of videos embedded so far after each batch (tests interrupt here).

    Returns:
        An ``UpdateReport``.

    Raises:
        IndexInputError: ``folder`` is not a folder.
        IndexMismatchError: ``out`` exists and was built with another model/adapters/views or folder.
        msta.index.store.IndexFileError: ``out`` exists and is not a readable index.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    out, root = Path(out), str(Path(folder).resolve())
    found = scan_folder(folder)
    report = UpdateReport(out)
    entries: list[Entry] = []
    chunks: list[torch.Tensor] = []
    failed: list[Failed] = []
    known: set[str] = set()   # in the old index, with its file state unchanged (kept, or known unreadable)
    previous: set[str] = set()
    if out.exists() and not rebuild:
        old = read_index(out)
        _check_same(old, model, root, out)
        keep = []
        for row, e in enumerate(old.entries):
            previous.add(e.path)
            st = found.get(e.path)
            if st is not None and (st.st_size, st.st_mtime_ns) == (e.size, e.mtime_ns):
                entries.append(e)
                keep.append(row)
                known.add(e.path)
        if keep:
            chunks.append(old.views[torch.tensor(keep)])
        for f in old.failed:
            previous.add(f.path)
            st = found.get(f.path)
            if st is not None and (st.st_size, st.st_mtime_ns) == (f.size, f.mtime_ns):
                failed.append(f)
                known.add(f.path)
        report.kept = len(entries)
        report.dropped = len({e.path for e in old.entries} - set(found))
    pending = [p for p in found if p not in known]
    report.updated = sum(p in previous for p in pending)
    report.added = len(pending) - report.updated

    def flush() -> None:
        views = torch.cat(chunks) if chunks else torch.zeros(0, model.num_views, 1)
        write_index(out, IndexData(root, model.identity, model.ckpt_path, _config_dict(model), list(entries),
                                   views, list(failed)))

    _logger.info("%s: %d videos found, %d to embed", folder, len(found), len(pending))
    from msta.engine.loaders import worker_kwargs

    workers = workers if pending else 0
    loader = DataLoader(_Videos(model.decoder(), Path(root), pending), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=list, **worker_kwargs(workers))
    since, last = 0, time.monotonic()
    done = 0
    bar = tqdm(total=len(pending), desc="embedding", unit="video", disable=not progress or not pending)
    try:
        for batch in loader:
            ok = [(i, v) for i, v, _ in batch if v is not None]
            for i, _, reason in batch:
                if reason is not None:
                    st = found[pending[i]]
                    failed.append(Failed(pending[i], st.st_size, st.st_mtime_ns, reason))
                    _logger.warning("cannot read %s: %s", Path(root) / pending[i], reason)
            if ok:
                chunks.append(model.embed_views([v for _, v in ok]))
                for i, _ in ok:
                    st = found[pending[i]]
                    entries.append(Entry(pending[i], st.st_size, st.st_mtime_ns))
            done += len(batch)
            since += len(batch)
            bar.update(len(batch))
            if since >= flush_every or time.monotonic() - last >= flush_seconds:
                flush()
                since, last = 0, time.monotonic()
            if on_batch is not None:
                on_batch(done)
    finally:
        bar.close()
        flush()   # also on Ctrl-C: everything embedded so far is kept
    report.failed = list(failed)
    new_failures = {f.path for f in failed} & set(pending)
    report.added -= sum(p in new_failures and p not in previous for p in pending)
    report.updated -= sum(p in new_failures and p in previous for p in pending)
    report.seconds = time.perf_counter() - start
    _logger.info(report.line())
    return report


def _config_dict(model: IndexModel) -> dict:
    from msta.config import config_to_dict

    return config_to_dict(model.cfg)
