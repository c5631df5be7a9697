"""The msta demo (`make demo`): synthetic motion + appearance videos, a tiny CLIP pretrained here, MSTA trained
few-shot through scripts/train.py, one results table. Nothing is downloaded.

Examples:
    python scripts/demo.py [--out runs/demo] [--quick]        # or: make demo
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.cli.common import CliParser, check_out_dir, run_command, setup_cli_logging


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__)
    p.add_argument("--out", default=None, help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="the shortened demo CI runs (fewer test videos)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _run(args: argparse.Namespace) -> int:
    # msta's own progress at INFO; open_clip logs every model build at INFO on the root logger, which is noise here
    setup_cli_logging(logging.INFO)
    if args.out:
        check_out_dir(args.out)

    from msta.demo.pipeline import DemoSettings, run_demo

    settings = DemoSettings(seed=args.seed, quick=args.quick, extra_opts=tuple(args.opts))
    if args.out:
        settings = DemoSettings(**{**settings.__dict__, "out_dir": Path(args.out).resolve()})
    result = run_demo(settings)
    print("\n" + result["table"] + "\n")
    print("wall time per step (s): " + ", ".join(f"{k}: {v}" for k, v in result["seconds"].items()))
    print(f"total: {sum(result['seconds'].values()):.0f} s; results, plots and logs in {settings.out_dir}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
