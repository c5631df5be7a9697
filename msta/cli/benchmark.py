"""Benchmarks of msta on this machine: train step, zero-shot eval, data pipeline, checkpoint size.

Examples (msta-benchmark, or python scripts/benchmark.py from a checkout):
    python scripts/benchmark.py all                       # full size (ViT-B-16, 8 frames at 224): tens of minutes
    python scripts/benchmark.py train --steps 5 --out bench.json
    python scripts/benchmark.py all --tiny                # msta-tiny, seconds (CI)

Prints markdown tables (docs/benchmarks.md is written from them) and, with --out, the full JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from msta.bench import GROUPS, format_report, run_suite  # noqa: E402
from msta.cli.common import CliParser, check_out_file, run_command, setup_cli_logging  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__, opts=False)
    p.add_argument("what", choices=[*GROUPS, "all"], help="which benchmark group to run")
    p.add_argument("--tiny", action="store_true", help="msta-tiny model and one timed step (seconds; for CI)")
    p.add_argument("--out", help="write the full result as JSON to this file")
    p.add_argument("--steps", type=int, help="timed optimiser steps per train configuration (default 3, tiny 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per configuration (default 2)")
    p.add_argument("--only", help="train configurations, comma-separated: name substrings or =exact names "
                                  "(e.g. all_off or =msta_r128_b8-12)")
    p.add_argument("--precisions", default="fp32,bf16", help="train precisions, comma-separated (default fp32,bf16)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _run(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    setup_cli_logging()
    if args.out:
        check_out_file(args.out)
    groups = list(GROUPS) if args.what == "all" else [args.what]
    result = run_suite(groups, tiny=args.tiny, steps=args.steps, threads=args.threads, only=args.only,
                       precisions=[p for p in args.precisions.split(",") if p],
                       progress=lambda msg: print(f"# running {msg}", file=sys.stderr, flush=True))
    result["command"] = " ".join(["python", "scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    print(format_report(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(lambda args: _run(args, argv), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
