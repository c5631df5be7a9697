"""Label every video of an index with the most probable of your class names (or the checkpoint's classes).

Examples:
    msta classify ~/videos.msta-index --labels "juggling,knitting,skiing"
    msta classify ~/videos.msta-index --topk 3 --format json       # the classes the checkpoint was trained on
    msta classify ~/videos.msta-index --dataset hmdb51              # the classes of prompts/hmdb51.yaml

Probabilities are softmax scores over the given classes averaged over the index's views, as the evaluators
compute them; templates come from the checkpoint (else "a video of {}.").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.cli.common import CliParser, run_command, setup_cli_logging
from msta.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__, opts=False)
    p.add_argument("index", metavar="INDEX", help="index file (msta index DIR --out INDEX)")
    names = p.add_mutually_exclusive_group()
    names.add_argument("--labels", help='comma-separated class names, e.g. "juggling,knitting,skiing"')
    names.add_argument("--dataset", help="the classes of prompts/<NAME>.yaml (the index config's text.prompts_dir)")
    p.add_argument("--topk", type=int, default=1, help="classes per video (default 1)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--ckpt", help="the index's adapters file, where it was moved")
    p.add_argument("--device", help="e.g. cuda:1 or cpu (default: a GPU when present)")
    return p


def _labels(args: argparse.Namespace, index) -> list[str]:
    if args.labels is not None:
        return [n.strip() for n in args.labels.split(",") if n.strip()]
    if args.dataset:
        from msta.text.prompts import raw_to_name, read_prompts_file

        prompts_dir = Path(index.data.config.get("text", {}).get("prompts_dir", "prompts"))
        _, classes = read_prompts_file(prompts_dir / f"{args.dataset}.yaml")
        return [entry["name"] or raw_to_name(raw) for raw, entry in classes.items()]
    names = index.model.class_names
    if not names:
        raise UsageError(f"{args.index} was built without a checkpoint that names classes; "
                         "give --labels \"a,b,c\" or --dataset NAME")
    return names


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    from msta.index import VideoIndex
    from msta.index.formatting import labels_json, labels_table

    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    index = VideoIndex(args.index, ckpt=args.ckpt, device=args.device)
    labels = _labels(args, index)
    if not labels:
        raise UsageError("--labels is empty; give comma-separated class names, e.g. \"juggling,knitting\"")
    rows = index.classify(labels, topk=args.topk)
    print(labels_json(labels, rows) if args.format == "json" else labels_table(rows))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
