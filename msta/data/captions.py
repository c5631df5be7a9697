"""Caption lists for video-text training (loss.kind infonce): read, written, grouped by video, held out by video.

Format: one `relative/path.ext<TAB>caption` line per (video, caption) pair, paths relative to the data root. Every
line with a TAB is a pair, whatever it starts with (video names may start with `#`); a line without a TAB that
starts with `#` is a comment, and comments and blank lines are counted and logged. A video with several captions
(MSR-VTT has 20) appears on several lines. The separator is a TAB, not spaces, because both paths and captions
contain spaces.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .annotations import AnnotationError, SkippedLines, VideoItem
from .splits import hold_out

__all__ = ["CaptionItem", "CaptionedVideo", "read_caption_list", "write_caption_list", "group_by_video",
           "hold_out_videos"]

_FORMAT = "`relative/path.ext<TAB>caption`"


@dataclass(frozen=True)
class CaptionItem:
    """One (video, caption) pair: `path` relative to the data root (forward slashes)."""
    path: str
    caption: str


@dataclass(frozen=True)
class CaptionedVideo:
    """One video with all of its captions, in list order."""
    path: str
    captions: tuple[str, ...]


def _looks_like_label_line(line: str) -> bool:
    parts = line.rsplit(None, 1)
    return len(parts) == 2 and parts[1].lstrip("-").isdigit()


def _parse(line: str, where: str) -> CaptionItem:
    if "\t" not in line:
        if _looks_like_label_line(line):
            raise AnnotationError(f"{where}: {line!r} looks like a label list line (`path <label_id>`); "
                                  f"loss.kind=infonce needs caption lists with {_FORMAT} lines "
                                  "(or train on labels with loss.kind=classification)")
        raise AnnotationError(f"{where}: no TAB in {line!r}; caption lists have {_FORMAT} lines, the path and the "
                              "caption separated by one TAB character (spaces are part of paths and captions)")
    path, caption = (part.strip() for part in line.split("\t", 1))
    if not path:
        raise AnnotationError(f"{where}: empty video path before the TAB in {line!r}; expected {_FORMAT}")
    if not caption:
        raise AnnotationError(f"{where}: empty caption after the TAB for video {path!r}; expected {_FORMAT}")
    return CaptionItem(path, caption)


def read_caption_list(path: str | os.PathLike) -> list[CaptionItem]:
    """Reads `relative/path.ext<TAB>caption` lines, in file order.

    A line with a TAB is always a pair (a video name may start with `#`); a line without one that starts with `#`
    is a comment, counted and logged; blank lines are skipped. A UTF-8 byte order mark is dropped.

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: a malformed line (the message names file:line and the expected format), or no pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption list not found: {path}")
    items, comments = [], SkippedLines(path, "caption pairs")
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line and line.lstrip().startswith("#"):
                comments.add(n)
                continue
            items.append(_parse(line, f"{path}:{n}"))
    comments.log(len(items))
    if not items:
        raise AnnotationError(f"{path}: no {_FORMAT} lines (only blank lines or comments)")
    return items


def write_caption_list(path: str | os.PathLike, items: Iterable[CaptionItem]) -> Path:
    """Writes `relative/path.ext<TAB>caption` lines; parent folders are created.

    Raises:
        ValueError: a path or caption that would not read back as written (a TAB or newline in it, empty, or
            surrounded by spaces, which the reader strips).
    """
    lines = []
    for it in items:
        for name, text in (("path", it.path), ("caption", it.caption)):
            if not text or text != text.strip() or any(c in text for c in "\t\r\n"):
                raise ValueError(f"caption list {name} {text!r} ({it.path!r}) must be non-empty, without TAB, "
                                 "newline or surrounding spaces, to read back as written")
        lines.append(f"{it.path}\t{it.caption}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def group_by_video(items: Iterable[CaptionItem]) -> list[CaptionedVideo]:
    """One entry per distinct video, in order of first appearance, with its captions in list order."""
    by_path: dict[str, list[str]] = {}
    for it in items:
        by_path.setdefault(it.path, []).append(it.caption)
    return [CaptionedVideo(p, tuple(c)) for p, c in by_path.items()]


def hold_out_videos(items: Sequence[CaptionItem], fraction: float,
                    seed: int) -> tuple[list[CaptionItem], list[CaptionItem]]:
    """Splits off whole videos for model selection: every caption of a video ends up on the same side.

    The videos are drawn exactly as `splits.hold_out` draws from a label list (same seed -> same draw over the
    sorted distinct paths), so round(fraction * videos) videos are held out, at least one when fraction > 0.

    Returns:
        (kept, held_out) caption items, each in the input order.
    """
    videos = [VideoItem(v.path, 0) for v in group_by_video(items)]
    _, held = hold_out(videos, fraction, seed)
    held_paths = {v.path for v in held}
    return [it for it in items if it.path not in held_paths], [it for it in items if it.path in held_paths]
