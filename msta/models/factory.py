"""build_model: backbone (name + weights) -> inject adapters -> freeze -> log the parameter report.

The only place that resolves weight sources: ``cfg.pretrained`` is None (random init, no network), a local file
(a state dict or open_clip checkpoint; a released ViCLIP ``.pth`` / ``.safetensors``), or an open_clip pretrained tag
(the only case that may download). ``model.name`` ``viclip-b16`` / ``viclip-l14`` / ``viclip-tiny`` builds ViCLIP
(:mod:`msta.models.backbones.viclip`), any other name an open_clip CLIP ViT.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Iterator

import torch

from msta.config import ModelCfg
from msta.models.backbones import is_viclip_name
from msta.models.backbones.open_clip_build import SCHEMES, check_name, create_clip, resolve_pretrained
from msta.models.backbones.open_clip import make_logit_scale_1d
from msta.models.video_clip import VideoCLIP

__all__ = ["build_model", "MODEL_CONFIG_DIR", "register_model_configs"]

_logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


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


def build_model(cfg: ModelCfg) -> VideoCLIP:
    """Builds the frozen video-text model with adapters described by ``cfg``.

    Args:
        cfg: model config. ``cfg.pretrained``: None (random init), a local weights file, or an open_clip tag.

    Returns:
        A VideoCLIP on CPU in float32 whose only trainable parameters are the adapters; ``logit_scale`` is (1,).

    Raises:
        ConfigError: unknown or unsupported model name (with close names), a model.quick_gelu contradicting the tag.
        ValueError: a missing weights file, an unknown tag, or an adapter range beyond the model's blocks.
    """
    with _fixed_random_init(cfg.pretrained):
        clip, tokenizer, pretrained = _build_backbone(cfg)
    model = VideoCLIP(clip, cfg, tokenizer)
    model.freeze_backbone()
    report = model.param_report()
    _logger.info("built %s (weights: %s) adapters: %s", cfg.name, pretrained or "random init",
                 "; ".join(report.blocks) or "none")
    _logger.info(report.line())
    return model


@contextlib.contextmanager
def _fixed_random_init(pretrained: str | None) -> Iterator[None]:
    """Random-init backbones are drawn from seed 0, whatever the caller's RNG state.

    Why: an adapters file of a run on a random backbone (tests, experiments) records only ``pretrained: null``;
    every later build (evaluation, predict, another process) must give the same backbone for the adapters to mean
    anything. The caller's RNG stream (and so the adapters' own initialisation) is left untouched.
    """
    if pretrained:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _build_backbone(cfg: ModelCfg):
    """Returns (clip module, tokenizer, resolved weights source) for ``cfg``."""
    if is_viclip_name(cfg.name):
        from msta.models.backbones.viclip_weights import build_viclip, viclip_tokenizer
        clip = build_viclip(cfg.name, cfg.pretrained, cfg.quick_gelu)
        pretrained = cfg.pretrained or None
        _logger.info("%s activation: QuickGELU (ViCLIP's, both towers)", cfg.name)
        tokenizer = viclip_tokenizer(clip.text_encoder.context_length)
    else:
        register_model_configs()
        check_name(cfg.name)
        pretrained = None if cfg.name.startswith(SCHEMES) else resolve_pretrained(cfg.name, cfg.pretrained)
        clip, act = create_clip(cfg.name, pretrained, cfg.quick_gelu)
        _logger.info("%s activation: %s (%s)", cfg.name, act.activation, act.reason)
        # DeepSpeed's initial broadcast views every parameter as bytes, which fails for 0-dim tensors
        make_logit_scale_1d(clip)
        tokenizer = _tokenizer(cfg.name)
    return clip, tokenizer, pretrained
