"""Scan a video list and report every bad video (missing, zero-byte, truncated, undecodable, too short).

Examples (msta-check-data, or python scripts/check_data.py from a checkout):
    msta-check-data data/hmdb51/lists/train1.txt --root data/hmdb51 [--full] [--backend pyav]

Reads `relative/path.ext <label>` lists (or PySlowFast CSVs with --slowfast). Exit code 1 if any video is bad.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from msta.cli.common import CliParser, run_command, setup_cli_logging
from msta.data.annotations import read_slowfast_csv, read_video_list
from msta.data.bad_videos import format_report, scan_videos


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__, opts=False)
    p.add_argument("list", help="video list file")
    p.add_argument("--root", default=".", help="folder the list's paths are relative to (data.root)")
    p.add_argument("--backend", default="decord", choices=("decord", "pyav"))
    p.add_argument("--min-frames", type=int, default=1, help="fewer frames than this is bad (data.min_frames)")
    p.add_argument("--full", action="store_true", help="decode every frame, not just the first, middle and last")
    p.add_argument("--slowfast", action="store_true", help="the list is a PySlowFast `path,label` CSV")
    return p


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    items = read_slowfast_csv(args.list) if args.slowfast else read_video_list(args.list)
    bad = scan_videos([it.path for it in items], root=args.root, backend=args.backend,
                      min_frames=args.min_frames, full=args.full)
    print(format_report(bad, len(items)))
    return 1 if bad else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
