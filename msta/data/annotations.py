"""Annotation formats: the peers' video lists and class tables, read and written.

- Video list (ViFi-CLIP / X-CLIP / OST / MoTE): one `relative/path.ext <label_id>` line per video, paths relative
  to the data root. The label is the last whitespace-separated field, so paths may contain spaces.
- Class table: CSV `id,name` with a header, ids 0..N-1 (base/novel tables are re-indexed from 0), names unique.
- PySlowFast layout (Open-VCLIP / FROSTER): `{train,val,test}.csv` of `path<sep>label` lines without a header,
  the separator being `DATA.PATH_LABEL_SEPARATOR` (comma or space), and `*-index2cls.json` = {"0": "name", ...}.

Every line of a published list is read. Real video names start with `#` (HMDB51's
`#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi`) or hold `(`, `)`, `&`, `'`, so a line is a comment only when it starts
with `#` *and* does not read as `path label`; comments and blank lines are counted and logged, never dropped
silently. Files may start with a UTF-8 byte order mark (Excel writes one).
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import UserError

__all__ = [
    "AnnotationError", "VideoItem", "read_video_list", "write_video_list", "read_class_table", "write_class_table",
    "read_slowfast_csv", "write_slowfast_csv", "read_index2cls_json", "write_index2cls_json", "remap_labels",
    "check_labels", "SkippedLines",
]

_logger = logging.getLogger(__name__)


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


class SkippedLines:
    """Counts the comment lines a reader skipped and logs them once, with their line numbers."""

    def __init__(self, path: Path, what: str):
        self.path, self.what, self.lines = path, what, []

    def add(self, n: int) -> None:
        self.lines.append(n)

    def log(self, kept: int) -> None:
        if self.lines:
            shown = ", ".join(map(str, self.lines[:10])) + (" ..." if len(self.lines) > 10 else "")
            _logger.warning("%s: %d %s read; %d comment line(s) skipped (lines %s: they start with '#' and do not "
                            "read as an entry)", self.path, kept, self.what, len(self.lines), shown)


def _lines(path: Path, what: str = "annotation file") -> Iterable[tuple[int, str]]:
    """(line number, stripped text) of every non-blank line; a leading byte order mark is dropped."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8-sig") as f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    yield n, line
        except UnicodeDecodeError as e:   # a binary file, or another encoding (save it as UTF-8)
            raise AnnotationError(f"{path}: not UTF-8 text after line {n} ({e.reason}); save the {what} as UTF-8")


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def read_video_list(path: str | os.PathLike) -> list[VideoItem]:
    """Reads `relative/path.ext <label_id>` lines, every one of them.

    A line that reads as `path label` is a video, whatever it starts with (HMDB51 names start with `#`); a line
    starting with `#` that does not is a comment, counted and logged. Blank lines are skipped.

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: a line that is neither (file:line and the text named).
    """
    path = Path(path)
    items, comments = [], SkippedLines(path, "videos")
    for n, line in _lines(path, "video list"):
        parts = line.rsplit(None, 1)
        if line.startswith("#") and not (len(parts) == 2 and _is_int(parts[1])):
            comments.add(n)
            continue
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
    comments.log(len(items))
    return items


def write_video_list(path: str | os.PathLike, items: Iterable[VideoItem]) -> Path:
    """Writes `relative/path.ext <label_id>` lines; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{it.path} {it.label}\n" for it in items), encoding="utf-8")
    return path


def read_class_table(path: str | os.PathLike) -> list[str]:
    """Reads an `id,name` CSV with a header into names ordered by id (the one class-table reader of msta).

    Every row is read (there is no comment syntax: a name may start with `#`); blank rows are skipped, a UTF-8
    byte order mark is dropped, and an unquoted comma inside a name is kept as part of the name.

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: naming the file and line: a wrong header, a non-integer or repeated id, ids that are not
            exactly 0..N-1, or a repeated name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class table not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(n, r) for n, r in enumerate(csv.reader(f), 1) if r and any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0][1][:2]] != ["id", "name"]:
        got = rows[0][1] if rows else "(an empty file)"
        raise AnnotationError(f"{path}:1: a class table starts with the header `id,name`, got {got}")
    by_id: dict[int, str] = {}
    line_of: dict[str, int] = {}
    for n, row in rows[1:]:
        if len(row) < 2:
            raise AnnotationError(f"{path}:{n}: expected `id,name`, got {row}")
        if not _is_int(row[0].strip()) or int(row[0]) < 0:
            raise AnnotationError(f"{path}:{n}: class id {row[0]!r} is not an integer >= 0; rows read `id,name`")
        idx, name = int(row[0]), ",".join(row[1:]).strip()  # tolerate unquoted commas in names
        if idx in by_id:
            raise AnnotationError(f"{path}:{n}: id {idx} appears twice ({by_id[idx]!r} and {name!r})")
        if name in line_of:
            raise AnnotationError(f"{path}:{n}: class name {name!r} appears twice (also on line {line_of[name]}); "
                                  "class names must be unique")
        by_id[idx], line_of[name] = name, n
    if sorted(by_id) != list(range(len(by_id))):
        missing = sorted(set(range(max(by_id) + 1)) - set(by_id)) if by_id else []
        raise AnnotationError(f"{path}: class ids must be 0..{len(by_id) - 1} without gaps; missing {missing[:10]}")
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
    items, comments = [], SkippedLines(path, "videos")
    for n, line in _lines(path, "PySlowFast list"):
        s = sep if sep is not None else ("," if "," in line else None)
        parts = line.rsplit(s, 1)
        if line.startswith("#") and not (len(parts) == 2 and _is_int(parts[1].strip())):
            comments.add(n)
            continue
        if len(parts) != 2:
            raise AnnotationError(f"{path}:{n}: expected `path{sep or ','}label`, got {line!r}")
        items.append(VideoItem(parts[0].strip(), _parse_label(parts[1].strip(), f"{path}:{n}")))
    comments.log(len(items))
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
    data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
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


def check_labels(items: Iterable, num_classes: int, list_path: str | os.PathLike, class_table: str = "") -> None:
    """Fails on the first item whose label is not a class id of the table (0..num_classes-1).

    Args:
        items: `VideoItem`s in file order (the line of the k-th item is found again in `list_path`).
        num_classes: C of the class table.
        list_path: the list the items were read from (named in the message).
        class_table: the table's path, named in the message.

    Raises:
        AnnotationError: naming the list file, the line, the value and the table.
    """
    items = list(items)
    bad = [k for k, it in enumerate(items) if not 0 <= it.label < num_classes]
    if not bad:
        return
    first = items[bad[0]]
    line = _line_of(Path(list_path), first.path)
    table = f"the class table {class_table}" if class_table else "the class table"
    raise AnnotationError(f"{list_path}:{line}: label {first.label} of {first.path!r} is not a class of {table} "
                          f"({num_classes} classes, ids 0..{num_classes - 1}); {len(bad)} line(s) of the list have "
                          "such labels; is it the list for this class table (full / base / novel split)?")


def _line_of(path: Path, video: str) -> str:
    """The line number of `video` in a list file (as text; '?' when the list cannot be read again)."""
    try:
        for n, line in _lines(path):
            if line.startswith(video) and (line[len(video):][:1].isspace() or line[len(video):][:1] == ","):
                return str(n)
    except (OSError, UnicodeDecodeError):
        pass
    return "?"
