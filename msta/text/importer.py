"""Importer for the number-keyed description files that OST and the MSTA authors publish.

Those files are JSON objects `{"0": [N strings], "1": [...], ...}` whose keys are class ids in the order of the
class table they were written for, with the spatial and the temporal descriptions in two separate files. For the
MSTA authors' and OST's files that is the order of ViFi-CLIP's label CSVs, which for HMDB51 is *not* the sorted
table msta writes (`msta.text.orders`). So the importer takes the order the files were written for (`order`: a
built-in order such as "vifi-hmdb51" or that label CSV), maps key i to the i-th raw label of that order, and checks
the result: a class whose descriptions name another class of the table and not its own is a likely swap, and the
import stops (naming both classes) unless forced. msta keys everything by raw label instead (so that a re-ordered
or re-indexed class table cannot silently pair a class with another class's descriptions); this module converts
both ways.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from msta.data.annotations import read_class_table
from msta.text.orders import class_order
from msta.text.prompts import PromptError, raw_to_name, read_prompts_file, write_prompts_file

__all__ = ["export_numbered_descriptions", "find_swaps", "import_descriptions", "read_class_table",
           "read_numbered_descriptions"]

_logger = logging.getLogger(__name__)

# Published files sometimes join several sentences into one string (entry "174" of the authors' K400 spatial file
# holds 8 lowercase sentences). Tried in turn: sentence starts after an end mark, sentence starts anywhere, ends.
_SPLITTERS = (re.compile(r"(?<=[.!?])\s+(?=a videos? (?:about|of)\b)", re.IGNORECASE),
              re.compile(r"\s+(?=a videos? (?:about|of)\b)", re.IGNORECASE),
              re.compile(r"(?<=[.!?])\s+(?=\S)"))


def _split_joined(text: str, n: int) -> Optional[list[str]]:
    """`text` cut into exactly `n` sentences, or None when no splitter gives `n`."""
    for pattern in _SPLITTERS:
        parts = [p.strip() for p in pattern.split(text) if p.strip()]
        if len(parts) == n:
            return parts
    return None


def _sentences(text: str) -> int:
    return max(len([p for p in splitter.split(text) if p.strip()]) for splitter in _SPLITTERS)


def read_numbered_descriptions(path: str | Path, num_classes: int, num_descriptions: Optional[int] = None
                               ) -> list[list[str]]:
    """Reads `{"0": [N strings], ...}` and returns the lists in key order.

    Args:
        path: the JSON file.
        num_classes: C of the class order; keys must be exactly "0".."C-1".
        num_descriptions: N, when known; else the most common count in the file. Every class must have N strings.
            A class with one string that joins N sentences (entry "174" of the authors' K400 spatial file: 8
            sentences in one string) is split into them, with a warning naming the entry and the file.

    Raises:
        PromptError: naming the file and every bad entry (an unsplittable joined entry with its sentence count).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
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
        raise PromptError(f"{path}: keys must be \"0\"..\"{num_classes - 1}\" to match the class order "
                          f"({num_classes} classes); missing {missing[:20]}, unexpected {extra[:20]}; is it the file "
                          "for this class table (full / base / novel)?")
    out, problems = [], []
    for i in range(num_classes):
        value = data[str(i)]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
            problems.append(f"  \"{i}\": expected a list of non-empty strings, got {value!r}")
            value = []
        out.append([" ".join(s.split()) for s in value])
    n = num_descriptions
    if n is None and any(out):  # the file's own N: the most common count (a joined entry is one string)
        n = Counter(len(v) for v in out if v).most_common(1)[0][0]
    for i, value in enumerate(out):
        if not value:
            continue
        if n and n > 1 and len(value) == 1:
            parts = _split_joined(value[0], n)
            if parts is not None:
                _logger.warning("%s: entry \"%d\" holds its %d descriptions in one string; split into sentences",
                                path, i, n)
                out[i] = value = parts
            else:
                problems.append(f"  \"{i}\": one string of {_sentences(value[0])} sentence(s), expected {n} "
                                "descriptions; split it by hand")
                continue
        if n and len(value) != n:
            problems.append(f"  \"{i}\": {len(value)} strings, expected {n}")
    if problems:
        raise PromptError(f"{path}: {len(problems)} bad entries:\n" + "\n".join(problems))
    return out


def _num(key: str) -> Any:
    return (0, int(key)) if key.isdigit() else (1, key)


# ----------------------------------------------------------------------------------------------------------------
# the swap check


def _stem(word: str) -> str:
    """A crude stem, the same for "kick", "kicks", "kicking" and "catch", "catches", "catching"."""
    for suffix in ("ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word


# dropped before matching, so that "drawing a sword" names draw_sword and "falling to the floor" fall_floor
_FILLER = frozenset("a an the to on onto of in into at with one his her their its someone's".split())


def _words(text: str) -> str:
    """Lower-case stemmed words without fillers, space separated and padded: `" x y "` finds whole-word phrases."""
    words = (w.replace("-", "") for w in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower()))  # push-ups: pushup
    return " " + " ".join(_stem(w) for w in words if w not in _FILLER) + " "


def _named(text: str, forms: Sequence[Sequence[str]]) -> set[int]:
    """The classes whose name (any of its forms) occurs in `text`; a match inside a longer one does not count."""
    matches = []
    for j, class_forms in enumerate(forms):
        for form in class_forms:
            start = text.find(form)
            while start >= 0:
                matches.append((start, start + len(form), j))
                start = text.find(form, start + 1)
    return {j for s, e, j in matches
            if not any(s2 <= s and e <= e2 and e2 - s2 > e - s for s2, e2, _ in matches)}


def find_swaps(labels: Sequence[str], texts: Sequence[Sequence[str]],
               names: Optional[Sequence[str]] = None) -> list[tuple[int, list[int]]]:
    """Classes whose texts name other classes of the table and never their own: likely swapped descriptions.

    Names are matched as whole words after a crude stemming ("kicking" matches "kick"); a match inside a longer
    class name does not count ("kick ball" names kick_ball, not kick).

    Args:
        labels: C raw labels. texts: C lists of the class's descriptions. names: C readable names (other forms).

    Returns:
        [(class index, [indices of the classes its texts name])], in class order.
    """
    forms = []
    for k, label in enumerate(labels):
        spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)  # UCF101's CamelCase: ApplyEyeMakeup
        variants = {_words(raw_to_name(spaced)).strip(), _words(names[k]).strip() if names else ""}
        forms.append([f" {v} " for v in variants if v])
    out = []
    for i, class_texts in enumerate(texts):
        named = _named(_words(" . ".join(class_texts)), forms)
        if named and i not in named:
            out.append((i, sorted(named)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# import and export


def import_descriptions(class_table: Optional[str | Path], spatial_json: str | Path, temporal_json: str | Path, *,
                        dataset: str, out: Optional[str | Path] = None, order: Optional[str | Path] = None,
                        names_from: Optional[str | Path] = None, num_descriptions: Optional[int] = None,
                        source: Optional[str] = None, force: bool = False) -> dict[str, dict[str, Any]]:
    """Converts a published spatial/temporal file pair into msta's prompts format.

    Args:
        class_table: the `id,name` CSV of the run (its names are the raw labels); the imported classes must be
            exactly its classes. None: the classes are those of `order`.
        spatial_json: the `s` file. temporal_json: the `t` file.
        dataset: the dataset key of the output (`prompts/<dataset>.yaml`).
        out: where to write the prompts file; None only returns the classes.
        order: the class order the files were written for: a built-in order ("vifi-hmdb51", or "vifi" with
            dataset hmdb51: the MSTA authors' and OST's HMDB51 files) or the path of the label CSV they were
            written for (ViFi-CLIP's `labels/*.csv` for the authors' other files). None: `class_table` is taken as
            the order (right only when the files were written for that very table).
        names_from: an existing prompts file whose readable names are kept (descriptions are replaced); classes it
            lacks get their raw label with underscores replaced.
        num_descriptions: N, checked when given (else the most common count of each file).
        source: the `source:` line; defaults to the two file names and the order.
        force: import even when the swap check finds classes whose descriptions name another class (logged).

    Returns:
        raw_label -> {"name", "spatial", "temporal"} in class-table order.

    Raises:
        PromptError: the order and the class table hold different classes, a bad file, or likely swaps (each named
            with its key and both classes) without `force`.
    """
    if order is None and class_table is None:
        raise PromptError("import_descriptions: give the class order the files were written for (order=...) or a "
                          "class table")
    if order is None:
        labels, where = read_class_table(class_table), f"the class table {class_table}"
    else:
        try:
            labels, where = class_order(str(order), dataset)
        except ValueError as e:
            raise PromptError(str(e)) from None
    table = read_class_table(class_table) if class_table is not None else labels
    if set(table) != set(labels) or len(table) != len(labels):
        only_order = [lb for lb in labels if lb not in set(table)]
        only_table = [lb for lb in table if lb not in set(labels)]
        raise PromptError(f"{where} and the class table {class_table} hold different classes: only in the order "
                          f"{only_order[:10]}, only in the table {only_table[:10]}; name the order the files were "
                          "written for")
    spatial = read_numbered_descriptions(spatial_json, len(labels), num_descriptions)
    temporal = read_numbered_descriptions(temporal_json, len(labels), num_descriptions)
    known: Mapping[str, Mapping[str, Any]] = read_prompts_file(names_from)[1] if names_from else {}
    names = [(known.get(lb) or {}).get("name") or raw_to_name(lb) for lb in labels]
    swaps = find_swaps(labels, [s + t for s, t in zip(spatial, temporal)], names)
    if swaps:
        lines = [f"  key \"{i}\" -> {labels[i]}: its descriptions name "
                 f"{', '.join(repr(raw_to_name(labels[j])) for j in named)} and never {raw_to_name(labels[i])!r}"
                 for i, named in swaps]
        msg = (f"{spatial_json}, {temporal_json} read in {where}: {len(swaps)} class(es) look swapped:\n"
               + "\n".join(lines) + "\nthe files were probably written for another class order (the MSTA authors' "
               "and OST's files follow ViFi-CLIP's label CSV: for HMDB51 use order 'vifi-hmdb51', "
               "`msta-import-descriptions --order vifi-hmdb51`); pass force=True (--force) to import anyway")
        if not force:
            raise PromptError(msg)
        _logger.warning("%s\n(forced: importing anyway)", msg)
    by_label = {lb: {"name": nm, "spatial": s, "temporal": t}
                for lb, nm, s, t in zip(labels, names, spatial, temporal)}
    classes = {lb: by_label[lb] for lb in table}
    if out is not None:
        src = source or (f"imported from {Path(spatial_json).name} and {Path(temporal_json).name} "
                         f"(keys in {where})")
        write_prompts_file(out, dataset, classes, source=src)
        _logger.info("wrote %d classes to %s (keys read in %s)", len(classes), out, where)
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
