"""The msta demo (`make demo`): synthetic motion + appearance videos, a tiny CLIP pretrained here, MSTA trained
few-shot through scripts/train.py, one results table. Nothing is downloaded.

Usage:
    python scripts/demo.py [--out runs/demo] [--quick]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="the shortened demo CI runs (fewer test videos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for the training runs")
    args = p.parse_args(argv)
    # msta's own progress at INFO; open_clip logs every model build at INFO on the root logger, which is noise here
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("msta").setLevel(logging.INFO)

    from msta.demo.pipeline import DemoSettings, run_demo

    settings = DemoSettings(seed=args.seed, quick=args.quick, extra_opts=tuple(args.opts))
    if args.out:
        settings = DemoSettings(**{**settings.__dict__, "out_dir": Path(args.out).resolve()})
    result = run_demo(settings)
    print("\n" + result["table"] + "\n")
    print("wall time per step (s): " + ", ".join(f"{k}: {v}" for k, v in result["seconds"].items()))
    print(f"total: {sum(result['seconds'].values()):.0f} s; results, plots and logs in {settings.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
