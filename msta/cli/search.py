"""Search an index of your own videos with a sentence: the videos ranked by similarity to it.

Examples:
    msta search ~/videos.msta-index "a dog catching a frisbee" --topk 10
    msta search ~/videos.msta-index "someone juggling" --format json
    msta search idx "juggling" --ckpt moved/best        # the index's adapters file was moved

The model is rebuilt from the checkpoint and config the index records (msta index); --ckpt points at the same
adapters where they moved (a different model is refused).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from msta.cli.common import CliParser, run_command, setup_cli_logging
from msta.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__, opts=False)
    p.add_argument("index", metavar="INDEX", help="index file (msta index DIR --out INDEX)")
    p.add_argument("query", metavar="TEXT", help="what to look for, in words")
    p.add_argument("--topk", type=int, default=10, help="results to show (default 10)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--ckpt", help="the index's adapters file, where it was moved")
    p.add_argument("--device", help="e.g. cuda:1 or cpu (default: a GPU when present)")
    return p


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    from msta.index import VideoIndex
    from msta.index.formatting import hits_json, hits_table

    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    if not args.query.strip():
        raise UsageError("the query is empty; give a few words, e.g. \"a dog catching a frisbee\"")
    index = VideoIndex(args.index, ckpt=args.ckpt, device=args.device)
    hits = index.search(args.query, topk=args.topk)
    print(hits_json(args.query, hits) if args.format == "json" else hits_table(hits))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
