"""The config reference: every key of msta/config.py with its type, default and the comment beside it.

README.md embeds `config_reference()` (via `scripts/config_reference.py --write README.md`); a test keeps them equal.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import typing

import yaml

from msta import config

__all__ = ["config_reference"]


def config_reference() -> str:
    """Markdown tables of every config key with its type, default and the comment beside it in this file."""
    source = inspect.getsource(config)
    lines = source.splitlines()
    classes = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}

    def rows(cls: type, prefix: str) -> list[str]:
        out = []
        comments = {}
        for stmt in classes[cls.__name__].body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                line = lines[stmt.lineno - 1]
                text = line.split("#", 1)[1].strip() if "#" in line else ""
                col, nxt = line.find("#"), stmt.lineno
                # a comment continued on the next lines, aligned under the first one
                while text and nxt < len(lines) and lines[nxt].find("#") == col and not lines[nxt][:col].strip():
                    text += " " + lines[nxt][col + 1:].strip()
                    nxt += 1
                comments[stmt.target.id] = text
        hints = typing.get_type_hints(cls)
        default = cls()
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                out += rows(hints[f.name], key + ".")
                continue
            value = config.config_to_dict(getattr(default, f.name)) if dataclasses.is_dataclass(default) else None
            shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            tp = config._type_name(hints[f.name])
            out.append(f"| `{key}` | {tp} | `{shown}` | {comments.get(f.name, '')} |")
        return out

    parts = ["## Config reference", "",
             "Every key, generated from `msta/config.py` (`python scripts/config_reference.py`). Configs inherit with "
             "`_base_: [files]`; any key can be overridden with `--opts key.path=value`; an unknown key or a wrong "
             "type is an error naming the key and the closest valid one.", ""]
    for f in dataclasses.fields(config.ExperimentCfg):
        tp = typing.get_type_hints(config.ExperimentCfg)[f.name]
        if not dataclasses.is_dataclass(tp):
            continue
        parts += [f"**{f.name}**", "", "| key | type | default | meaning |", "|---|---|---|---|",
                  *rows(tp, f"{f.name}."), ""]
    return "\n".join(parts).rstrip()
