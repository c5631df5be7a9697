"""Class orders that published number-keyed description files were written in.

The MSTA authors' and OST's description JSONs are keyed "0".."C-1" in the order of ViFi-CLIP's label CSVs
(`labels/*.csv`, `id,name`), not in the order of the class table that `scripts/prepare_data.py` writes (HMDB51's
classes sorted by name). For HMDB51 the two differ in four classes: ViFi-CLIP has kick_ball=20, kick=21,
sword_exercise=44, sword=45, where the sorted table has kick=20, kick_ball=21, sword=44, sword_exercise=45.
Importing such a file with the sorted table would give `kick` the descriptions of kicking a ball.

`class_order(spec)` turns what a user names (a built-in order, or the path of the `id,name` CSV a file was written
for) into the raw labels in key order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

__all__ = ["BUILTIN_ORDERS", "HMDB51_SORTED", "VIFI_HMDB51", "class_order"]

# HMDB51's 51 raw labels (the official archive's folder names) sorted by name: the table prepare_data.py writes.
HMDB51_SORTED = (
    "brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive", "draw_sword", "dribble",
    "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf", "handstand", "hit", "hug", "jump",
    "kick", "kick_ball", "kiss", "laugh", "pick", "pour", "pullup", "punch", "push", "pushup",
    "ride_bike", "ride_horse", "run", "shake_hands", "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile",
    "smoke", "somersault", "stand", "swing_baseball", "sword", "sword_exercise", "talk", "throw", "turn", "walk",
    "wave",
)


def _swapped(labels: tuple[str, ...], *pairs: tuple[str, str]) -> tuple[str, ...]:
    out = list(labels)
    for a, b in pairs:
        i, j = out.index(a), out.index(b)
        out[i], out[j] = out[j], out[i]
    return tuple(out)


# ViFi-CLIP's HMDB51 label CSV: the sorted order except kick_ball=20, kick=21, sword_exercise=44, sword=45.
VIFI_HMDB51 = _swapped(HMDB51_SORTED, ("kick", "kick_ball"), ("sword", "sword_exercise"))

BUILTIN_ORDERS: dict[str, tuple[str, ...]] = {
    "vifi-hmdb51": VIFI_HMDB51,      # the MSTA authors' / OST's HMDB51 description files
    "sorted-hmdb51": HMDB51_SORTED,  # msta's own table (scripts/prepare_data.py hmdb51)
}


def class_order(spec: str, dataset: Optional[str] = None) -> tuple[list[str], str]:
    """The raw labels in the order a number-keyed file was written for.

    Args:
        spec: a built-in order ("vifi-hmdb51", "sorted-hmdb51", or "vifi" / "sorted" with `dataset`), or the path
            of an `id,name` CSV (e.g. ViFi-CLIP's `labels/hmdb_51_labels.csv`, or msta's own classes.csv).
        dataset: the dataset key, completing "vifi" / "sorted".

    Returns:
        (raw labels in key order, a description of the order for messages).

    Raises:
        FileNotFoundError / AnnotationError: a CSV that is missing or malformed.
        ValueError: neither a built-in order nor a file (the message lists the built-in orders).
    """
    from msta.data.annotations import read_class_table

    key = f"{spec}-{dataset}" if dataset and spec in ("vifi", "sorted") else spec
    if key in BUILTIN_ORDERS:
        return list(BUILTIN_ORDERS[key]), f"the built-in order '{key}'"
    if Path(spec).is_file():
        return read_class_table(spec), f"the class table {spec}"
    raise ValueError(f"class order {spec!r} is neither a built-in order ({', '.join(BUILTIN_ORDERS)}) nor an "
                     "`id,name` CSV file; name the label CSV the description files were written for (for the MSTA "
                     "authors' and OST's files: ViFi-CLIP's labels/*.csv, built in for HMDB51 as 'vifi-hmdb51')")
