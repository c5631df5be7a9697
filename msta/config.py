"""Typed experiment configuration: YAML files with `_base_` inheritance, dotted overrides, strict validation.

A config is validated once, here, into frozen dataclasses; nothing downstream receives a raw dict or an argparse
namespace. Unknown keys and wrong types are errors that name the key and suggest the closest valid one.

Example:
    cfg = load_config("configs/fewshot_hmdb.yaml", overrides=["data.shots=4", "optim.lr=5e-4"])
    cfg.model.msta.dim  # -> 128
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import UserError

__all__ = [
    "ConfigError", "MstaCfg", "StAdapterCfg", "PerfCfg", "ModelCfg", "ViewsCfg", "DataCfg", "TextCfg", "LossCfg",
    "OptimCfg", "TrainCfg", "EvalCfg", "ExperimentCfg", "load_config", "config_from_dict", "config_to_dict",
    "dump_config", "apply_overrides",
]


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message names the key, the value and the fix."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_blocks(name: str, blocks: tuple[int, int]) -> None:
    # negative indices count from the end (-1 = the last block), resolved against the model's depth when it is built
    a, b = blocks
    _check(a != 0 and b != 0 and (a <= b if (a > 0) == (b > 0) else a > 0),
           f"{name} must be [first, last] 1-based inclusive block indices with first <= last, negative ones counting "
           f"from the end ([-5, -1] = the last five blocks, [8, -1] = block 8 to the last), got {list(blocks)}")


@dataclass(frozen=True)
class MstaCfg:
    """Multi-modal spatio-temporal adapters (DESIGN §2): parallel to whole blocks of both encoders."""
    enabled: bool = True                      # add MSTA adapters
    text_blocks: tuple[int, int] = (-5, -1)   # 1-based, inclusive; < 0 from the end: last five (8-12 of ViT-B/16)
    vision_blocks: tuple[int, int] = (-5, -1)  # same rule; the towers share MSTA layers aligned at their last block
    dim: int = 128                            # bottleneck r
    scale: float = 0.005                      # lambda; forward scaled, parameter gradients not (gradient-scale trick)
    shared: bool = True                       # one Linear(r, r) per layer index used by both modalities
    text: bool = True                         # adapt the text encoder
    vision: bool = True                       # adapt the visual encoder
    temporal: bool = True                     # temporal Conv3d up-projection on the visual side
    temporal_kernel: int = 3                  # kernel over T (odd)
    temporal_cls: bool = False                # the temporal conv also runs over the per-frame CLS tokens

    def __post_init__(self):
        _check(self.dim > 0, f"model.msta.dim must be > 0, got {self.dim}")
        _check(self.scale > 0, f"model.msta.scale must be > 0, got {self.scale}")
        _check(self.temporal_kernel % 2 == 1, f"model.msta.temporal_kernel must be odd, got {self.temporal_kernel}")
        _check_blocks("model.msta.text_blocks", self.text_blocks)
        _check_blocks("model.msta.vision_blocks", self.vision_blocks)


@dataclass(frozen=True)
class StAdapterCfg:
    """ST-Adapters (Pan et al. 2022): fc1 -> depthwise temporal Conv3d (zero init) -> fc2 on patch tokens."""
    enabled: bool = False                     # add ST-Adapters (can be combined with MSTA)
    blocks: tuple[int, int] = (1, -1)         # 1-based, inclusive, visual blocks (negative: from the end)
    width: int = 384                          # bottleneck channels
    kernel: int = 3                           # temporal kernel
    positions: tuple[str, ...] = ("mlp",)     # any of "attn" (before attention), "mlp" (before the MLP)

    def __post_init__(self):
        _check(self.width > 0, f"model.st_adapter.width must be > 0, got {self.width}")
        _check(self.kernel % 2 == 1, f"model.st_adapter.kernel must be odd, got {self.kernel}")
        _check_blocks("model.st_adapter.blocks", self.blocks)
        bad = [p for p in self.positions if p not in ("attn", "mlp")]
        _check(not bad and len(self.positions) > 0,
               f"model.st_adapter.positions must be a non-empty subset of ['attn', 'mlp'], got {list(self.positions)}")


@dataclass(frozen=True)
class PerfCfg:
    """DESIGN §3 switches: what is constant is computed once. All on by default; benchmarks turn them off."""
    frozen_prefix_no_grad: bool = True        # no autograd graph below the first adapted block
    cache_text: bool = True                   # class-prompt token embeddings + frozen text prefix computed once
    cut_text: bool = True                     # cut text sequences to the longest prompt (exact: causal mask + EOT)
    cache_descriptions: bool = True           # description embeddings cached on disk, keyed by model/weights/text
    grad_checkpointing: bool = False          # activation checkpointing of the adapted blocks


@dataclass(frozen=True)
class ModelCfg:
    name: str = "ViT-B-16"                    # any open_clip model name, or one of msta's tiny registered configs
    pretrained: Optional[str] = None          # open_clip tag (downloads only then), a local file, or None (random)
    num_frames: int = 8                       # frames per clip T
    msta: MstaCfg = field(default_factory=MstaCfg)
    st_adapter: StAdapterCfg = field(default_factory=StAdapterCfg)
    perf: PerfCfg = field(default_factory=PerfCfg)
    init_adapters: str = ""                   # adapters file to start training from (e.g. a K400 run); "" = scratch
    quick_gelu: bool | str = "auto"           # QuickGELU: auto = the tag's own (file: its cache tag or the config's)

    def __post_init__(self):
        _check(self.num_frames >= 1, f"model.num_frames must be >= 1, got {self.num_frames}")
        _check(self.quick_gelu in (True, False, "auto"),
               f"model.quick_gelu must be auto, true or false, got {self.quick_gelu!r}")


@dataclass(frozen=True)
class ViewsCfg:
    """Test-time views: temporal clips x spatial crops, softmax scores summed over views."""
    clips: int = 1                            # temporal clips per video
    crops: int = 1                            # 1 = centre crop, 3 = three crops along the long side

    def __post_init__(self):
        _check(self.clips >= 1, f"views.clips must be >= 1, got {self.clips}")
        _check(self.crops in (1, 3), f"views.crops must be 1 or 3, got {self.crops}")


@dataclass(frozen=True)
class DataCfg:
    dataset: str = "hmdb51"                   # key into prompts/<dataset>.yaml
    root: str = "data/hmdb51/videos"          # video paths in the lists are relative to this
    class_table: str = ""                     # `id,name` CSV (not needed with loss.kind infonce)
    train_list: str = ""                      # `relative/path.ext <label_id>` lines (infonce: `path<TAB>caption`)
    val_list: str = ""                        # held-out list for best-checkpoint selection ("" = split from train)
    test_list: str = ""                       # evaluation list (val/test lists: same format as train_list)
    shots: int = 0                            # >0: draw K videos per class from train_list with data.seed
    seed: int = 1                             # seed of the few-shot draw and the hold-out
    val_fraction: float = 0.1                 # part of the training data held out for model selection
    select_on: str = "val"                    # "val" (held out from train) or "test" (the peers' habit; reported)
    input_size: int = 224                     # crop size fed to the model (the model's image size)
    eval_resize: str = "crop"                 # eval frames: "crop" (CLIP) or "squash" (ViCLIP: bicubic, no crop)
    sampling: str = "segment"                 # "segment" (TSN) or "dense"
    stride: int = 2                           # dense sampling stride
    backend: str = "decord"                   # "decord" or "pyav"
    flip: bool = True                         # horizontal flip in training (off for SSv2)
    color_jitter: float = 0.8                 # probability
    grayscale: float = 0.2                    # probability
    num_workers: int = 2                      # DataLoader worker processes
    max_bad_fraction: float = 0.05            # stop with a report when more of the videos are bad
    min_frames: int = 1                       # fewer decodable frames = bad video; shorter clips repeat frames
    views: ViewsCfg = field(default_factory=ViewsCfg)

    def __post_init__(self):
        _check(self.sampling in ("segment", "dense"),
               f"data.sampling must be 'segment' or 'dense', got {self.sampling!r}")
        _check(self.backend in ("decord", "pyav"), f"data.backend must be 'decord' or 'pyav', got {self.backend!r}")
        _check(self.select_on in ("val", "test"), f"data.select_on must be 'val' or 'test', got {self.select_on!r}")
        _check(self.shots >= 0, f"data.shots must be >= 0, got {self.shots}")
        _check(0.0 <= self.val_fraction < 1.0, f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        _check(0.0 <= self.max_bad_fraction <= 1.0,
               f"data.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        _check(self.input_size > 0, f"data.input_size must be > 0, got {self.input_size}")
        _check(self.eval_resize in ("crop", "squash"),
               f"data.eval_resize must be 'crop' (short side, centre crop) or 'squash' (whole frame to the input "
               f"size, bicubic, no crop: ViCLIP's), got {self.eval_resize!r}")
        _check(self.min_frames >= 1, f"data.min_frames must be >= 1, got {self.min_frames}")


@dataclass(frozen=True)
class TextCfg:
    prompts_dir: str = "prompts"              # holds templates.yaml and <dataset>.yaml
    templates: str = "default"                # template set name in templates.yaml
    ensemble: bool = False                    # True: all templates of the set, mean of normalised embeddings
    num_descriptions: int = 2                 # N spatial and N temporal descriptions per class for L_CC
    fallback_raw_names: bool = False          # a class without a readable name uses its raw label (logged)

    def __post_init__(self):
        _check(self.num_descriptions >= 1, f"text.num_descriptions must be >= 1, got {self.num_descriptions}")


@dataclass(frozen=True)
class LossCfg:
    kind: str = "classification"              # "classification" (CE over class prompts) or "infonce" (captions)
    consistency: bool = True                  # the spatio-temporal consistency regulariser L_CC
    alpha: float = 1.0                        # L = L_CE + alpha * L_CC
    distill: float = 0.0                      # L += distill * L_RD, reference distillation (0 = off, as the paper)
    distill_texts: str = ""                   # file of reference texts for L_RD, one per line (when distill > 0)
    distill_sample: int = 64                  # references drawn per step (all of them when fewer)
    negatives: str = "global"                 # infonce: "global" = all ranks' pairs (gathered with gradient: equals
                                              # 1 process at the same global batch); "local" = own micro batch only

    def __post_init__(self):
        _check(self.kind in ("classification", "infonce"),
               f"loss.kind must be 'classification' or 'infonce', got {self.kind!r}")
        _check(self.alpha >= 0, f"loss.alpha must be >= 0, got {self.alpha}")
        _check(self.distill >= 0, f"loss.distill must be >= 0, got {self.distill}")
        _check(self.distill == 0 or bool(self.distill_texts),
               f"loss.distill={self.distill} needs loss.distill_texts, a file of reference texts (one per line), "
               "e.g. prompts/reference_concepts.txt; or set loss.distill=0")
        _check(self.distill_sample >= 1, f"loss.distill_sample must be >= 1, got {self.distill_sample}")
        _check(self.negatives in ("global", "local"),
               f"loss.negatives must be 'global' (gathered from all ranks) or 'local', got {self.negatives!r}")


@dataclass(frozen=True)
class OptimCfg:
    lr: float = 1e-3                          # AdamW peak learning rate
    weight_decay: float = 1e-3                # AdamW weight decay (not on biases and 1-d tensors)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    eps: float = 1e-8                         # AdamW epsilon
    epochs: int = 50                          # training epochs
    warmup_epochs: float = 5.0                # linear warm-up from 0, then cosine
    min_lr: float = 1e-5                      # learning rate at the end of the cosine
    grad_clip: float = 1.0                    # 0 disables clipping

    def __post_init__(self):
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(self.epochs >= 1, f"optim.epochs must be >= 1, got {self.epochs}")
        _check(0 <= self.warmup_epochs <= self.epochs,
               f"optim.warmup_epochs must be in [0, optim.epochs={self.epochs}], got {self.warmup_epochs}")
        _check(0 <= self.min_lr <= self.lr, f"optim.min_lr must be in [0, optim.lr], got {self.min_lr}")


@dataclass(frozen=True)
class TrainCfg:
    out_dir: str = "runs/default"             # run folder: config, checkpoints, logs
    batch_size: int = 32                      # global batch = micro_batch * grad_accum * world size (checked)
    micro_batch: int = 8                      # clips per process per forward; accumulation fills the global batch
    zero_stage: int = 1                       # DeepSpeed ZeRO stage
    precision: str = "fp32"                   # "fp32", "bf16" or "fp16" (GPU only)
    seed: int = 1                             # seed of initialisation, data order and augmentation
    max_steps: int = 0                        # >0 caps the run (smoke tests, benchmarks)
    eval_every: int = 5                       # epochs between evaluations (0: only at the end)
    ckpt_every: int = 1                       # epochs between checkpoints
    log_every: int = 10                       # optimiser steps between console lines
    keep_last: int = 2                        # engine states kept for resuming

    def __post_init__(self):
        _check(self.precision in ("fp32", "bf16", "fp16"),
               f"train.precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        _check(self.zero_stage in (0, 1, 2, 3), f"train.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        _check(self.micro_batch >= 1 and self.batch_size >= self.micro_batch,
               f"train.batch_size ({self.batch_size}) must be >= train.micro_batch ({self.micro_batch}) >= 1")


@dataclass(frozen=True)
class EvalCfg:
    protocol: str = "fewshot"                 # "zeroshot", "fewshot", "b2n", "supervised" or "retrieval"
    batch_size: int = 8                       # videos per evaluation batch
    batch_views: bool = True                  # all views of a batch in one forward (GPU); false: view by view,
                                              # measured 1.34x faster on a 2-core CPU (docs/benchmarks.md)
    splits: tuple[str, ...] = ()              # test lists for multi-split protocols (zero-shot HMDB/UCF: 3 splits)
    class_tables: tuple[str, ...] = ()        # one class table per split where classes differ (K600 draws, b2n)
    half_class_draws: int = 0                 # >0: also the half-class variant with this many seeded draws
    views: ViewsCfg = field(default_factory=ViewsCfg)
    targets: tuple[str, ...] = ()             # zero-shot: configs whose data/text/eval name the target datasets
    video_pool: str = ""                      # which videos the lists draw from, stated in results.json
    dual_softmax: float = 0.0                 # retrieval: >0 adds a dual-softmax re-scored row with this inverse
                                              # temperature (1 = ViCLIP's raw cosine; transductive, labelled)

    def __post_init__(self):
        _check(self.protocol in ("zeroshot", "fewshot", "b2n", "supervised", "retrieval"),
               f"eval.protocol must be one of zeroshot, fewshot, b2n, supervised, retrieval; got {self.protocol!r}")
        _check(self.dual_softmax >= 0, f"eval.dual_softmax must be >= 0 (0 = off), got {self.dual_softmax}")
        _check(self.batch_size >= 1, f"eval.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ExperimentCfg:
    name: str = "experiment"
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    text: TextCfg = field(default_factory=TextCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)


# ----------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def _type_name(tp: Any) -> str:
    """`tuple[int, int]`, `str or None`: readable annotation names for messages and the reference."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _type_name(a) for a in args)
    if args:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{typing.get_origin(tp).__name__}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp` (after YAML parsing) and converts lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for a in inner[:-1]:  # e.g. `bool | str`: the first type that accepts the value
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        return _coerce(value, inner[-1], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r} ({type(value).__name__})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r} ({type(value).__name__})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r} ({type(value).__name__})")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r} ({type(value).__name__})")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover - schema bug


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"; did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint} (valid keys here: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - schema bug
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def config_from_dict(data: dict) -> ExperimentCfg:
    """Validates a plain dict (as read from YAML) into an `ExperimentCfg`."""
    return _build(ExperimentCfg, data)


def config_to_dict(cfg: Any) -> dict:
    """The inverse of `config_from_dict`, with tuples as lists (YAML-friendly)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return plain(cfg)


# ----------------------------------------------------------------------------------------------------------------
# files, inheritance, overrides


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in seen:
        raise ConfigError(f"_base_ cycle: {' -> '.join(str(p) for p in seen + (path,))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: dict = {}
    for b in bases:
        merged = _merge(merged, _read_yaml(path.parent / b, seen + (path,)))
    return _merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Applies `a.b.c=value` overrides (value parsed as YAML) to a nested dict."""
    data = _merge({}, data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value, e.g. data.shots=4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)}); quote it "
                              f"or fix the brackets, e.g. {key}='[1, 2]'") from None
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{p}' is not a section")
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> ExperimentCfg:
    """Reads a YAML config (following `_base_`), applies dotted overrides and validates.

    Raises:
        ConfigError: unknown key (with the closest valid key), wrong type or out-of-range value.
    """
    from .resources import list_shipped_configs, resolve_config_file

    found = resolve_config_file(path)   # a path, or the name of a shipped config (msta/resources.py: the rule)
    if not found.is_file():
        close = difflib.get_close_matches(Path(path).stem, list_shipped_configs(), n=3)
        hint = f"; shipped configs with a close name: {', '.join(close)}" if close else ""
        raise ConfigError(f"config file not found: {path} (looked in {Path.cwd()} and among the shipped configs; "
                          f"give a YAML path or a shipped config's name){hint}")
    data = apply_overrides(_read_yaml(found), overrides or [])
    try:
        return resolve_shipped_paths(config_from_dict(data))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve_shipped_paths(cfg: ExperimentCfg) -> ExperimentCfg:
    """``cfg`` with the keys that can name shipped files (``text.prompts_dir``, ``loss.distill_texts``,
    ``eval.targets``) resolved by the one path rule of ``msta.resources``: relative to the working directory, else
    the shipped copy. Values that exist in the working directory are kept as written."""
    from .resources import resolve_path

    return dataclasses.replace(
        cfg, text=dataclasses.replace(cfg.text, prompts_dir=resolve_path(cfg.text.prompts_dir)),
        loss=dataclasses.replace(cfg.loss, distill_texts=resolve_path(cfg.loss.distill_texts)),
        eval=dataclasses.replace(cfg.eval, targets=tuple(resolve_path(t) for t in cfg.eval.targets)))


def dump_config(cfg: ExperimentCfg, path: str | Path) -> None:
    """Writes the resolved config; `load_config` of the file gives `cfg` back."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

