"""Lists and class tables from the layouts the official dataset archives unpack to.

Each preparer reads the official annotations under `root`, finds each video anywhere under `root` (class folders
or flat; matched by file name, case-insensitively, which absorbs UCF101's HandStandPushups/HandstandPushups
folder quirk), and returns the class table, one item list per official split (paths relative to `root`, so
`data.root` is that folder) and what it could not resolve: annotated videos with no file, and files whose name
occurs more than once (the first path in sorted order is used). Missing videos are left out of the lists.

Layouts:
- hmdb51: `<class>/<video>.avi` and the split files `<class>_test_split{1,2,3}.txt` (`<video>.avi <0|1|2>`,
  0 unused, 1 train, 2 test). Classes in alphabetical order (as the peers' tables). Splits train{n} / test{n}.
- ucf101: `classInd.txt` (`1 ApplyEyeMakeup`, 1-based), `trainlist0{n}.txt` (`Class/v_x.avi <1-based id>`),
  `testlist0{n}.txt` (`Class/v_x.avi`). Splits train{n} / test{n}.
- k400 / k600: annotation CSVs with columns label, youtube_id, time_start, time_end, split (train.csv,
  validate.csv or val.csv, test.csv), files `<youtube_id>_<start:06d>_<end:06d>.<ext>`. Classes sorted by name.
  Splits train / val / test (a CSV without labels is skipped).
- ssv2: `labels.json` {name: "id"}, `train.json` / `validation.json` lists of {id, template, label}; the class is
  the template without brackets; files `<id>.webm` (or converted `<id>.mp4`). Splits train / val.
- msrvtt: caption lists, not label lists (`msta.data.msrvtt`): train_9k / train_7k / test_1k; its result writes
  itself (`.write(out_dir)`).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from .annotations import VideoItem, write_class_table, write_video_list

__all__ = [
    "VIDEO_EXTENSIONS", "PreparedDataset", "index_videos", "prepare_hmdb51", "prepare_ucf101", "prepare_kinetics",
    "prepare_ssv2", "PREPARERS", "prepare_dataset", "write_prepared", "write_protocol_splits",
    "K600_ZS_POOLS", "write_k600_zero_shot",
]

_logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


@dataclass
class PreparedDataset:
    """Class table, per-split items and the problems found; `write_prepared` turns it into files."""
    name: str
    classes: list[str]
    splits: dict[str, list[VideoItem]]
    missing: list[str] = field(default_factory=list)      # annotated videos with no file under root
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # file name -> every path it was found at

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return (f"{self.name}: {len(self.classes)} classes; {sizes}; {len(self.missing)} missing videos, "
                f"{len(self.duplicates)} duplicated file names")


class _VideoIndex:
    """Every video file under a root, by lower-case file name and by lower-case stem."""

    def __init__(self, root: Path):
        self.root = root
        self.by_name: dict[str, list[str]] = defaultdict(list)
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        for dirpath, _, files in os.walk(root):
            for f in files:
                if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS:
                    rel = Path(dirpath, f).relative_to(root).as_posix()
                    self.by_name[f.lower()].append(rel)
                    self.by_stem[os.path.splitext(f)[0].lower()].append(rel)
        for d in (self.by_name, self.by_stem):
            for v in d.values():
                v.sort()
        self.used_duplicates: dict[str, list[str]] = {}

    def find(self, key: str, *, stem: bool = False) -> Optional[str]:
        paths = (self.by_stem if stem else self.by_name).get(key.lower(), [])
        if len(paths) > 1:
            self.used_duplicates[key] = paths
        return paths[0] if paths else None


def index_videos(root: str | os.PathLike) -> dict[str, list[str]]:
    """Lower-case file name -> relative paths of the video files under `root` (sorted)."""
    return dict(_VideoIndex(Path(root)).by_name)


def _resolve(index: _VideoIndex, entries: Iterable[tuple[str, int]], missing: list[str], *,
             stem: bool = False) -> list[VideoItem]:
    items, seen = [], set()
    for key, label in entries:
        if key in seen:  # listed twice in the annotations
            index.used_duplicates.setdefault(key, [key, key])
            continue
        seen.add(key)
        rel = index.find(key, stem=stem)
        if rel is None:
            missing.append(key)
        else:
            items.append(VideoItem(rel, label))
    return items


def _find_files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and re.fullmatch(pattern, p.name, flags=re.IGNORECASE))


def _require(files: list, what: str, root: Path) -> None:
    if not files:
        raise FileNotFoundError(f"no {what} found under {root}; point --root at the folder the official archive "
                                "unpacked to (videos and annotation files may sit in sub-folders)")


def prepare_hmdb51(root: str | os.PathLike) -> PreparedDataset:
    """HMDB51 from class folders and `<class>_test_split{1,2,3}.txt` files."""
    root = Path(root)
    split_files = _find_files(root, r"(.+)_test_split([123])\.txt")
    _require(split_files, "`<class>_test_split{1,2,3}.txt` files", root)
    per_split: dict[int, list[tuple[str, str, int]]] = defaultdict(list)  # split -> (class, video, flag)
    for f in split_files:
        m = re.fullmatch(r"(.+)_test_split([123])\.txt", f.name, flags=re.IGNORECASE)
        for n, line in enumerate(f.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{f}:{n}: expected `<video>.avi <0|1|2>`, got {line!r}")
            per_split[int(m.group(2))].append((m.group(1), parts[0], int(parts[1])))
    classes = sorted({c for rows in per_split.values() for c, _, _ in rows})
    cid = {c: i for i, c in enumerate(classes)}
    index, missing, splits = _VideoIndex(root), [], {}
    for s in sorted(per_split):
        rows = per_split[s]
        for name, flag in (("train", 1), ("test", 2)):
            splits[f"{name}{s}"] = _resolve(index, [(v, cid[c]) for c, v, fl in rows if fl == flag], missing)
    return PreparedDataset("hmdb51", classes, splits, sorted(set(missing)), index.used_duplicates)


def prepare_ucf101(root: str | os.PathLike) -> PreparedDataset:
    """UCF101 from classInd.txt, trainlist0N.txt and testlist0N.txt."""
    root = Path(root)
    class_files = _find_files(root, r"classInd\.txt")
    _require(class_files, "classInd.txt", root)
    by_id = {}
    for n, line in enumerate(class_files[0].read_text().splitlines(), 1):
        if line.strip():
            i, name = line.split()
            by_id[int(i) - 1] = name  # 1-based in the file
    classes = [by_id[i] for i in range(len(by_id))]
    cid = {c.lower(): i for i, c in enumerate(classes)}
    index, missing, splits = _VideoIndex(root), [], {}
    for kind in ("train", "test"):
        for f in _find_files(root, kind + r"list0([123])\.txt"):
            s = re.search(r"0([123])\.txt$", f.name).group(1)
            entries = []
            for n, line in enumerate(f.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                folder = parts[0].replace("\\", "/").split("/")[0].lower()
                if len(parts) > 1:
                    label = int(parts[1]) - 1
                elif folder in cid:
                    label = cid[folder]
                else:
                    raise ValueError(f"{f}:{n}: class folder {folder!r} of {parts[0]!r} is not in classInd.txt")
                entries.append((parts[0].replace("\\", "/").split("/")[-1], label))
            splits[f"{kind}{s}"] = _resolve(index, entries, missing)
    splits = dict(sorted(splits.items(), key=lambda kv: (kv[0][-1], kv[0])))
    return PreparedDataset("ucf101", classes, splits, sorted(set(missing)), index.used_duplicates)


def prepare_kinetics(root: str | os.PathLike, name: str = "k400") -> PreparedDataset:
    """Kinetics-400/600 from the annotation CSVs (label, youtube_id, time_start, time_end, split)."""
    root = Path(root)
    csvs = {}
    for split, pattern in (("train", r"train\.csv"), ("val", r"(validate|val)\.csv"), ("test", r"test\.csv")):
        found = _find_files(root, pattern)
        if found:
            csvs[split] = found[0]
    _require(list(csvs), "Kinetics annotation CSVs (train.csv, validate.csv, test.csv)", root)
    rows: dict[str, list[tuple[str, str]]] = {}
    for split, f in csvs.items():
        with open(f, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = set(reader.fieldnames or [])
            if not {"youtube_id", "time_start", "time_end"} <= cols:
                raise ValueError(f"{f}:1: expected columns label,youtube_id,time_start,time_end,split; got "
                                 f"{sorted(cols)}")
            if "label" not in cols:
                _logger.warning("%s has no label column; split %s skipped", f, split)
                continue
            rows[split] = [(r["label"].strip(), f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_"
                            f"{int(float(r['time_end'])):06d}") for r in reader]
    classes = sorted({c for c, _ in rows.get("train", [])} or {c for v in rows.values() for c, _ in v})
    cid = {c: i for i, c in enumerate(classes)}
    index, missing, splits = _VideoIndex(root), [], {}
    for split, entries in rows.items():
        unknown = sorted({c for c, _ in entries} - set(cid))
        if unknown:
            raise ValueError(f"{csvs[split]}: labels not in the train classes: {unknown[:5]}")
        splits[split] = _resolve(index, [(stem, cid[c]) for c, stem in entries], missing, stem=True)
    return PreparedDataset(name, classes, splits, sorted(set(missing)), index.used_duplicates)


def prepare_ssv2(root: str | os.PathLike) -> PreparedDataset:
    """Something-Something v2 from labels.json, train.json and validation.json."""
    root = Path(root)
    label_files = _find_files(root, r"labels\.json")
    _require(label_files, "labels.json", root)
    table = json.loads(label_files[0].read_text())
    by_id = {int(v): k for k, v in table.items()}
    classes = [by_id[i] for i in range(len(by_id))]
    cid = {c: i for i, c in enumerate(classes)}
    index, missing, splits = _VideoIndex(root), [], {}
    for split, fname in (("train", r"train\.json"), ("val", r"validation\.json")):
        found = _find_files(root, fname)
        if not found:
            continue
        entries = []
        for k, rec in enumerate(json.loads(found[0].read_text())):
            name = rec["template"].replace("[", "").replace("]", "")
            if name not in cid:
                raise ValueError(f"{found[0]}: record {k} (id {rec.get('id')}): template {name!r} not in labels.json")
            entries.append((str(rec["id"]), cid[name]))
        splits[split] = _resolve(index, entries, missing, stem=True)
    return PreparedDataset("ssv2", classes, splits, sorted(set(missing)), index.used_duplicates)


PREPARERS: dict[str, Callable[[str | os.PathLike], PreparedDataset]] = {
    "hmdb51": prepare_hmdb51,
    "ucf101": prepare_ucf101,
    "k400": lambda root: prepare_kinetics(root, "k400"),
    "k600": lambda root: prepare_kinetics(root, "k600"),
    "ssv2": prepare_ssv2,
    "msrvtt": lambda root: _prepare_msrvtt(root),
}


def _prepare_msrvtt(root: str | os.PathLike):
    from .msrvtt import prepare_msrvtt   # here, not at the top: msta.data.msrvtt builds on this module

    return prepare_msrvtt(root)


def prepare_dataset(name: str, root: str | os.PathLike) -> PreparedDataset:
    """Runs the preparer registered as `name` (one of PREPARERS)."""
    if name not in PREPARERS:
        raise KeyError(f"unknown dataset {name!r}; choose one of {sorted(PREPARERS)}")
    return PREPARERS[name](root)


def write_prepared(prepared: PreparedDataset, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes classes.csv, one `<split>.txt` list per split and report.txt (missing and duplicated videos)."""
    out = Path(out_dir)
    written = {"classes": write_class_table(out / "classes.csv", prepared.classes)}
    for split, items in prepared.splits.items():
        written[split] = write_video_list(out / f"{split}.txt", items)
    lines = [prepared.summary()]
    lines += [f"missing\t{m}" for m in prepared.missing]
    lines += [f"duplicate\t{k}\t" + "\t".join(v) for k, v in sorted(prepared.duplicates.items())]
    (out / "report.txt").write_text("\n".join(lines) + "\n")
    written["report"] = out / "report.txt"
    return written


def write_protocol_splits(prepared: PreparedDataset, out_dir: str | os.PathLike, *, train_split: str,
                          test_split: str, shots: tuple[int, ...] = (2, 4, 8, 16), fewshot_seed: int = 1,
                          b2n_seeds: tuple[int, ...] = (1, 2, 3), b2n_shots: int = 16) -> dict[str, Path]:
    """Writes the few-shot and base-to-novel files in the peers' names and formats.

    `train1_few_shot_{K}.txt` (K per class from `train_split`), and under `b2n/`: `base_labels.csv`,
    `novel_labels.csv`, `fs_base_s{seed}_train.txt`, `base_val.txt`, `novel_val.txt` (local ids).
    """
    from .splits import base_to_novel, few_shot

    out = Path(out_dir)
    train, test = prepared.splits[train_split], prepared.splits[test_split]
    written = {}
    for k in shots:
        written[f"fewshot{k}"] = write_video_list(out / f"train1_few_shot_{k}.txt",
                                                  few_shot(train, k, fewshot_seed, strict=False))
    for seed in b2n_seeds:
        b2n = base_to_novel(train, test, prepared.classes, seed=seed, shots=b2n_shots)
        written[f"b2n_train_s{seed}"] = write_video_list(out / "b2n" / f"fs_base_s{seed}_train.txt", b2n.train)
    written["base_labels"] = write_class_table(out / "b2n" / "base_labels.csv", b2n.base_classes)
    written["novel_labels"] = write_class_table(out / "b2n" / "novel_labels.csv", b2n.novel_classes)
    written["base_val"] = write_video_list(out / "b2n" / "base_val.txt", b2n.base_test)
    written["novel_val"] = write_video_list(out / "b2n" / "novel_val.txt", b2n.novel_test)
    return written


# which K600 videos the zero-shot lists draw from (peers §3.1: the peers' "K600 ZS" numbers use different pools)
K600_ZS_POOLS = {
    "val": ("val",),                    # Open-VCLIP / FROSTER: K600 val videos only, about 45 per class
    "all": ("train", "val", "test"),    # ViFi-CLIP / OST / TC-CLIP: every K600 video of the class, about 88 per class
}


def write_k600_zero_shot(prepared: PreparedDataset, out_dir: str | os.PathLike, k400_classes: Sequence[str], *,
                         pool: str = "val", draws: int = 3, size: int = 160, seed: int = 0,
                         aliases: Optional[dict[str, str]] = None) -> dict[str, Path]:
    """Writes the K600 zero-shot files (ER-ZSAR protocol): the classes not in K400 and `draws` seeded draws of them.

    Files under `out_dir`: `zs_novel_classes.csv` (the novel classes in K600 order), and per draw n = 1..draws
    `zs_draw{n}_classes.csv` (its `size` classes, re-indexed 0..size-1) and `zs_draw{n}.txt` (the pool's videos of
    those classes, labels into that table), plus `zs_report.txt` naming the pool, seed and renames used.

    Args:
        prepared: the K600 dataset (`prepare_kinetics(root, "k600")`).
        k400_classes: the K400 class table (raw labels, e.g. data/k400/lists/classes.csv).
        pool: a key of K600_ZS_POOLS ("val": K600 val videos; "all": train + val + test).
        draws, size, seed: `k600_zero_shot_draws` (3 x 160 from seed 0 by default).
        aliases: K600 -> K400 renames (default `K600_RENAMED_FROM_K400`).

    Raises:
        ValueError: unknown pool, a pool split the layout lacks, or fewer novel classes than `size`.
    """
    from .splits import K600_RENAMED_FROM_K400, k600_novel_classes, k600_zero_shot_draws, subset_classes

    if pool not in K600_ZS_POOLS:
        raise ValueError(f"unknown K600 zero-shot pool {pool!r}; choose one of {sorted(K600_ZS_POOLS)}")
    lacking = [s for s in K600_ZS_POOLS[pool] if s not in prepared.splits]
    if len(lacking) == len(K600_ZS_POOLS[pool]):
        raise ValueError(f"K600 zero-shot pool {pool!r} needs the {', '.join(lacking)} split(s), which {prepared.name} "
                         f"lacks (found {sorted(prepared.splits)}); is the annotation CSV under --root?")
    if lacking:
        _logger.warning("K600 zero-shot pool %r: no labelled %s split; the pool is the other splits (zs_report.txt)",
                        pool, ", ".join(lacking))
    aliases = K600_RENAMED_FROM_K400 if aliases is None else aliases
    novel = k600_novel_classes(prepared.classes, k400_classes, aliases=aliases)
    if len(novel) != 220:
        _logger.warning("%d K600 classes are not in K400 (the protocol has 220); check the K400 class table and the "
                        "renames in msta.data.splits.K600_RENAMED_FROM_K400", len(novel))
    items = [it for s in K600_ZS_POOLS[pool] for it in prepared.splits.get(s, [])]
    out = Path(out_dir)
    written = {"zs_novel_classes": write_class_table(out / "zs_novel_classes.csv", novel)}
    per_class: dict[str, int] = defaultdict(int)
    for it in items:
        per_class[prepared.classes[it.label]] += 1
    sizes = []
    for n, keep in enumerate(k600_zero_shot_draws(novel, draws=draws, size=size, seed=seed), 1):
        sub, table = subset_classes(items, prepared.classes, keep)
        written[f"zs_draw{n}_classes"] = write_class_table(out / f"zs_draw{n}_classes.csv", table)
        written[f"zs_draw{n}"] = write_video_list(out / f"zs_draw{n}.txt", sub)
        sizes.append(len(sub))
    empty = [c for c in novel if per_class[c] == 0]
    splits = " + ".join(s for s in K600_ZS_POOLS[pool] if s in prepared.splits)
    lines = [f"pool\t{pool}: all K600 {splits} videos of the drawn classes ({len(novel)} novel classes, "
             f"{sum(per_class[c] for c in novel)} videos)",
             f"draws\t{draws} x {size} classes, seed {seed}; videos per draw: {', '.join(map(str, sizes))}",
             f"renamed\t{len(aliases)} K600 -> K400 renames: " + "; ".join(f"{k} -> {v}" for k, v in aliases.items())]
    lines += [f"empty\t{c}" for c in empty]
    (out / "zs_report.txt").write_text("\n".join(lines) + "\n")
    written["zs_report"] = out / "zs_report.txt"
    _logger.info("K600 zero-shot: %d novel classes, %d draws of %d, pool %s (%s): %s videos", len(novel), draws,
                 size, pool, splits, "/".join(map(str, sizes)))
    return written
