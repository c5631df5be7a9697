"""Importer for the number-keyed description files that OST and the MSTA authors publish.

Those files are JSON objects `{"0": [N strings], "1": [...], ...}` whose keys are class ids in the order of an `id,name`
class table, with the spatial and the temporal descriptions in two separate files. msta keys everything by raw
label instead (so that a re-ordered or re-indexed class table cannot silently pair a class with another class's
descriptions); this module converts both ways.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Optional

from msta.text.prompts import PromptError, raw_to_name, read_prompts_file, write_prompts_file

__all__ = ["export_numbered_descriptions", "import_descriptions", "read_class_table", "read_numbered_descriptions"]

_logger = logging.getLogger(__name__)

# one published file joins several sentences into one string; they each start like this
_SENTENCE_START = re.compile(r"(?<=[.!?])\s+(?=A videos? (?:about|of) )")


def read_class_table(path: str | Path) -> list[str]:
    """Reads an `id,name` CSV (with header) and returns the names in id order.

    Raises:
        PromptError: missing file, wrong header, non-integer or non-contiguous ids, repeated names.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"class table not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["id", "name"]:
        raise PromptError(f"{path}: the first line must be the header 'id,name', got {rows[0] if rows else '(empty)'}")
    table: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise PromptError(f"{path}:{line}: expected 'id,name', got {row}")
        try:
            i = int(row[0])
        except ValueError:
            raise PromptError(f"{path}:{line}: id {row[0]!r} is not an integer") from None
        if i in table:
            raise PromptError(f"{path}:{line}: id {i} appears twice")
        table[i] = ",".join(row[1:]).strip()  # a name may itself hold a comma when unquoted
    if sorted(table) != list(range(len(table))):
        raise PromptError(f"{path}: ids must be 0..{len(table) - 1} without gaps")
    names = [table[i] for i in range(len(table))]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PromptError(f"{path}: repeated class names {dup}")
    return names


def read_numbered_descriptions(path: str | Path, num_classes: int, num_descriptions: Optional[int] = None
                               ) -> list[list[str]]:
    """Reads `{"0": [N strings], ...}` and returns the lists in id order.

    Args:
        path: the JSON file.
        num_classes: C from the class table; keys must be exactly "0".."C-1".
        num_descriptions: N, when known: every class must have N strings. A class with one string that joins N
            sentences (a quirk of one published file) is split at the sentence starts, with a warning.

    Raises:
        PromptError: naming the file and every bad key.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"description file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise PromptError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise PromptError(f"{path}: expected an object {{\"0\": [...], ...}}, got {type(data).__name__}")
    expected = {str(i) for i in range(num_classes)}
    if set(data) != expected:
        missing = sorted(expected - set(data), key=_num)
        extra = sorted(set(data) - expected, key=_num)
        raise PromptError(f"{path}: keys must be \"0\"..\"{num_classes - 1}\" to match the class table "
                          f"({num_classes} classes); missing {missing[:20]}, unexpected {extra[:20]}; is it the file "
                          "for this class table (full / base / novel)?")
    out, problems = [], []
    for i in range(num_classes):
        value = data[str(i)]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
            problems.append(f"  \"{i}\": expected a list of non-empty strings, got {value!r}")
            continue
        value = [" ".join(s.split()) for s in value]
        if num_descriptions and len(value) == 1 and num_descriptions > 1:
            parts = _SENTENCE_START.split(value[0])
            if len(parts) == num_descriptions:
                _logger.warning("%s: class %d has one string holding %d sentences; split it", path, i, len(parts))
                value = parts
        if num_descriptions and len(value) != num_descriptions:
            problems.append(f"  \"{i}\": {len(value)} strings, expected {num_descriptions}")
        out.append(value)
    if problems:
        raise PromptError(f"{path}: {len(problems)} bad entries:\n" + "\n".join(problems))
    return out


def _num(key: str) -> Any:
    return (0, int(key)) if key.isdigit() else (1, key)


def import_descriptions(class_table: str | Path, spatial_json: str | Path, temporal_json: str | Path, *,
                        dataset: str, out: Optional[str | Path] = None, names_from: Optional[str | Path] = None,
                        num_descriptions: Optional[int] = None, source: Optional[str] = None
                        ) -> dict[str, dict[str, Any]]:
    """Converts a published spatial/temporal file pair into msta's prompts format.

    Args:
        class_table: the `id,name` CSV that gives the files' order; its names are the raw labels.
        spatial_json: the `s` file. temporal_json: the `t` file.
        dataset: the dataset key of the output (`prompts/<dataset>.yaml`).
        out: where to write the prompts file; None only returns the classes.
        names_from: an existing prompts file whose readable names are kept (descriptions are replaced); classes it
            lacks get their raw label with underscores replaced.
        num_descriptions: N, checked when given.
        source: the `source:` line; defaults to the two file names.

    Returns:
        raw_label -> {"name", "spatial", "temporal"} in class-table order.
    """
    labels = read_class_table(class_table)
    spatial = read_numbered_descriptions(spatial_json, len(labels), num_descriptions)
    temporal = read_numbered_descriptions(temporal_json, len(labels), num_descriptions)
    known: Mapping[str, Mapping[str, Any]] = read_prompts_file(names_from)[1] if names_from else {}
    classes = {}
    for label, s, t in zip(labels, spatial, temporal):
        name = (known.get(label) or {}).get("name") or raw_to_name(label)
        classes[label] = {"name": name, "spatial": s, "temporal": t}
    if out is not None:
        src = source or f"imported from {Path(spatial_json).name} and {Path(temporal_json).name}"
        write_prompts_file(out, dataset, classes, source=src)
        _logger.info("wrote %d classes to %s", len(classes), out)
    return classes


def export_numbered_descriptions(classes: Mapping[str, Mapping[str, Any]], class_table: str | Path
                                 ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The inverse of `import_descriptions`: (spatial, temporal) number-keyed dicts in the class table's order.

    Raises:
        PromptError: a class of the table has no entry in `classes`.
    """
    labels = read_class_table(class_table)
    missing = [lb for lb in labels if lb not in classes]
    if missing:
        raise PromptError(f"export: classes of {class_table} without descriptions: {missing}")
    return ({str(i): list(classes[lb]["spatial"]) for i, lb in enumerate(labels)},
            {str(i): list(classes[lb]["temporal"]) for i, lb in enumerate(labels)})
