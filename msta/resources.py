"""The files msta ships beside its code (``configs/``, ``prompts/``) and the one rule for relative paths.

The rule: **a relative path (in a config or on the command line) is relative to the working directory; when nothing
exists there and the path starts with a shipped folder (``configs/...``, ``prompts/...``), the shipped copy is
used.** So a checkout works as before, an installed msta finds its configs and prompts from any directory, and a
``prompts/`` (or ``configs/``) folder in the working directory overrides the shipped one. ``_base_`` entries of a
config are relative to that config's own folder (inheritance, not a path of the run). A config can also be named
without folder or suffix: ``--cfg fewshot_hmdb`` is ``configs/fewshot_hmdb.yaml`` by the same rule.

Where the shipped files are: in a checkout (or an editable install) the repository's top-level ``configs/`` and
``prompts/``, the only copy in the repository; in an installed wheel ``msta/_shipped/{configs,prompts}``, which the
build copies from the top-level folders (``setup.py``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["SHIPPED_KINDS", "shipped_dir", "resolve_path", "resolve_config_file", "list_shipped_configs"]

SHIPPED_KINDS = ("configs", "prompts")
_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Optional[Path]:
    """The shipped ``configs`` or ``prompts`` folder, or None when this msta has none (a bare package)."""
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"unknown shipped folder {kind!r}; one of {SHIPPED_KINDS}")
    inside = _PACKAGE / "_shipped" / kind
    if inside.is_dir():
        return inside
    checkout = _PACKAGE.parent
    # a checkout: the repository root holds setup.cfg next to msta/ (site-packages never does)
    if (checkout / "setup.cfg").is_file() and (checkout / kind).is_dir():
        return checkout / kind
    return None


def resolve_path(value: str | os.PathLike) -> str:
    """``value`` by the module's rule: as given when it exists (or is absolute), else the shipped file it names.

    Returns:
        ``value`` unchanged, or the absolute path of the shipped copy (``prompts/x.yaml`` -> ``<shipped>/x.yaml``).
    """
    text = os.fspath(value)
    path = Path(text)
    if not text or path.is_absolute() or path.exists():
        return text
    parts = path.parts
    if len(parts) >= 1 and parts[0] in SHIPPED_KINDS:
        base = shipped_dir(parts[0])
        if base is not None and (base.joinpath(*parts[1:])).exists():
            return str(base.joinpath(*parts[1:]))
    return text


def list_shipped_configs() -> list[str]:
    """Names of the shipped experiment configs (``fewshot_hmdb``, ...), sorted; empty without shipped configs."""
    base = shipped_dir("configs")
    return sorted(p.stem for p in base.glob("*.yaml")) if base is not None else []


def resolve_config_file(value: str | os.PathLike) -> Path:
    """The config file ``--cfg value`` means: a path (by the rule above), or a bare name ``fewshot_hmdb`` meaning
    ``configs/fewshot_hmdb.yaml`` (the working directory's, else the shipped one). Returns the path as found, or
    as given when nothing matches (the caller reports it)."""
    text = os.fspath(value)
    path = Path(resolve_path(text))
    if path.is_file():
        return path
    if Path(text).parent == Path(".") and not Path(text).suffix:
        for candidate in (Path("configs") / f"{text}.yaml", Path("configs") / f"{text}.yml"):
            found = Path(resolve_path(candidate))
            if found.is_file():
                return found
    return path
