"""build_model: open_clip model (name + weights) -> inject adapters -> freeze -> log the parameter report.

The only place that resolves weight sources: ``cfg.pretrained`` is None (random init, no network), a local file
(a state dict or open_clip checkpoint), or an open_clip pretrained tag (the only case that may download).
"""
from __future__ import annotations

import difflib
import functools
import logging
import os
from pathlib import Path

from msta.config import ConfigError, ModelCfg
from msta.models.injection import make_logit_scale_1d
from msta.models.video_clip import VideoCLIP

__all__ = ["build_model", "MODEL_CONFIG_DIR", "register_model_configs"]

_logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_SCHEMES = ("hf-hub:", "local-dir:")


def register_model_configs() -> None:
    """Registers msta's tiny open_clip configs (``msta-tiny``, ``msta-demo``) once."""
    import open_clip
    if not all(p.stem in open_clip.list_models() for p in MODEL_CONFIG_DIR.glob("*.json")):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


@functools.lru_cache(maxsize=8)
def _tokenizer(name: str):
    # stateless and slow to build (BPE merges): one per model name
    import open_clip
    return open_clip.get_tokenizer(name)


def _check_name(name: str) -> None:
    import open_clip
    if name.startswith(_SCHEMES) or name in open_clip.list_models():
        return
    names = open_clip.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ConfigError(f"model.name={name!r} is not an open_clip model; {hint}"
                      f"see open_clip.list_models() ({len(names)} names, e.g. 'ViT-B-16', 'msta-tiny')")


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith((".", "~")) or value.lower().endswith(_WEIGHT_SUFFIXES)


def _resolve_pretrained(name: str, pretrained: str | None) -> str | None:
    """Returns what to pass to open_clip.create_model as ``pretrained``, or raises a ValueError that says why."""
    if pretrained is None or pretrained == "":
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if _looks_like_path(pretrained):
        raise ValueError(f"model.pretrained={pretrained!r}: no such file ({path.resolve()}); give an existing "
                         "weights file, an open_clip pretrained tag, or null for random init")
    import open_clip
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise ValueError(f"model.pretrained={pretrained!r} is neither a file nor an open_clip tag of {name!r}; "
                         f"tags for {name!r}: {tags or 'none'}")
    return pretrained


def build_model(cfg: ModelCfg) -> VideoCLIP:
    """Builds the frozen video-text model with adapters described by ``cfg``.

    Args:
        cfg: model config. ``cfg.pretrained``: None (random init), a local weights file, or an open_clip tag.

    Returns:
        A VideoCLIP on CPU in float32 whose only trainable parameters are the adapters; ``logit_scale`` is (1,).

    Raises:
        ConfigError: unknown model name (with close names).
        ValueError: a missing weights file, an unknown tag, or an adapter range beyond the model's blocks.
    """
    import open_clip
    register_model_configs()
    _check_name(cfg.name)
    pretrained = _resolve_pretrained(cfg.name, cfg.pretrained)
    if cfg.name.startswith(_SCHEMES):
        clip = open_clip.create_model(cfg.name)
    else:
        clip = open_clip.create_model(cfg.name, pretrained=pretrained)
    # DeepSpeed's initial broadcast views every parameter as bytes, which fails for 0-dim tensors
    make_logit_scale_1d(clip)
    tokenizer = _tokenizer(cfg.name)
    model = VideoCLIP(clip, cfg, tokenizer)
    model.freeze_backbone()
    report = model.param_report()
    _logger.info("built %s (weights: %s) adapters: %s", cfg.name, pretrained or "random init",
                 "; ".join(report.blocks) or "none")
    _logger.info(report.line())
    return model
