"""Build video lists and class tables from an official dataset archive layout.

Examples (msta-prepare, or python scripts/prepare_data.py from a checkout):
    msta-prepare hmdb51 --root data/hmdb51 --out data/hmdb51/lists [--protocols]
    msta-prepare k600 --root data/k600 --out data/k600/lists
        --k400-classes data/k400/lists/classes.csv [--zs-pool val|all]      (one command line)

Writes <out>/classes.csv, one <split>.txt per official split (paths relative to --root, which becomes data.root)
and <out>/report.txt; with --protocols also the few-shot and base-to-novel files. For k600, --k400-classes also
writes the zero-shot files (configs/zeroshot_k600.yaml): zs_novel_classes.csv (the 220 classes not in K400),
zs_draw{1,2,3}_classes.csv (160 classes each, ids 0..159), zs_draw{1,2,3}.txt (the --zs-pool videos of those
classes) and zs_report.txt (the pool). For msrvtt (caption lists for text-video retrieval):
    python scripts/prepare_data.py msrvtt --root data/msrvtt --out data/msrvtt/lists
writes train_9k.txt, train_7k.txt and test_1k.txt (`path<TAB>caption`) and report.txt. Exit code 1 if videos are
missing.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from msta.cli.common import CliParser, check_out_dir, run_command, setup_cli_logging
from msta.data.preparers import (K600_ZS_POOLS, PREPARERS, prepare_dataset, write_k600_zero_shot, write_prepared,
                                 write_protocol_splits)

_PROTOCOL_SPLITS = {"hmdb51": ("train1", "test1"), "ucf101": ("train1", "test1"), "k400": ("train", "val"),
                    "k600": ("train", "val"), "ssv2": ("train", "val")}


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__, opts=False)
    p.add_argument("dataset", choices=sorted(PREPARERS))
    p.add_argument("--root", required=True, help="folder the official archives unpacked to")
    p.add_argument("--out", required=True, help="folder for the lists, classes.csv and report.txt")
    p.add_argument("--protocols", action="store_true", help="also write few-shot and base-to-novel split files")
    p.add_argument("--seed", type=int, default=1, help="few-shot draw seed for --protocols")
    p.add_argument("--k400-classes", metavar="CSV",
                   help="k600 only: the K400 class table; writes the zero-shot novel classes and draws (zs_*)")
    p.add_argument("--zs-pool", choices=sorted(K600_ZS_POOLS), default="val",
                   help="k600 zero-shot videos: 'val' = K600 val videos of the drawn classes (default), "
                        "'all' = train + val + test videos (the ViFi-CLIP pool)")
    p.add_argument("--zs-size", type=int, default=160, help="classes per K600 zero-shot draw (3 draws, seed 0)")
    return p


def _run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    setup_cli_logging()
    if args.k400_classes and args.dataset != "k600":
        p.error("--k400-classes is for the k600 zero-shot files; the dataset must be k600")
    check_out_dir(args.out)
    if args.protocols and args.dataset not in _PROTOCOL_SPLITS:
        p.error(f"--protocols writes few-shot and base-to-novel label lists; {args.dataset} has none")

    prepared = prepare_dataset(args.dataset, args.root)
    # caption datasets (msrvtt) write their own caption lists
    written = prepared.write(args.out) if hasattr(prepared, "write") else write_prepared(prepared, args.out)
    if args.protocols:
        train, test = _PROTOCOL_SPLITS[args.dataset]
        written.update(write_protocol_splits(prepared, args.out, train_split=train, test_split=test,
                                             fewshot_seed=args.seed))
    if args.k400_classes:
        from msta.data.annotations import read_class_table

        written.update(write_k600_zero_shot(prepared, args.out, read_class_table(args.k400_classes),
                                            pool=args.zs_pool, size=args.zs_size))
        print(written["zs_report"].read_text().splitlines()[0].replace("\t", ": ", 1))
    print(prepared.summary())
    for m in prepared.missing:
        print(f"missing: {m}")
    for name, paths in sorted(prepared.duplicates.items()):
        print(f"duplicate: {name}: {', '.join(paths)}")
    print(f"wrote {len(written)} files to {args.out}")
    return 1 if prepared.missing else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    return run_command(lambda args: _run(args, parser), parser, argv)


if __name__ == "__main__":
    sys.exit(main())
