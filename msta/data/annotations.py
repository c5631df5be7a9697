"""Annotation formats: the peers' video lists and class tables, read and written.

- Video list (ViFi-CLIP / X-CLIP / OST / MoTE): one `relative/path.ext <label_id>` line per video, paths relative
  to the data root. The label is the last whitespace-separated field, so paths may contain spaces.
- Class table: CSV `id,name` with a header, ids 0..N-1 (base/novel tables are re-indexed from 0).
- PySlowFast layout (Open-VCLIP / FROSTER): `{train,val,test}.csv` of `path<sep>label` lines without a header,
  the separator being `DATA.PATH_LABEL_SEPARATOR` (comma or space), and `*-index2cls.json` = {"0": "name", ...}.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import UserError

__all__ = [
    "AnnotationError", "VideoItem", "read_video_list", "write_video_list", "read_class_table", "write_class_table",
    "read_slowfast_csv", "write_slowfast_csv", "read_index2cls_json", "write_index2cls_json", "remap_labels",
]


class AnnotationError(UserError, ValueError):
    """An annotation file is malformed; the message names the file, the line and the offending text."""


@dataclass(frozen=True)
class VideoItem:
    """One labelled video: `path` relative to the data root (forward slashes), `label` a class id."""
    path: str
    label: int


def _parse_label(text: str, where: str) -> int:
    try:
        label = int(text)
    except ValueError:
        raise AnnotationError(f"{where}: label {text!r} is not an integer; lines must read "
                              "`relative/path.ext <label_id>`") from None
    if label < 0:
        raise AnnotationError(f"{where}: negative label {label}")
    return label


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield n, line


def read_video_list(path: str | os.PathLike) -> list[VideoItem]:
    """Reads `relative/path.ext <label_id>` lines (blank lines and `#` comments are skipped)."""
    path = Path(path)
    items = []
    for n, line in _lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise AnnotationError(f"{path}:{n}: expected `relative/path.ext <label_id>`, got {line!r}")
        try:
            label = _parse_label(parts[1], f"{path}:{n}")
        except AnnotationError as e:
            if "\t" in line:  # the usual mix-up: a caption list given to a classification run
                raise AnnotationError(f"{e}; TAB-separated `path<TAB>caption` lines are a caption list, which "
                                      "loss.kind=infonce reads") from None
            raise
        items.append(VideoItem(parts[0], label))
    return items


def write_video_list(path: str | os.PathLike, items: Iterable[VideoItem]) -> Path:
    """Writes `relative/path.ext <label_id>` lines; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{it.path} {it.label}\n" for it in items), encoding="utf-8")
    return path


def read_class_table(path: str | os.PathLike) -> list[str]:
    """Reads an `id,name` CSV with a header into names ordered by id; ids must be exactly 0..N-1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class table not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["id", "name"]:
        raise AnnotationError(f"{path}:1: a class table starts with the header `id,name`, got {rows[:1]}")
    by_id: dict[int, str] = {}
    for n, row in enumerate(rows[1:], 2):
        if len(row) < 2:
            raise AnnotationError(f"{path}:{n}: expected `id,name`, got {row}")
        idx = _parse_label(row[0].strip(), f"{path}:{n}")
        if idx in by_id:
            raise AnnotationError(f"{path}:{n}: id {idx} appears twice ({by_id[idx]!r} and {row[1]!r})")
        by_id[idx] = ",".join(row[1:]).strip()  # tolerate unquoted commas in names
    if sorted(by_id) != list(range(len(by_id))):
        missing = sorted(set(range(max(by_id) + 1)) - set(by_id)) if by_id else []
        raise AnnotationError(f"{path}: class ids must be 0..{len(by_id) - 1}; missing {missing[:10]}")
    return [by_id[i] for i in range(len(by_id))]


def write_class_table(path: str | os.PathLike, names: Sequence[str]) -> Path:
    """Writes `id,name` with a header (names containing commas are quoted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "name"])
        w.writerows([i, name] for i, name in enumerate(names))
    return path


def read_slowfast_csv(path: str | os.PathLike, sep: Optional[str] = None) -> list[VideoItem]:
    """Reads a PySlowFast `path<sep>label` CSV (no header).

    Args:
        sep: the separator; None detects it per line (a comma if the line has one, else whitespace).
    """
    path = Path(path)
    items = []
    for n, line in _lines(path):
        s = sep if sep is not None else ("," if "," in line else None)
        parts = line.rsplit(s, 1)
        if len(parts) != 2:
            raise AnnotationError(f"{path}:{n}: expected `path{sep or ','}label`, got {line!r}")
        items.append(VideoItem(parts[0].strip(), _parse_label(parts[1].strip(), f"{path}:{n}")))
    return items


def write_slowfast_csv(path: str | os.PathLike, items: Iterable[VideoItem], sep: str = ",") -> Path:
    """Writes a PySlowFast `path<sep>label` CSV without a header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{it.path}{sep}{it.label}\n" for it in items), encoding="utf-8")
    return path


def read_index2cls_json(path: str | os.PathLike) -> list[str]:
    """Reads PySlowFast's `{"0": "name", ...}` class map into names ordered by id."""
    path = Path(path)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        by_id = {int(k): str(v) for k, v in data.items()}
    except (AttributeError, ValueError):
        raise AnnotationError(f"{path}: expected a JSON object {{\"0\": \"name\", ...}}") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise AnnotationError(f"{path}: class ids must be 0..{len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


def write_index2cls_json(path: str | os.PathLike, names: Sequence[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(i): n for i, n in enumerate(names)}, indent=1), encoding="utf-8")
    return path


def remap_labels(items: Iterable[VideoItem], mapping: dict[int, int]) -> list[VideoItem]:
    """Keeps the items whose label is in `mapping` and relabels them (used to re-index base/novel subsets)."""
    return [VideoItem(it.path, mapping[it.label]) for it in items if it.label in mapping]
