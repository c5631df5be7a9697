#!/usr/bin/env python
"""Thin wrapper over msta.text.import_cli (see its docstring, or run with --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's msta, whether installed or not

from msta.text.import_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
