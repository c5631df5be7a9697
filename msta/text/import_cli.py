"""`msta-import-descriptions` / `scripts/import_descriptions.py`: number-keyed description files -> prompts file.

    python scripts/import_descriptions.py --order vifi-hmdb51 --classes data/hmdb51/lists/classes.csv \
        --spatial 2_s_description_hmdb.json --temporal 2_t_description_hmdb.json --out prompts/hmdb51.yaml

`--order` names the class order the files were written for: the MSTA authors' and OST's files follow ViFi-CLIP's
label CSVs (for HMDB51 built in as `vifi-hmdb51`; for other datasets give that CSV, e.g. ViFi-CLIP's
`labels/kinetics_400_labels.csv`). Exit status 0 on success, 2 on a user error (one message, no traceback).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.errors import UserError
from msta.text.importer import import_descriptions
from msta.text.orders import BUILTIN_ORDERS

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("msta.import_descriptions")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msta-import-descriptions", description=__doc__.split("\n")[0],
                                epilog="Example:\n" + __doc__.split("\n", 1)[1].strip("\n"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", required=True,
                   help=f"the class order the files were written for: {' | '.join(BUILTIN_ORDERS)} | 'vifi' "
                        "(with --dataset hmdb51) | the path of that `id,name` label CSV")
    p.add_argument("--classes", help="the run's class table (`id,name` CSV); the files must cover exactly its "
                                     "classes (default: the classes of --order)")
    p.add_argument("--spatial", required=True, help="the spatial file, {\"0\": [N strings], ...}")
    p.add_argument("--temporal", required=True, help="the temporal file, same keys")
    p.add_argument("--out", required=True, help="prompts file to write, prompts/<dataset>.yaml")
    p.add_argument("--dataset", help="dataset key (default: the stem of --out)")
    p.add_argument("--names", help="prompts file whose readable names to keep (default: --out if it exists, else "
                                   "the raw labels); the swap check also looks for these names")
    p.add_argument("--num", type=int, help="descriptions per type and class N (default: the files' own)")
    p.add_argument("--force", action="store_true",
                   help="import even when classes look swapped (their descriptions name another class)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the importer; returns the exit status (0 written, 2 user error)."""
    args = build_parser().parse_args(argv)
    from msta.cli.common import setup_cli_logging

    setup_cli_logging()   # the one log format of every msta command
    out = Path(args.out)
    try:
        classes = import_descriptions(args.classes, args.spatial, args.temporal, dataset=args.dataset or out.stem,
                                      out=out, order=args.order,
                                      names_from=args.names or (out if out.is_file() else None),
                                      num_descriptions=args.num, force=args.force)
    except (UserError, FileNotFoundError) as e:  # AnnotationError, PromptError: the file named in the message
        _logger.error("%s", e)
        return 2
    _logger.info("imported %d classes into %s", len(classes), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
