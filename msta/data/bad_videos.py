"""Bad-video bookkeeping shared by all DataLoader workers, and a scanner for whole lists.

A bad video (missing, zero-byte, truncated or undecodable, or shorter than the minimum) must never stop a run, but
a dataset that is mostly bad must. `BadVideoTracker` keeps one shared byte per video (0 = not known bad, else a
reason code) in shared memory created before the workers start, so the count and the report aggregate across
workers (fork or spawn) without a manager process, and a video that is bad in every epoch is counted once.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from .decoding import VideoDecodeError, open_video

__all__ = ["REASONS", "BadVideo", "TooManyBadVideos", "BadVideoTracker", "check_video", "scan_videos",
           "format_report"]

_logger = logging.getLogger(__name__)

REASONS = ("missing", "empty", "undecodable", "too_short")


@dataclass(frozen=True)
class BadVideo:
    path: str
    reason: str        # one of REASONS
    detail: str = ""


class TooManyBadVideos(UserError, RuntimeError):
    """More than the allowed fraction of a dataset is bad; the message lists every bad file found so far."""


def format_report(bad: Sequence[BadVideo], total: int) -> str:
    """One header line, then `reason<TAB>path<TAB>detail` per bad video."""
    lines = [f"{len(bad)} of {total} videos are bad"]
    lines += [f"  {b.reason}\t{b.path}" + (f"\t{b.detail}" if b.detail else "") for b in bad]
    return "\n".join(lines)


class BadVideoTracker:
    """Counts bad videos across processes and raises when they exceed `max_fraction` of `total`.

    Create it in the main process (the dataset does) before the DataLoader starts its workers.

    Args:
        paths: the dataset's video paths, in index order (for the report).
        max_fraction: stop once more than this fraction of the videos are bad (config key data.max_bad_fraction).
    """

    def __init__(self, paths: Sequence[str], max_fraction: float):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction} (config key data.max_bad_fraction)")
        self.paths = list(paths)
        self.max_fraction = max_fraction
        # lock=False: each slot is written by whoever decoded that video; byte writes need no lock.
        self._codes = mp.Array("b", max(1, len(self.paths)), lock=False)
        self._details: dict[int, str] = {}  # this process only; the shared part is the reason code

    def is_bad(self, index: int) -> bool:
        return self._codes[index] != 0

    def mark(self, index: int, reason: str, detail: str = "") -> None:
        """Records video `index` as bad, logs it, and raises `TooManyBadVideos` past the limit."""
        if not self.is_bad(index):
            _logger.warning("bad video skipped: %s (%s%s)", self.paths[index], reason, f": {detail}" if detail else "")
        self._codes[index] = REASONS.index(reason) + 1
        self._details[index] = detail
        if self.count > self.max_fraction * len(self.paths):
            raise TooManyBadVideos(
                f"more than {self.max_fraction:.1%} of the videos are bad (limit: data.max_bad_fraction); fix or "
                f"remove them (scripts/check_data.py lists them all):\n{self.report()}")

    @property
    def count(self) -> int:
        """Distinct bad videos found so far, by any process."""
        return sum(1 for c in self._codes[:len(self.paths)] if c)

    def bad_videos(self) -> list[BadVideo]:
        return [BadVideo(self.paths[i], REASONS[c - 1], self._details.get(i, ""))
                for i, c in enumerate(self._codes[:len(self.paths)]) if c]

    def report(self) -> str:
        return format_report(self.bad_videos(), len(self.paths))


def check_video(path: str | os.PathLike, *, backend: str = "decord", min_frames: int = 1,
                full: bool = False) -> Optional[BadVideo]:
    """Returns None for a good video, else why it is bad.

    Reads the frame count and decodes the first, middle and last frames (all frames with `full=True`, which also
    finds damage in the middle of a file).
    """
    try:
        reader = open_video(path, backend=backend)
        n = len(reader)
        if n < max(1, min_frames):
            return BadVideo(str(path), "too_short", f"{n} frames < data.min_frames={max(1, min_frames)}")
        reader.get_frames(list(range(n)) if full else sorted({0, n // 2, n - 1}))
    except VideoDecodeError as e:
        return BadVideo(str(path), e.reason, e.detail)
    return None


def scan_videos(paths: Sequence[str | os.PathLike], *, root: str | os.PathLike = ".", backend: str = "decord",
                min_frames: int = 1, full: bool = False) -> list[BadVideo]:
    """`check_video` over a list of paths relative to `root`; returns every bad one (paths as given)."""
    bad = []
    for p in paths:
        b = check_video(Path(root) / p, backend=backend, min_frames=min_frames, full=full)
        if b is not None:
            bad.append(BadVideo(str(p), b.reason, b.detail))
    return bad
