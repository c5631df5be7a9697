"""MSR-VTT caption lists (train-9k, train-7k, the 1k-A test) from the layouts users have (reference/viclip-and-retrieval
§4.1-4.2).

Two annotation layouts are read, each found anywhere under `root` (file names matched case-insensitively):

- the annotation release: `MSRVTT_data.json` (top level `info`, `videos`, `sentences`; `sentences[i] = {sen_id,
  video_id, caption}`, about 20 per video), `MSRVTT_train.9k.csv` / `MSRVTT_train.7k.csv` (one column `video_id`)
  and `MSRVTT_JSFUSION_test.csv` (`key,vid_key,video_id,sentence`: the 1,000 test videos with one sentence each).
  A training split is every sentence of every listed video, in `MSRVTT_data.json` order.
- mmaction2's: `train_9k.json`, `train_7k.json`, `test_JSFUSION.json`, each `{"videoN.mp4": [caption, ...]}` (older
  versions write the keys without `.mp4`).

Per split the release files win when both layouts are present (the report names the source of each split). Videos
are found anywhere under `root` by file stem (`videos/all/videoN.mp4`, mmaction2's flat `videos/videoN.mp4`), and
the lists hold paths relative to `root`, which becomes `data.root`. Whitespace inside a caption (a TAB or newline
would break a caption list line) is collapsed to single spaces; a caption that is then empty is skipped and counted.
Videos with no file are reported and left out, as the other preparers do.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .annotations import AnnotationError
from .captions import CaptionItem, write_caption_list
from .preparers import VIDEO_EXTENSIONS, _find_files, _VideoIndex

__all__ = ["SPLITS", "TEST_1K_VIDEOS", "PreparedCaptions", "clean_caption", "prepare_msrvtt",
           "write_prepared_captions"]

_logger = logging.getLogger(__name__)

TEST_1K_VIDEOS = 1000
# split -> (release csv, mmaction2 json); the test csv carries its own sentences, the training csvs only video ids
SPLITS = {
    "train_9k": ("MSRVTT_train.9k.csv", "train_9k.json"),
    "train_7k": ("MSRVTT_train.7k.csv", "train_7k.json"),
    "test_1k": ("MSRVTT_JSFUSION_test.csv", "test_JSFUSION.json"),
}
_DATA_JSON = "MSRVTT_data.json"


@dataclass
class PreparedCaptions:
    """Caption lists per split and what was not resolved; `write_prepared_captions` turns it into files.

    Attributes:
        name: "msrvtt".
        splits: split -> (video, caption) pairs, paths relative to the root.
        sources: split -> the annotation file it was read from.
        missing: annotated video ids with no file under the root (left out of the lists).
        duplicates: video file name found at several paths -> those paths (the first in sorted order is used).
        empty_captions: "<split>: <video id>" of each caption that was empty after whitespace cleaning (skipped).
        warnings: anything else a user should know (a test split that is not 1,000 videos, train/test overlap).
    """
    name: str
    splits: dict[str, list[CaptionItem]]
    sources: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    empty_captions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len({it.path for it in v})} videos / {len(v)} captions"
                          for k, v in self.splits.items())
        return (f"{self.name}: {sizes}; {len(self.missing)} missing videos, {len(self.duplicates)} duplicated file "
                f"names, {len(self.empty_captions)} empty captions skipped")

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """`write_prepared_captions(self, out_dir)`."""
        return write_prepared_captions(self, out_dir)


def clean_caption(text) -> str:
    """A caption as one line: runs of whitespace (TABs, newlines) become one space, ends stripped."""
    return " ".join(str(text).split())


def _find(root: Path, name: str) -> Optional[Path]:
    found = _find_files(root, re.escape(name))
    if len(found) > 1:
        _logger.warning("%d files named %s under %s; using %s", len(found), name, root, found[0])
    return found[0] if found else None


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        have = [c.strip() for c in (reader.fieldnames or [])]
        lacking = [c for c in columns if c not in have]
        if lacking:
            raise AnnotationError(f"{path}:1: expected the column(s) {', '.join(columns)} in the header, got "
                                  f"{','.join(have) or 'an empty file'}; is it the MSR-VTT release file?")
        reader.fieldnames = have
        return list(reader)


def _read_sentences(path: Path) -> dict[str, list[str]]:
    """video id -> its captions in file order, from `MSRVTT_data.json`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise AnnotationError(f"{path}: expected a top-level object with a `sentences` list of {{sen_id, video_id, "
                              "caption}} (the MSR-VTT annotation release)")
    out: dict[str, list[str]] = {}
    for i, s in enumerate(sentences):
        if not isinstance(s, dict) or "video_id" not in s or "caption" not in s:
            raise AnnotationError(f"{path}: sentences[{i}] must have video_id and caption, got {s!r:.120}")
        out.setdefault(str(s["video_id"]).strip(), []).append(s["caption"])
    return out


def _read_mmaction_json(path: Path) -> list[tuple[str, list[str]]]:
    """(video id, captions) in file order from a `{"videoN.mp4": [captions]}` file (keys with or without .mp4)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object {{\"videoN.mp4\": [caption, ...]}} (mmaction2's MSR-VTT "
                              f"files), got a {type(data).__name__}")
    out = []
    for key, caps in data.items():
        stem, ext = os.path.splitext(key)
        vid = stem if ext.lower() in VIDEO_EXTENSIONS else key
        caps = [caps] if isinstance(caps, str) else caps
        if not isinstance(caps, list):
            raise AnnotationError(f"{path}: the captions of {key!r} must be a list of strings, got {caps!r:.80}")
        out.append((vid.strip(), caps))
    return out


def _entries(root: Path, split: str, sentences: Optional[dict[str, list[str]]],
             data_json: Optional[Path]) -> Optional[tuple[list[tuple[str, list[str]]], str]]:
    """(video id, raw captions) of one split and its source file, or None when neither layout has it."""
    release, mma = SPLITS[split]
    csv_path = _find(root, release)
    if csv_path is not None and split == "test_1k":
        rows = _read_csv(csv_path, ("video_id", "sentence"))
        return [(r["video_id"].strip(), [r["sentence"]]) for r in rows], csv_path.relative_to(root).as_posix()
    if csv_path is not None:
        if sentences is None:
            raise AnnotationError(f"{csv_path} lists video ids only; their captions are in {_DATA_JSON}, which is "
                                  f"not under {root}. Unpack the whole annotation release there")
        rows = _read_csv(csv_path, ("video_id",))
        source = f"{csv_path.relative_to(root).as_posix()} + {data_json.relative_to(root).as_posix()}"
        return [(r["video_id"].strip(), sentences.get(r["video_id"].strip(), [])) for r in rows], source
    json_path = _find(root, mma)
    if json_path is not None:
        return _read_mmaction_json(json_path), json_path.relative_to(root).as_posix()
    return None


def prepare_msrvtt(root: str | os.PathLike) -> PreparedCaptions:
    """Reads the MSR-VTT annotations and videos under `root` (see the module docstring for the layouts).

    Raises:
        AnnotationError (a UserError): `root` is not a folder, neither layout's annotation files are under it, or a
            malformed annotation file (the message names the file and the expected format).
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"--root {root} is not a folder; point it at the folder MSR-VTT unpacked to")
    data_json = _find(root, _DATA_JSON)
    sentences = _read_sentences(data_json) if data_json is not None else None
    index = _VideoIndex(root)
    prepared = PreparedCaptions("msrvtt", {})
    missing: set[str] = set()
    for split in SPLITS:
        found = _entries(root, split, sentences, data_json)
        if found is None:
            continue
        entries, prepared.sources[split] = found
        items, seen = [], set()
        for vid, captions in entries:
            if vid in seen and split != "test_1k":
                continue   # a training video listed twice: its sentences once
            seen.add(vid)
            if not captions:
                prepared.warnings.append(f"{split}: {vid} has no caption in {prepared.sources[split]}")
                continue
            rel = index.find(vid, stem=True)
            if rel is None:
                missing.add(vid)
                continue
            for caption in captions:
                text = clean_caption(caption)
                if text:
                    items.append(CaptionItem(rel, text))
                else:
                    prepared.empty_captions.append(f"{split}: {vid}")
        prepared.splits[split] = items
    if not prepared.splits:
        raise AnnotationError(
            f"no MSR-VTT annotations under {root}: expected {_DATA_JSON} with "
            f"{', '.join(s[0] for s in SPLITS.values())} (the annotation release) or mmaction2's "
            f"{', '.join(s[1] for s in SPLITS.values())}")
    prepared.missing = sorted(missing, key=_video_number)
    prepared.duplicates = index.used_duplicates
    _check_splits(prepared)
    return prepared


def _video_number(vid: str) -> tuple[int, str]:
    digits = "".join(c for c in vid if c.isdigit())
    return (int(digits) if digits else -1, vid)


def _check_splits(prepared: PreparedCaptions) -> None:
    test = prepared.splits.get("test_1k")
    if test is not None:
        videos = {it.path for it in test}
        if len(videos) != TEST_1K_VIDEOS or len(test) != len(videos):
            prepared.warnings.append(f"test_1k has {len(videos)} videos and {len(test)} captions; the 1k-A protocol "
                                     f"is {TEST_1K_VIDEOS} videos with one caption each (missing videos, or another "
                                     "test file)")
        for split in ("train_9k", "train_7k"):
            overlap = videos & {it.path for it in prepared.splits.get(split, [])}
            if overlap:
                prepared.warnings.append(f"{len(overlap)} test_1k videos are also in {split}, e.g. "
                                         f"{sorted(overlap)[0]}")
    for w in prepared.warnings:
        _logger.warning("msrvtt: %s", w)


def write_prepared_captions(prepared: PreparedCaptions, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes one `<split>.txt` caption list per split (`path<TAB>caption`) and report.txt.

    report.txt: the summary, each split's source, then `missing\\t<video id>`, `duplicate\\t<name>\\t<paths>`,
    `empty\\t<split>: <video id>` and `warning\\t<text>` lines.
    """
    out = Path(out_dir)
    written = {split: write_caption_list(out / f"{split}.txt", items) for split, items in prepared.splits.items()}
    lines = [prepared.summary()]
    lines += [f"source\t{split}\t{src}" for split, src in prepared.sources.items()]
    lines += [f"missing\t{m}" for m in prepared.missing]
    lines += [f"duplicate\t{k}\t" + "\t".join(v) for k, v in sorted(prepared.duplicates.items())]
    lines += [f"empty\t{e}" for e in prepared.empty_captions]
    lines += [f"warning\t{w}" for w in prepared.warnings]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    written["report"] = out / "report.txt"
    return written
