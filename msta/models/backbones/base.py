"""The backbone interface: everything VideoCLIP and the adapter injection need to know about one model family.

A backbone is a stateless object whose methods take the wrapped model (``VideoCLIP.clip``: an open_clip ``CLIP``
or msta's ``ViCLIP``). Adapters, VideoCLIP, losses, engine and eval only talk to this interface, so they never
branch on the model family. Implementations: :mod:`msta.models.backbones.open_clip` (frame-wise CLIP ViTs) and
:mod:`msta.models.backbones.viclip` (joint space-time attention).

Contract of the towers, for a backbone to take adapters: each tower's blocks are a ``nn.ModuleList`` of pre-LN
residual blocks with children ``ln_1, attn (batch-first nn.MultiheadAttention), ls_1, ln_2, mlp, ls_2`` and
``forward(q_x, k_x=None, v_x=None, attn_mask=None)`` on ``(N, L, D)`` tokens; visual tokens are in the backbone's
:attr:`layout`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from msta.models.layout import TokenLayout

__all__ = ["Backbone", "ImagePreprocess"]


@dataclass(frozen=True)
class ImagePreprocess:
    """How frames must be prepared for a backbone.

    Attributes:
        size: input side (int) or (H, W).
        mean, std: per-channel normalisation of [0, 1] RGB.
        eval_resize: "crop" (short side to size*256/224, centre crop: CLIP / ViFi-CLIP) or "squash" (resize the
            whole frame to size x size, aspect ratio not kept, no crop: ViCLIP's evaluation).
        interpolation: "bilinear" or "bicubic".
    """
    size: int | tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eval_resize: str = "crop"
    interpolation: str = "bilinear"


class Backbone:
    """One model family's internals (see the module docstring). Every method takes the wrapped model."""

    name = "abstract"
    layout: TokenLayout

    # ------------------------------------------------------------------------------------------------ towers
    def text_blocks(self, model: nn.Module) -> nn.ModuleList:
        """The text tower's residual blocks."""
        raise NotImplementedError

    def visual_blocks(self, model: nn.Module) -> nn.ModuleList:
        """The visual tower's residual blocks."""
        raise NotImplementedError

    def run_frozen_block(self, block: nn.Module, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """Runs a non-adapted block: (N, L, D) -> (N, L, D)."""
        return block(x, attn_mask=attn_mask)

    # ------------------------------------------------------------------------------------------------ text
    def context_length(self, model: nn.Module) -> int:
        """Text context length the tokenizer pads / cuts to."""
        raise NotImplementedError

    def text_dtype(self, model: nn.Module) -> torch.dtype:
        """The dtype the text embeddings are cast to (that of the text blocks' weights)."""
        raise NotImplementedError

    def text_device(self, model: nn.Module) -> torch.device:
        """Device of the token embedding (where token ids must go)."""
        raise NotImplementedError

    def text_embed(self, model: nn.Module, ids: Tensor) -> Tensor:
        """(N, L) ids -> (N, L, D) token + positional embeddings (L may be shorter than the context)."""
        raise NotImplementedError

    def text_mask(self, model: nn.Module, length: int) -> Optional[Tensor]:
        """The text tower's attention mask cut to (length, length), or None."""
        raise NotImplementedError

    def text_eot_positions(self, model: nn.Module, ids: Tensor) -> Tensor:
        """(N, L) ids -> (N,) index of the token whose final state is pooled."""
        raise NotImplementedError

    def can_cut_text(self, model: nn.Module) -> bool:
        """True when cutting the sequence after the pooled token is exact (causal mask and EOT pooling)."""
        raise NotImplementedError

    def text_head(self, model: nn.Module, x: Tensor, ids: Tensor) -> Tensor:
        """(N, L, D) final text tokens + (N, L) ids -> (N, E) unnormalised text embeddings."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ video
    def visual_embed(self, model: nn.Module, video: Tensor) -> Tensor:
        """(B, T, C, H, W) normalised frames -> tokens before the first block, in :attr:`layout`."""
        raise NotImplementedError

    def visual_head(self, model: nn.Module, x: Tensor, num_frames: int) -> Tensor:
        """Final tokens in :attr:`layout` -> (B, E) unnormalised video embeddings."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ misc
    def logit_scale(self, model: nn.Module) -> Tensor:
        """() the multiplier of cosine similarities (exp of CLIP's logit_scale; 1 / temp for ViCLIP)."""
        raise NotImplementedError

    def preprocess(self, model: nn.Module) -> ImagePreprocess:
        """How frames must be resized and normalised for this model."""
        raise NotImplementedError
