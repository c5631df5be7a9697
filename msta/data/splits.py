"""Deterministic split builders for the standard protocols (DESIGN §5, peers §3).

Each builder is a pure function of its inputs and an integer seed (a local torch.Generator; input order does not
matter because items are sorted by path first), and returns items in the same `path label` form as the published
split files, so the toolkit can use either.
- few-shot: K videos per class from the train split (X-CLIP protocol; K in 2, 4, 8, 16).
- base-to-novel: classes ranked by number of training videos; base = the more frequent half (ceil(C / 2): HMDB
  26/25, UCF 51/50), 16 shots per base class per seed; base and novel tables re-indexed from 0 in rank order.
- K600 zero-shot: the K600 classes not in K400, `draws` seeded draws of `size` classes (ER-ZSAR: 3 x 160).
- hold-out: a seeded fraction of a training list kept aside for model selection.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .annotations import VideoItem, remap_labels

__all__ = [
    "few_shot", "rank_classes_by_frequency", "BaseNovelSplit", "base_to_novel", "normalize_class_name",
    "K600_RENAMED_FROM_K400", "k600_novel_classes", "k600_zero_shot_draws", "subset_classes", "hold_out",
]

_logger = logging.getLogger(__name__)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _by_class(items: Sequence[VideoItem]) -> dict[int, list[VideoItem]]:
    groups: dict[int, list[VideoItem]] = defaultdict(list)
    for it in sorted(set(items), key=lambda it: (it.path, it.label)):
        groups[it.label].append(it)
    return groups


def few_shot(items: Sequence[VideoItem], shots: int, seed: int, *, strict: bool = True) -> list[VideoItem]:
    """K videos per class, drawn without replacement with `seed`; sorted by (label, path).

    Args:
        items: the training list (e.g. train split 1).
        shots: K per class.
        seed: draw seed.
        strict: raise if a class has fewer than K videos (False: take all of them and log a warning).
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots} (config key data.shots)")
    g = _gen(seed)
    out = []
    for label, group in sorted(_by_class(items).items()):
        if len(group) < shots:
            msg = f"class {label} has {len(group)} videos, fewer than {shots} shots"
            if strict:
                raise ValueError(msg + "; lower data.shots or pass strict=False to take them all")
            _logger.warning("%s; taking all of them", msg)
        perm = torch.randperm(len(group), generator=g).tolist()[:shots]
        out.extend(sorted((group[i] for i in perm), key=lambda it: it.path))
    return out


def rank_classes_by_frequency(items: Sequence[VideoItem], num_classes: int) -> list[int]:
    """Class ids by descending video count (ties: smaller id first); classes without videos come last."""
    counts = Counter(it.label for it in set(items))
    return sorted(range(num_classes), key=lambda c: (-counts.get(c, 0), c))


@dataclass(frozen=True)
class BaseNovelSplit:
    """One base-to-novel seed. Tables and item labels are local (re-indexed from 0)."""
    base_classes: list[str]
    novel_classes: list[str]
    train: list[VideoItem]       # `shots` per base class, base-local labels
    base_test: list[VideoItem]   # base-local labels
    novel_test: list[VideoItem]  # novel-local labels
    base_ids: list[int]          # original ids, in table order
    novel_ids: list[int]


def base_to_novel(train: Sequence[VideoItem], test: Sequence[VideoItem], class_names: Sequence[str], *,
                  seed: int, shots: int = 16) -> BaseNovelSplit:
    """Builds one base-to-novel seed (ViFi-CLIP benchmark).

    Args:
        train: the full training list with original labels (frequencies are counted here).
        test: the evaluation list with original labels (split into base and novel parts).
        class_names: the original class table.
        seed: shot-draw seed (the benchmark uses 1, 2, 3); the class split does not depend on it.
        shots: videos per base class.
    """
    ranked = rank_classes_by_frequency(train, len(class_names))
    n_base = math.ceil(len(ranked) / 2)
    base_ids, novel_ids = ranked[:n_base], ranked[n_base:]
    base_map = {c: i for i, c in enumerate(base_ids)}
    novel_map = {c: i for i, c in enumerate(novel_ids)}
    base_train = remap_labels(train, base_map)
    return BaseNovelSplit(
        base_classes=[class_names[c] for c in base_ids], novel_classes=[class_names[c] for c in novel_ids],
        train=few_shot(base_train, shots, seed, strict=False),
        base_test=remap_labels(test, base_map), novel_test=remap_labels(test, novel_map),
        base_ids=list(base_ids), novel_ids=list(novel_ids))


def normalize_class_name(name: str) -> str:
    """Ignores case, quotes, underscores, extra spaces: "Passing_American  football" -> "passing american football"."""
    return re.sub(r"\s+", " ", name.replace("_", " ").replace('"', "").replace("'", "")).strip().lower()


# K600 name -> the K400 class it continues (the K600 release renamed a few K400 classes or narrowed them with a
# "(not ...)" qualifier when it added a sibling class, e.g. "hugging" -> "hugging (not baby)" next to the new "hugging
# baby"). Found by comparing prompts/k600.yaml with prompts/k400.yaml: the 31 K400 names missing from K600 are these
# 11 renames and 20 classes K600 dropped or merged (e.g. "drinking", "strumming guitar"). With this map 600 - 380 =
# 220 K600 classes are new, as in ER-ZSAR; without it 231 (231 - 10 = 221 when one rename is missed, as some peers
# report). The ViFi-CLIP/ER-ZSAR draws of 160 classes (labels/ZS_split{1,2,3}_K600.csv) use none of the 11 K600 names.
K600_RENAMED_FROM_K400: dict[str, str] = {
    "changing wheel (not on bike)": "changing wheel",
    "cooking sausages (not on barbeque)": "cooking sausages",
    "dyeing hair": "dying hair",                     # spelling fix
    "hugging (not baby)": "hugging",
    "inflating balloons": "balloon blowing",
    "making the bed": "making bed",
    "opening bottle (not wine)": "opening bottle",
    "person collecting garbage": "garbage collecting",
    "throwing ball (not baseball or American football)": "throwing ball",
    "tying necktie": "tying tie",
    "waking up": "baby waking up",
}


def k600_novel_classes(k600: Sequence[str], k400: Sequence[str], *,
                       aliases: Optional[dict[str, str]] = None) -> list[str]:
    """K600 class names that are not K400 classes, in K600 order.

    Args:
        aliases: K600 name -> K400 name for classes that were renamed between the releases (e.g. a spelling fix);
            without them a renamed class counts as new, which is how some peers ended up with 221 classes. The
            real datasets need ``K600_RENAMED_FROM_K400`` (220 novel classes).
    """
    aliases = {normalize_class_name(k): normalize_class_name(v) for k, v in (aliases or {}).items()}
    old = {normalize_class_name(n) for n in k400}
    out = []
    for name in k600:
        key = normalize_class_name(name)
        if key not in old and aliases.get(key) not in old:
            out.append(name)
    return out


def k600_zero_shot_draws(novel: Sequence[str], *, draws: int = 3, size: int = 160, seed: int = 0) -> list[list[str]]:
    """`draws` seeded draws of `size` classes from the novel K600 classes, each in the order of `novel`."""
    if size > len(novel):
        raise ValueError(f"cannot draw {size} classes from {len(novel)} novel K600 classes")
    g = _gen(seed)
    out = []
    for _ in range(draws):
        pick = sorted(torch.randperm(len(novel), generator=g)[:size].tolist())
        out.append([novel[i] for i in pick])
    return out


def subset_classes(items: Sequence[VideoItem], class_names: Sequence[str],
                   keep: Sequence[str]) -> tuple[list[VideoItem], list[str]]:
    """Keeps the videos of classes `keep` (names) and re-indexes them 0..len(keep)-1 in the order of `keep`."""
    index = {n: i for i, n in enumerate(class_names)}
    unknown = [n for n in keep if n not in index]
    if unknown:
        raise KeyError(f"classes not in the class table: {unknown[:5]}")
    mapping = {index[n]: i for i, n in enumerate(keep)}
    return remap_labels(items, mapping), list(keep)


def hold_out(items: Sequence[VideoItem], fraction: float, seed: int) -> tuple[list[VideoItem], list[VideoItem]]:
    """Splits off round(fraction * N) items (at least one when fraction > 0 and N > 1) for model selection.

    The draw is uniform over the sorted list, not per class, so a small list may leave a class unrepresented in
    one of the parts; few-shot runs hold out from the videos the shots were not drawn from instead (datasets.py).

    Returns:
        (kept, held_out), both in sorted order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction} (config key data.val_fraction)")
    ordered = sorted(set(items), key=lambda it: (it.path, it.label))
    n_val = int(round(fraction * len(ordered)))
    if fraction > 0 and len(ordered) > 1:
        n_val = max(1, n_val)
    perm = torch.randperm(len(ordered), generator=_gen(seed)).tolist()
    val_idx = set(perm[:n_val])
    kept = [it for i, it in enumerate(ordered) if i not in val_idx]
    held = [it for i, it in enumerate(ordered) if i in val_idx]
    return kept, held
