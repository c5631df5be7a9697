"""Backbones: one module per model family that knows its internals, behind one interface (:mod:`.base`).

* :mod:`.open_clip` / :mod:`.open_clip_build`: open_clip's plain CLIP ViTs (frame-wise; ``model.name`` any such
  open_clip name, e.g. ``ViT-B-16``);
* :mod:`.viclip` / :mod:`.viclip_weights`: ViCLIP (joint space-time attention; ``viclip-b16``, ``viclip-l14``,
  ``viclip-tiny``).
"""
from __future__ import annotations

from torch import nn

from msta.models.backbones.base import Backbone, ImagePreprocess

__all__ = ["Backbone", "ImagePreprocess", "backbone_of", "is_viclip_name"]


def is_viclip_name(name: str) -> bool:
    """True for the ViCLIP model names msta registers (``viclip-b16``, ``viclip-l14``, ``viclip-tiny``)."""
    from msta.models.backbones.viclip import VICLIP_SIZES
    return name in VICLIP_SIZES


def backbone_of(model: nn.Module) -> Backbone:
    """The backbone that knows ``model``'s internals (ViCLIP for msta's ViCLIP, open_clip otherwise)."""
    from msta.models.backbones.viclip import VICLIP, ViCLIP
    if isinstance(model, ViCLIP):
        return VICLIP
    from msta.models.backbones.open_clip import OPEN_CLIP
    return OPEN_CLIP
