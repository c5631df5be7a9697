"""Prompts: templates, readable class names and spatial/temporal descriptions, loaded from `prompts/`.

`prompts/templates.yaml` maps a set name to a list of templates, each with exactly one `{}` for the readable class
name. `prompts/<dataset>.yaml` maps each raw label (as the official annotations spell it) to its readable name and
its N spatial and N temporal descriptions (the targets of the consistency loss). This module only reads, checks and
renders text; tokenizing is the model's job, so open_clip is imported only inside `open_clip_token_counter`.
"""
from __future__ import annotations

import difflib
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import yaml

from ..errors import UserError

__all__ = [
    "CLIP_CONTEXT_LENGTH", "PromptError", "PromptSet", "check_lengths", "ensemble_embeddings", "load_prompts",
    "load_templates", "open_clip_token_counter", "prompts_from_config", "raw_to_name", "read_prompts_file",
    "render_prompts", "validate_template", "write_prompts_file",
]

_logger = logging.getLogger(__name__)

CLIP_CONTEXT_LENGTH = 77
TEMPLATES_FILE = "templates.yaml"
_TOP_KEYS = ("dataset", "source", "classes")
_CLASS_KEYS = ("name", "spatial", "temporal")
TokenCounter = Callable[[str], int]
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster on the 600-class files


class PromptError(UserError, ValueError):
    """A prompts file is missing, malformed or does not cover the classes asked for."""


# ----------------------------------------------------------------------------------------------------------------
# templates


def validate_template(template: Any, where: str) -> str:
    """Checks that `template` is a string with exactly one `{}` placeholder.

    Args:
        template: the value read from the file.
        where: "file: key[i]", used in the error.

    Returns:
        The template, unchanged.

    Raises:
        PromptError: not a string, no placeholder, several, a named one (`{label}`) or unbalanced braces.
    """
    if not isinstance(template, str) or not template.strip():
        raise PromptError(f"{where}: a template must be a non-empty string, got {template!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise PromptError(f"{where}: template {template!r} has unbalanced braces ({e}); "
                          "write literal braces as '{{' and '}}'") from None
    if fields != [""]:
        raise PromptError(f"{where}: template {template!r} must hold exactly one empty placeholder '{{}}' for the "
                          f"class name, found {len(fields)} ({fields}); e.g. 'a video of {{}}.'")
    return template


def load_templates(prompts_dir: str | Path, name: str = "default", *, dataset: Optional[str] = None) -> list[str]:
    """Reads one template set from `<prompts_dir>/templates.yaml`.

    Args:
        prompts_dir: the directory holding templates.yaml.
        name: the set name. "default" resolves to the dataset's own set when `dataset` is given and the file has a
            set under that key (e.g. `ssv2`), because per-dataset sets exist to replace the default for that data.
        dataset: the dataset key, for the per-dataset default.

    Returns:
        The templates, in file order.

    Raises:
        PromptError: missing file or set (with the available set names), or a malformed template.
    """
    path = Path(prompts_dir) / TEMPLATES_FILE
    data = _read_yaml(path)
    for key, value in data.items():
        if not isinstance(value, list) or not value:
            raise PromptError(f"{path}: set '{key}' must be a non-empty list of templates, got {value!r}")
        for i, t in enumerate(value):
            validate_template(t, f"{path}: {key}[{i}]")
    key = name
    if name == "default" and dataset is not None and dataset in data:
        key = dataset
        _logger.info("templates: using the '%s' set of %s for dataset %s", key, path, dataset)
    if key not in data:
        close = difflib.get_close_matches(key, list(data), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise PromptError(f"{path}: no template set '{key}'{hint} (sets: {', '.join(data)}); add it to the file "
                          "or set text.templates to one of the sets")
    return list(data[key])


def render_prompts(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major prompts: `[t.format(n) for n in names for t in templates]` (C * M strings)."""
    return [t.format(n) for n in names for t in templates]


def ensemble_embeddings(embeddings: Any, num_templates: int) -> Any:
    """Template ensembling: mean of the normalised embeddings of each class's M prompts, renormalised.

    Args:
        embeddings: (C * M, E) tensor in the class-major order of `render_prompts`.
        num_templates: M.

    Returns:
        (C, E) tensor. Works with any torch tensor; torch is not imported here.
    """
    if embeddings.shape[0] % num_templates:
        raise ValueError(f"ensemble_embeddings: {embeddings.shape[0]} rows is not a multiple of "
                         f"num_templates={num_templates}; pass the C * M class-major embeddings of render()")
    e = embeddings / embeddings.norm(dim=-1, keepdim=True)
    e = e.reshape(-1, num_templates, e.shape[-1]).mean(dim=1)
    return e / e.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------------
# the per-dataset files


def raw_to_name(raw_label: str) -> str:
    """The fallback readable name: underscores become spaces (`brush_hair` -> `brush hair`)."""
    return " ".join(raw_label.replace("_", " ").split())


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise PromptError(f"prompts file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_SafeLoader)
    except yaml.YAMLError as e:
        raise PromptError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise PromptError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _text_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise PromptError(f"{where} must be a list of non-empty strings, got {value!r}")
    return [" ".join(s.split()) for s in value]


def read_prompts_file(path: str | Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Reads and structurally checks `prompts/<dataset>.yaml`.

    Returns:
        (dataset, classes) with classes[raw_label] = {"name": str or None, "spatial": [...], "temporal": [...]}.

    Raises:
        PromptError: naming the file and the key: unknown keys, wrong types, a dataset key that disagrees with the
            file name.
    """
    path = Path(path)
    data = _read_yaml(path)
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise PromptError(f"{path}: unknown top-level keys {unknown}; allowed: {', '.join(_TOP_KEYS)}")
    dataset = data.get("dataset")
    if dataset != path.stem:
        raise PromptError(f"{path}: 'dataset: {dataset}' must equal the file name '{path.stem}'")
    raw = data.get("classes")
    if not isinstance(raw, dict) or not raw:
        raise PromptError(f"{path}: 'classes' must be a non-empty mapping raw_label -> {{name, spatial, temporal}}")
    classes: dict[str, dict[str, Any]] = {}
    for label, entry in raw.items():
        where = f"{path}: classes.{label}"
        if not isinstance(label, str):
            raise PromptError(f"{where}: raw labels must be strings; quote it in the YAML")
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise PromptError(f"{where} must be a mapping with keys {', '.join(_CLASS_KEYS)}, got {entry!r}")
        bad = [k for k in entry if k not in _CLASS_KEYS]
        if bad:
            raise PromptError(f"{where}: unknown keys {bad}; allowed: {', '.join(_CLASS_KEYS)}")
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise PromptError(f"{where}.name must be a non-empty string, got {name!r}")
        classes[label] = {"name": " ".join(name.split()) if name else None,
                          "spatial": _text_list(entry.get("spatial"), f"{where}.spatial"),
                          "temporal": _text_list(entry.get("temporal"), f"{where}.temporal")}
    return dataset, classes


def write_prompts_file(path: str | Path, dataset: str, classes_dict: Mapping[str, Mapping[str, Any]], *,
                       source: str = "written by the msta team") -> Path:
    """Writes `classes_dict` (raw_label -> {name, spatial, temporal}) in the prompts format, then reads it back.

    The read-back is the check: whatever this writes, `load_prompts` accepts.
    """
    path = Path(path)
    if path.stem != dataset:
        raise PromptError(f"write_prompts_file: the file name {path.name} must be '<dataset>.yaml' = '{dataset}.yaml'")
    body = {"dataset": dataset, "source": source,
            "classes": {str(k): {"name": v.get("name") or raw_to_name(str(k)),
                                 "spatial": list(v.get("spatial", [])), "temporal": list(v.get("temporal", []))}
                        for k, v in classes_dict.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    # width: one description per line keeps the files reviewable in diffs
    tmp.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")
    tmp.replace(path)
    read_prompts_file(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# lengths


def open_clip_token_counter(model_name: Optional[str] = None) -> tuple[TokenCounter, int]:
    """A token counter for open_clip's tokenizer (imported here, lazily).

    Args:
        model_name: open_clip model name whose tokenizer to use; None uses CLIP's BPE `SimpleTokenizer`.

    Returns:
        (count, context_length): count(text) is the number of tokens including start and end of text.
    """
    import open_clip  # lazy: the text package must not need open_clip at import time

    tok = open_clip.get_tokenizer(model_name) if model_name else open_clip.SimpleTokenizer()
    context = int(getattr(tok, "context_length", None) or CLIP_CONTEXT_LENGTH)
    if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):
        return (lambda text: len(tok.encode(text)) + 2), context
    # other tokenizers (HF): tokenize without truncation pressure and count the non-padding ids
    return (lambda text: int((tok([text], context_length=4 * context) != 0).sum())), context


def check_lengths(texts: Mapping[str, Iterable[str]], count_tokens: TokenCounter,
                  context_length: int = CLIP_CONTEXT_LENGTH, *, source: str = "") -> None:
    """Fails when a text would be truncated by the text encoder.

    Args:
        texts: class (raw label) -> its texts (rendered prompts, descriptions).
        count_tokens: text -> token count including start/end tokens (see `open_clip_token_counter`).
        context_length: the encoder's context (77 for CLIP).
        source: file name for the error.

    Raises:
        PromptError: listing every too-long text with its class and length.
    """
    # every token covers at least one character of ASCII text, so short texts need no tokenizing (the templates)
    bad = [f"  {label}: {n} tokens: {t!r}" for label, ts in texts.items() for t in ts
           if not (t.isascii() and len(t) + 2 <= context_length) and (n := count_tokens(t)) > context_length]
    if bad:
        raise PromptError(f"{source or 'prompts'}: {len(bad)} text(s) exceed the text encoder's context of "
                          f"{context_length} tokens; shorten them:\n" + "\n".join(bad))


# ----------------------------------------------------------------------------------------------------------------
# the loaded set


@dataclass(frozen=True)
class PromptSet:
    """Everything the text side needs for one class table, in the table's order.

    Attributes:
        raw_labels: C raw labels, in class-id order.
        names: C readable names.
        templates: M templates.
        spatial: C lists of N spatial descriptions (empty lists when descriptions were not asked for).
        temporal: C lists of N temporal descriptions.
        dataset: the prompts file key.
    """
    raw_labels: list[str]
    names: list[str]
    templates: list[str]
    spatial: list[list[str]] = field(default_factory=list)
    temporal: list[list[str]] = field(default_factory=list)
    dataset: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.raw_labels)

    @property
    def num_templates(self) -> int:
        return len(self.templates)

    def render(self) -> list[str]:
        """Class-major prompts, C * M strings: class c's templates are rows c*M .. c*M+M-1."""
        return render_prompts(self.names, self.templates)

    def subset(self, raw_labels: Sequence[str]) -> "PromptSet":
        """The same prompts for a subset of the classes (base/novel splits), in the given order."""
        index = {r: i for i, r in enumerate(self.raw_labels)}
        missing = [r for r in raw_labels if r not in index]
        if missing:
            raise PromptError(f"PromptSet({self.dataset}).subset: unknown raw labels {missing}")
        ids = [index[r] for r in raw_labels]
        pick = (lambda xs: [xs[i] for i in ids] if xs else [])
        return PromptSet(list(raw_labels), pick(self.names), list(self.templates), pick(self.spatial),
                         pick(self.temporal), self.dataset)


def load_prompts(prompts_dir: str | Path, dataset: str, raw_labels: Sequence[str], *, templates: str = "default",
                 num_descriptions: int = 2, fallback_raw_names: bool = False, need_descriptions: bool = True,
                 ensemble: bool = True, count_tokens: Optional[TokenCounter] = None,
                 context_length: int = CLIP_CONTEXT_LENGTH) -> PromptSet:
    """Loads a dataset's prompts against its class table.

    Args:
        prompts_dir: directory with templates.yaml and <dataset>.yaml.
        dataset: the file key (hmdb51, ucf101, k400, k600, ssv2, ...).
        raw_labels: the class table's raw labels in id order.
        templates: template set name in templates.yaml ("default" picks the dataset's own set when there is one).
        num_descriptions: N; the first N spatial and N temporal descriptions of each class are used.
        fallback_raw_names: a class without an entry or name uses its raw label with underscores replaced (logged)
            instead of failing.
        need_descriptions: require N spatial and N temporal descriptions per class (the consistency loss).
        ensemble: False keeps only the first template of the set.
        count_tokens: optional token counter; with it, every rendered prompt and description is checked against
            `context_length`.
        context_length: the text encoder's context.

    Returns:
        The `PromptSet` in the order of `raw_labels`.

    Raises:
        PromptError: one error that lists every class lacking a name or descriptions and names the file to edit.
    """
    if num_descriptions < 1:
        raise PromptError(f"num_descriptions must be >= 1, got {num_descriptions}")
    if len(set(raw_labels)) != len(raw_labels):
        dup = sorted({r for r in raw_labels if list(raw_labels).count(r) > 1})
        raise PromptError(f"{dataset}: the class table repeats raw labels {dup}; fix the class table")
    temps = load_templates(prompts_dir, templates, dataset=dataset)
    temps = temps if ensemble else temps[:1]
    path = Path(prompts_dir) / f"{dataset}.yaml"
    if path.is_file():
        _, classes = read_prompts_file(path)
    elif fallback_raw_names and not need_descriptions:
        _logger.warning("prompts: %s not found; all %d classes use their raw labels as names", path, len(raw_labels))
        classes = {}
    else:
        raise PromptError(f"prompts file not found: {path}; write it (format: docs or prompts/hmdb51.yaml), import "
                          "published descriptions with scripts/import_descriptions.py, or generate them with "
                          "scripts/generate_descriptions.py")

    names, spatial, temporal, problems, fallbacks = [], [], [], [], []
    for label in raw_labels:
        entry = classes.get(label)
        why = []
        if entry is None:
            close = difflib.get_close_matches(label, list(classes), n=1, cutoff=0.8)
            no_entry = "no entry" + (f" (did you mean '{close[0]}'?)" if close else "")
            entry = {"name": None, "spatial": [], "temporal": []}
            if need_descriptions or not fallback_raw_names:
                why.append(no_entry)
        elif entry["name"] is None and not fallback_raw_names:
            why.append("no name")
        if need_descriptions and not (why and why[0].startswith("no entry")):
            why += [f"{len(entry[k])} {k} descriptions < {num_descriptions}"
                    for k in ("spatial", "temporal") if len(entry[k]) < num_descriptions]
        name = entry["name"]
        if name is None:
            name = raw_to_name(label)
            fallbacks.append(label)
        if why:
            problems.append(f"  {label}: {'; '.join(why)}")
        names.append(name)
        spatial.append(entry["spatial"][:num_descriptions])
        temporal.append(entry["temporal"][:num_descriptions])

    if problems:
        fix = "add a name" + (f" and >= {num_descriptions} spatial and temporal descriptions" * need_descriptions)
        hint = "" if fallback_raw_names or need_descriptions else " (or set text.fallback_raw_names=true)"
        raise PromptError(f"{path}: {len(problems)} of {len(raw_labels)} classes are incomplete; {fix} under "
                          f"'classes:' for each, keyed by the raw label{hint}:\n" + "\n".join(problems))
    if fallbacks:
        _logger.warning("prompts: %d classes of %s have no readable name and use their raw label: %s%s",
                        len(fallbacks), path, ", ".join(fallbacks[:10]), " ..." if len(fallbacks) > 10 else "")
    if count_tokens is not None:
        texts = {label: [t.format(n) for t in temps] + s + t_
                 for label, n, s, t_ in zip(raw_labels, names, spatial, temporal)}
        check_lengths(texts, count_tokens, context_length, source=str(path))
    return PromptSet(list(raw_labels), names, temps, spatial, temporal, dataset)


def prompts_from_config(cfg: Any, dataset: str, raw_labels: Sequence[str], *, need_descriptions: bool = True,
                        count_tokens: Optional[TokenCounter] = None) -> PromptSet:
    """`load_prompts` driven by a `msta.config.TextCfg`."""
    return load_prompts(cfg.prompts_dir, dataset, raw_labels, templates=cfg.templates,
                        num_descriptions=cfg.num_descriptions, fallback_raw_names=cfg.fallback_raw_names,
                        need_descriptions=need_descriptions, ensemble=cfg.ensemble, count_tokens=count_tokens)
