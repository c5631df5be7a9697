"""Build hook only (everything else is in setup.cfg): the wheel carries the repository's top-level `configs/` and
`prompts/` as `msta/_shipped/`, so the repository keeps one copy of each and an installed msta finds them
(`msta.resources`). Editable installs use the top-level folders themselves."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("configs", "prompts")


class BuildPyWithShipped(build_py):
    """build_py, then copies configs/ and prompts/ into the build's msta/_shipped/ (skipped when editable)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for kind in SHIPPED:
            dst = Path(self.build_lib) / "msta" / "_shipped" / kind
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(ROOT / kind, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildPyWithShipped})
