"""Index a folder of your own videos for text search and classification (msta search, msta classify).

Examples:
    msta index ~/videos --ckpt runs/fewshot_hmdb/best --out ~/videos.msta-index
    msta index ~/videos --out ~/videos.msta-index                  # frozen CLIP ViT-B/16 (OpenAI weights)
    msta index ~/videos --cfg my.yaml --ckpt run/best --out idx --opts eval.views.clips=2

Every video under the folder (recursively) is embedded once, with the test views of the config (eval.views) and on
a GPU when one is present. Running it again embeds only new or changed videos and drops deleted ones; an index built
with another model or adapters is refused (use --rebuild to replace it). Unreadable videos are listed with their
reason (exit code 1) and the others are indexed. Ctrl-C (or SIGTERM) keeps every video embedded so far.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.cli.common import CliParser, check_out_file, run_command, setup_cli_logging
from msta.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__)
    p.add_argument("folder", metavar="DIR", help="folder of videos (searched recursively)")
    p.add_argument("--out", required=True, help="the index file to create or update")
    p.add_argument("--ckpt", help="adapters (run/best, a folder or file); its embedded config is used unless --cfg")
    p.add_argument("--cfg", help="experiment YAML or a shipped config's name (model, frames, views)")
    p.add_argument("--rebuild", action="store_true", help="replace an existing index instead of updating it")
    p.add_argument("--batch-size", type=int, default=8, help="videos per forward (default 8)")
    p.add_argument("--workers", type=int, default=0, help="processes decoding videos ahead of the model")
    p.add_argument("--device", help="e.g. cuda:1 or cpu (default: a GPU when present)")
    return p


def stop_on_sigterm() -> None:
    """Turns SIGTERM (``kill``, a job scheduler's stop) into KeyboardInterrupt, so the index is written first."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    stop_on_sigterm()
    from msta.cli.common import read_checkpoints
    from msta.index import load_index_model, scan_folder, update_index

    if args.batch_size < 1 or args.workers < 0:
        raise UsageError(f"--batch-size must be >= 1 and --workers >= 0, got {args.batch_size} and {args.workers}")
    out = check_out_file(args.out)
    scan_folder(args.folder)                       # a wrong folder fails before the model is built
    if args.ckpt:
        read_checkpoints([args.ckpt])              # an unreadable adapters file: one message naming it
    model = load_index_model(args.ckpt, args.cfg, args.opts, device=args.device)
    report = update_index(args.folder, out, model, rebuild=args.rebuild, batch_size=args.batch_size,
                          workers=args.workers, progress=sys.stderr.isatty())
    for f in report.failed:
        print(f"cannot read {Path(args.folder) / f.path}: {f.reason}", file=sys.stderr)
    print(report.line())
    return 1 if report.failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
