"""Start the local web page: classify a video with your labels, search an index of your videos.

Examples:
    msta app --ckpt runs/fewshot_hmdb/best --index ~/videos.msta-index     # then open http://127.0.0.1:7860
    msta app --ckpt run_a/best --ckpt run_b/best --port 8080               # a checkpoint menu
    msta app --host 0.0.0.0                                                # reachable from other machines

Needs the optional extra: pip install 'msta[app]'. The page binds to 127.0.0.1 (this machine only) unless --host
says otherwise. Ctrl-C stops it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from msta.cli.common import CliParser, run_command, setup_cli_logging
from msta.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__, opts=False)
    p.add_argument("--ckpt", action="append", default=[], metavar="PATH",
                   help="adapters offered in the checkpoint menu (repeatable); frozen CLIP is always offered")
    p.add_argument("--cfg", help="experiment YAML the models are built with (default: each checkpoint's own)")
    p.add_argument("--index", action="append", default=[], metavar="INDEX", help="index files offered for search")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", help="e.g. cuda:1 or cpu (default: a GPU when present)")
    return p


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    from msta.app import build_app, launch

    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: give a port between 1 and 65535")
    page = build_app(args.ckpt, args.cfg, args.index, args.device)
    print(f"msta app on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    launch(page, host=args.host, port=args.port, block=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
