"""Build video lists and class tables from an official dataset archive layout.

Usage:
    python scripts/prepare_data.py hmdb51 --root data/hmdb51 --out data/hmdb51/lists [--protocols]

Writes <out>/classes.csv, one <split>.txt per official split (paths relative to --root, which becomes data.root)
and <out>/report.txt; with --protocols also the few-shot and base-to-novel files. Exit code 1 if videos are missing.
"""
from __future__ import annotations

import argparse
import logging
import sys

from msta.data.preparers import PREPARERS, prepare_dataset, write_prepared, write_protocol_splits

_PROTOCOL_SPLITS = {"hmdb51": ("train1", "test1"), "ucf101": ("train1", "test1"), "k400": ("train", "val"),
                    "k600": ("train", "val"), "ssv2": ("train", "val")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(PREPARERS))
    p.add_argument("--root", required=True, help="folder the official archives unpacked to")
    p.add_argument("--out", required=True, help="folder for the lists, classes.csv and report.txt")
    p.add_argument("--protocols", action="store_true", help="also write few-shot and base-to-novel split files")
    p.add_argument("--seed", type=int, default=1, help="few-shot draw seed for --protocols")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    prepared = prepare_dataset(args.dataset, args.root)
    written = write_prepared(prepared, args.out)
    if args.protocols:
        train, test = _PROTOCOL_SPLITS[args.dataset]
        written.update(write_protocol_splits(prepared, args.out, train_split=train, test_split=test,
                                             fewshot_seed=args.seed))
    print(prepared.summary())
    for m in prepared.missing:
        print(f"missing: {m}")
    for name, paths in sorted(prepared.duplicates.items()):
        print(f"duplicate: {name}: {', '.join(paths)}")
    print(f"wrote {len(written)} files to {args.out}")
    return 1 if prepared.missing else 0


if __name__ == "__main__":
    sys.exit(main())
