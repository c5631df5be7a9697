"""Print the config reference (every key, its type, default and meaning) as markdown, from msta/config.py itself.

README.md embeds this output between `<!-- config-reference -->` markers; a test keeps the two equal.
Usage: `python scripts/config_reference.py [--write README.md]`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msta.config_doc import config_reference

BEGIN, END = "<!-- config-reference -->", "<!-- /config-reference -->"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", metavar="README", help="replace the marked section of this file")
    args = p.parse_args(argv)
    table = config_reference()
    if not args.write:
        print(table)
        return 0
    path = Path(args.write)
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"{path}: no {BEGIN} ... {END} markers to replace", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
