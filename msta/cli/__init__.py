"""The command-line programs of msta, one module per command, each with `main(argv=None) -> int`.

Each is a console entry point after `pip install` (`msta-train`, `msta-eval`, ... in setup.cfg) and a subcommand
of `msta` (`msta train --cfg fewshot_hmdb`); `scripts/*.py` in a checkout are thin wrappers over the same modules.
The conventions they share (--cfg, --ckpt, --out, --opts, --debug, exit codes) are in `msta.cli.common`.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Optional, Sequence

__all__ = ["COMMANDS", "main"]

# subcommand -> module under msta.cli (entry point msta-<subcommand>, except where setup.cfg says otherwise)
COMMANDS = {
    "train": "train", "eval": "eval", "zeroshot": "zeroshot_eval", "predict": "predict", "prepare": "prepare_data",
    "check-data": "check_data", "descriptions": "generate_descriptions", "benchmark": "benchmark", "demo": "demo",
    "config-reference": "config_reference", "index": "index", "search": "search", "classify": "classify",
    "app": "app",
}
_ELSEWHERE = {"import-descriptions": "msta.text.import_cli"}   # commands whose main lives beside their library


def _module(name: str) -> Optional[str]:
    path = _ELSEWHERE.get(name) or (f"msta.cli.{COMMANDS[name]}" if name in COMMANDS else None)
    return path if path and importlib.util.find_spec(path) is not None else None


def _usage() -> str:
    names = [n for n in [*COMMANDS, *_ELSEWHERE] if _module(n)]
    return ("usage: msta <command> [arguments]   (msta <command> --help for each)\n\ncommands: "
            + ", ".join(names) + "\n\nexample: msta predict clip.mp4 --labels \"juggling,knitting,skiing\"")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`msta <command> ...`: runs that command's `main` with the remaining arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from msta import __version__

        print(f"msta {__version__}")
        return 0
    module = _module(args[0])
    if module is None:
        print(f"msta: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    sys.argv[0] = f"msta {args[0]}"
    return importlib.import_module(module).main(args[1:])
