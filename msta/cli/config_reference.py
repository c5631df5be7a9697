"""Print the config reference (every key, its type, default and meaning) as markdown, from msta/config.py itself.

README.md embeds this output between `<!-- config-reference -->` markers; a test keeps the two equal.
Usage: `python scripts/config_reference.py [--write README.md]`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.cli.common import CliParser, run_command
from msta.config_doc import config_reference
from msta.errors import UsageError

BEGIN, END = "<!-- config-reference -->", "<!-- /config-reference -->"


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__, opts=False)
    p.add_argument("--write", metavar="README", help="replace the marked section of this file")
    return p


def _run(args: argparse.Namespace) -> int:
    table = config_reference()
    if not args.write:
        print(table)
        return 0
    path = Path(args.write)
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise UsageError(f"{path}: no {BEGIN} ... {END} markers to replace")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
