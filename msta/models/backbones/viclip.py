"""ViCLIP (InternVid): a video-text model whose vision tower attends jointly over all frames' tokens.

Written from the facts in ``reference/viclip-and-retrieval.md`` §1-3 (no upstream code). State-dict keys and shapes
are those of the released checkpoints (``temp``, ``vision_encoder.*``, ``text_encoder.*``), so a released file
loads strictly (:mod:`msta.models.backbones.viclip_weights`).

Vision (``clip_joint``): Conv3d patch embedding with temporal kernel 1 and no bias; every frame's patches get the
spatial ``positional_embedding`` (its row 0 is the CLS slot) and the learned ``temporal_positional_embedding`` of
their frame; one CLS token per clip (class_embedding + positional_embedding[0], no temporal embedding); the sequence
is ``[CLS, patches]`` with the patches **patch-major, time-minor** (token ``1 + n*T + t``), ``ln_pre``, full joint
attention without a mask, ``ln_post``; the video feature is token 0 @ ``proj``. T = 1 adds the mean of the stored
temporal embeddings; any other T interpolates them linearly over time (logged; the released training code would
keep the first T when T < 8). Training-time token masking and drop-path do not
exist here (msta never trains the backbone). Text: CLIP's causal transformer with context 32, LayerNorms in fp32,
EOT pooling (argmax of the ids) and ``text_projection``. QuickGELU in both towers. ``temp`` is kept as a (1,)
parameter (DeepSpeed cannot broadcast 0-dim ones); the logit scale is ``1 / temp``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msta.config import ConfigError
from msta.models.attention import self_attention
from msta.models.backbones.base import Backbone, ImagePreprocess
from msta.models.layout import JOINT

__all__ = ["ViclipSize", "VICLIP_SIZES", "ViCLIP", "ViclipBackbone", "VICLIP", "QuickGELU", "IMAGENET_MEAN",
           "IMAGENET_STD"]

_logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViclipSize:
    """The shapes of one ViCLIP size (heads are not stored in checkpoints: width / 64 for the released ones)."""
    width: int
    layers: int
    heads: int
    patch: int
    image: int
    frames: int
    embed: int
    text_width: int
    text_layers: int
    text_heads: int
    context: int = 32
    vocab: int = 49408

    @property
    def label(self) -> str:
        return f"ViCLIP width {self.width}, {self.layers} blocks, patch {self.patch}"


VICLIP_SIZES: dict[str, ViclipSize] = {
    "viclip-b16": ViclipSize(768, 12, 12, 16, 224, 8, 512, 512, 12, 8),
    "viclip-l14": ViclipSize(1024, 24, 16, 14, 224, 8, 768, 768, 12, 12),
    # tests and the demo: the real tokenizer and context, tiny widths
    "viclip-tiny": ViclipSize(64, 2, 2, 8, 32, 8, 32, 64, 2, 2),
}


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the activation CLIP and ViCLIP were trained with."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return x * torch.sigmoid(1.702 * x)


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (ViCLIP's text tower)."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class ResidualBlock(nn.Module):
    """Pre-LN block ``x += attn(ln_1(x)); x += mlp(ln_2(x))`` with QuickGELU; keys as the released checkpoints.

    ``ls_1`` / ``ls_2`` are identities (no layer scale): they give the block the interface msta's adapters expect.
    """

    def __init__(self, width: int, heads: int, norm: type[nn.LayerNorm] = nn.LayerNorm):
        super().__init__()
        self.ln_1 = norm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1 = nn.Identity()
        self.ln_2 = norm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ls_2 = nn.Identity()

    def forward(self, q_x: Tensor, k_x: Optional[Tensor] = None, v_x: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None) -> Tensor:
        """(N, L, D) -> (N, L, D); ``k_x`` / ``v_x`` are ignored (self-attention)."""
        mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
        x = q_x + self.ls_1(self_attention(self.attn, self.ln_1(q_x), mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    """``resblocks``: the block list (keys ``transformer.resblocks.N.*``)."""

    def __init__(self, width: int, layers: int, heads: int, norm: type[nn.LayerNorm] = nn.LayerNorm):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualBlock(width, heads, norm) for _ in range(layers)])


class VisionEncoder(nn.Module):
    """ViCLIP's joint space-time ViT (``vision_encoder.*``)."""

    def __init__(self, size: ViclipSize):
        super().__init__()
        w, p = size.width, size.patch
        self.patch, self.image_size, self.grid = p, size.image, size.image // p
        scale = w ** -0.5
        self.conv1 = nn.Conv3d(3, w, (1, p, p), stride=(1, p, p), bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, w))
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, size.frames, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, size.layers, size.heads)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, size.embed))
        self._logged_frames: set[int] = set()

    def temporal_embedding(self, num_frames: int) -> Tensor:
        """(T, D) temporal embedding for T frames: the stored table, its mean (T = 1) or resized over time."""
        table = self.temporal_positional_embedding[0]  # (F, D)
        stored = table.shape[0]
        if num_frames == stored:
            return table
        if num_frames == 1:
            return table.mean(dim=0, keepdim=True)
        if num_frames not in self._logged_frames:
            # any other T: linear over time, so T frames spread over a clip get the embeddings of the moments they
            # show (the released training code keeps the first T entries when T < 8: the clip's first half only)
            self._logged_frames.add(num_frames)
            _logger.info("ViCLIP: %d frames, temporal embedding trained for %d: using linear interpolation over time",
                         num_frames, stored)
        return F.interpolate(table.t()[None], size=num_frames, mode="linear", align_corners=False)[0].t()

    def embed(self, video: Tensor) -> Tensor:
        """(B, T, 3, H, W) frames -> (B, 1 + N*T, D) tokens (patch-major, time-minor) after ``ln_pre``."""
        b, t, _, h, w = video.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ConfigError(f"ViCLIP takes {self.image_size}x{self.image_size} frames, got {h}x{w}; "
                             f"set data.input_size={self.image_size}")
        x = self.conv1(video.permute(0, 2, 1, 3, 4).to(self.conv1.weight.dtype))  # (B, D, T, h, w)
        x = x.flatten(3).permute(0, 2, 3, 1)  # (B, T, N, D)
        pos = self.positional_embedding.to(x.dtype)
        x = x + pos[1:]
        x = x + self.temporal_embedding(t).to(x.dtype)[:, None]  # (T, 1, D) over the patches of each frame
        x = x.transpose(1, 2).flatten(1, 2)  # (B, N*T, D): patch-major, time-minor
        cls = (self.class_embedding.to(x.dtype) + pos[0]).expand(b, 1, -1)
        return self.ln_pre(torch.cat([cls, x], dim=1))

    def head(self, x: Tensor) -> Tensor:
        """(B, 1 + N*T, D) final tokens -> (B, E): CLS after ``ln_post`` @ ``proj``."""
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, video: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, E) unnormalised video features (all blocks)."""
        x = self.embed(video)
        for blk in self.transformer.resblocks:
            x = blk(x)
        return self.head(x)


class TextEncoder(nn.Module):
    """CLIP's causal text transformer with ViCLIP's context (``text_encoder.*``)."""

    def __init__(self, size: ViclipSize):
        super().__init__()
        d = size.text_width
        self.context_length = size.context
        self.token_embedding = nn.Embedding(size.vocab, d)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(size.context, d))
        self.transformer = Transformer(d, size.text_layers, size.text_heads, LayerNormFp32)
        self.ln_final = LayerNormFp32(d)
        self.text_projection = nn.Parameter(d ** -0.5 * torch.randn(d, size.embed))
        mask = torch.full((size.context, size.context), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)  # not in the released checkpoints

    def embed(self, ids: Tensor) -> Tensor:
        """(N, L) ids -> (N, L, D) token + positional embeddings (L <= context)."""
        dtype = self.transformer.resblocks[0].mlp.c_fc.weight.dtype
        return self.token_embedding(ids).to(dtype) + self.positional_embedding[:ids.shape[1]].to(dtype)

    def head(self, x: Tensor, ids: Tensor) -> Tensor:
        """(N, L, D) final tokens -> (N, E): ``ln_final`` at the EOT position (argmax id) @ ``text_projection``."""
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)] @ self.text_projection

    def forward(self, ids: Tensor) -> Tensor:
        """(N, L) ids -> (N, E) unnormalised text features (all blocks)."""
        x = self.embed(ids)
        mask = self.attn_mask[:ids.shape[1], :ids.shape[1]]
        for blk in self.transformer.resblocks:
            x = blk(x, attn_mask=mask)
        return self.head(x, ids)


class ViCLIP(nn.Module):
    """The two towers and ``temp``; keys ``temp``, ``vision_encoder.*``, ``text_encoder.*``.

    Attributes:
        size: the :class:`ViclipSize` it was built with; name: the msta model name.
    """

    def __init__(self, size: ViclipSize, name: str = "viclip"):
        super().__init__()
        self.size, self.name = size, name
        self.vision_encoder = VisionEncoder(size)
        self.text_encoder = TextEncoder(size)
        self.temp = nn.Parameter(torch.full((1,), 0.01))

    def encode_vision(self, video: Tensor) -> Tensor:
        """(B, T, 3, H, W) or (B, 3, H, W) (an image: T = 1) -> (B, E) unnormalised features."""
        return self.vision_encoder(video if video.ndim == 5 else video[:, None])

    def encode_text(self, ids: Tensor) -> Tensor:
        """(N, L) token ids -> (N, E) unnormalised features."""
        return self.text_encoder(ids)


class ViclipBackbone(Backbone):
    """ViCLIP behind msta's backbone interface (joint token layout)."""

    name = "viclip"
    layout = JOINT

    def text_blocks(self, model: ViCLIP) -> nn.ModuleList:  # noqa: D102
        return model.text_encoder.transformer.resblocks

    def visual_blocks(self, model: ViCLIP) -> nn.ModuleList:  # noqa: D102
        return model.vision_encoder.transformer.resblocks

    def context_length(self, model: ViCLIP) -> int:  # noqa: D102
        return int(model.text_encoder.context_length)

    def text_dtype(self, model: ViCLIP) -> torch.dtype:  # noqa: D102
        return model.text_encoder.transformer.resblocks[0].mlp.c_fc.weight.dtype

    def text_device(self, model: ViCLIP) -> torch.device:  # noqa: D102
        return model.text_encoder.token_embedding.weight.device

    def text_embed(self, model: ViCLIP, ids: Tensor) -> Tensor:  # noqa: D102
        return model.text_encoder.embed(ids)

    def text_mask(self, model: ViCLIP, length: int) -> Optional[Tensor]:  # noqa: D102
        return model.text_encoder.attn_mask[:length, :length]

    def text_eot_positions(self, model: ViCLIP, ids: Tensor) -> Tensor:  # noqa: D102
        return ids.argmax(dim=-1)

    def can_cut_text(self, model: ViCLIP) -> bool:  # noqa: D102
        return True  # causal mask and EOT pooling

    def text_head(self, model: ViCLIP, x: Tensor, ids: Tensor) -> Tensor:  # noqa: D102
        return model.text_encoder.head(x, ids)

    def visual_embed(self, model: ViCLIP, video: Tensor) -> Tensor:  # noqa: D102
        return model.vision_encoder.embed(video)

    def visual_head(self, model: ViCLIP, x: Tensor, num_frames: int) -> Tensor:  # noqa: D102
        return model.vision_encoder.head(x)

    def logit_scale(self, model: ViCLIP) -> Tensor:  # noqa: D102
        return (1.0 / model.temp).reshape(())  # = exp(ln(1 / temp)), open_clip's logit_scale.exp()

    def preprocess(self, model: ViCLIP) -> ImagePreprocess:  # noqa: D102
        return ImagePreprocess(model.vision_encoder.image_size, IMAGENET_MEAN, IMAGENET_STD,
                               eval_resize="squash", interpolation="bicubic")


VICLIP = ViclipBackbone()
