"""open_clip CLIP ViTs as a backbone: the ONLY module that knows open_clip's model internals.

What it relies on (open_clip 3.3, plain ``CLIP``): text blocks at ``clip.transformer.resblocks`` and visual blocks at
``clip.visual.transformer.resblocks`` are ``ResidualAttentionBlock`` s with children ``ln_1, attn (batch_first
nn.MultiheadAttention), ls_1, ln_2, mlp, ls_2`` and ``forward(q_x, k_x=None, v_x=None, attn_mask=None)`` on
``(N, L, D)`` tokens. The vision tower is frame-wise: a clip's frames are a batch of images (:data:`FRAMES` layout)
and the video embedding is the mean over T of the per-frame embeddings. Building (names, weights, activation) is in
:mod:`msta.models.backbones.open_clip_build`.

Speed: plain blocks run through open_clip's own call when it takes nn.MultiheadAttention's fused inference path
(eval mode and no autograd), otherwise from their own weights with :func:`~msta.models.attention.self_attention`.
"""
from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from msta.models.attention import self_attention
from msta.models.backbones.base import Backbone, ImagePreprocess
from msta.models.layout import FRAMES

__all__ = ["OpenClipBackbone", "OPEN_CLIP", "block_forward", "make_logit_scale_1d"]


def _is_plain_block(blk: nn.Module) -> bool:
    """True for an unmodified open_clip self-attention ResidualAttentionBlock that :func:`block_forward` can run."""
    from open_clip.transformer import ResidualAttentionBlock
    attn = getattr(blk, "attn", None)
    return (type(blk).forward is ResidualAttentionBlock.forward and isinstance(blk, ResidualAttentionBlock)
            and not hasattr(blk, "ln_1_kv") and isinstance(attn, nn.MultiheadAttention) and attn.batch_first
            and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn)


def block_forward(blk: nn.Module, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """Runs a frozen (non-adapted) block on (N, L, D) tokens -> (N, L, D), through the fastest exact route.

    In eval mode without autograd, open_clip's own call takes nn.MultiheadAttention's fused inference kernel (and
    stays bit-identical to plain open_clip); otherwise the same block is computed with ``self_attention``.
    """
    if not (blk.training or torch.is_grad_enabled()) or not _is_plain_block(blk):
        return blk(x, attn_mask=attn_mask)
    mask = attn_mask.to(x.dtype) if attn_mask is not None else None  # as open_clip's block does
    x = x + blk.ls_1(self_attention(blk.attn, blk.ln_1(x), mask))
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def make_logit_scale_1d(clip: nn.Module) -> None:
    """Reshapes a 0-dim ``logit_scale`` to (1,): DeepSpeed's initial broadcast crashes on 0-dim parameters."""
    p = clip.logit_scale
    if p.dim() == 0:
        clip.logit_scale = nn.Parameter(p.detach().reshape(1), requires_grad=p.requires_grad)


class OpenClipBackbone(Backbone):
    """open_clip's plain CLIP with a ViT vision tower, frame-wise."""

    name = "open_clip"
    layout = FRAMES

    def text_blocks(self, model: nn.Module) -> nn.ModuleList:  # noqa: D102
        if not (hasattr(model, "transformer") and hasattr(model, "token_embedding")):
            raise ValueError(f"{type(model).__name__} has no built-in text transformer; msta supports open_clip "
                             "CLIP ViT models (CustomTextCLIP / CoCa / SigLIP towers are not supported)")
        return model.transformer.resblocks

    def visual_blocks(self, model: nn.Module) -> nn.ModuleList:  # noqa: D102
        vt = getattr(model.visual, "transformer", None)
        if vt is None or not hasattr(vt, "resblocks"):
            raise ValueError(f"visual tower {type(model.visual).__name__} is not an open_clip VisionTransformer; "
                             "msta adapts ViT models only (e.g. ViT-B-16), not ResNet / timm towers")
        return vt.resblocks

    def run_frozen_block(self, block: nn.Module, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:  # noqa: D102
        return block_forward(block, x, attn_mask)

    def context_length(self, model: nn.Module) -> int:  # noqa: D102
        return int(model.context_length)

    def text_dtype(self, model: nn.Module) -> torch.dtype:  # noqa: D102
        return model.transformer.get_cast_dtype()

    def text_device(self, model: nn.Module) -> torch.device:  # noqa: D102
        return model.token_embedding.weight.device

    def text_embed(self, model: nn.Module, ids: Tensor) -> Tensor:  # noqa: D102
        cast_dtype = self.text_dtype(model)
        x = model.token_embedding(ids).to(cast_dtype)
        return x + model.positional_embedding[:ids.shape[1]].to(cast_dtype)

    def text_mask(self, model: nn.Module, length: int) -> Optional[Tensor]:  # noqa: D102
        mask = model.attn_mask
        return mask[:length, :length] if mask is not None else None

    def text_eot_positions(self, model: nn.Module, ids: Tensor) -> Tensor:  # noqa: D102
        eos = getattr(model, "text_eos_id", None)
        if getattr(model, "text_pool_type", "argmax") == "eos" and eos is not None:
            return (ids == eos).int().argmax(dim=-1)
        return ids.argmax(dim=-1)  # 'argmax': the EOT token has the largest id

    def can_cut_text(self, model: nn.Module) -> bool:  # noqa: D102
        return getattr(model, "attn_mask", None) is not None and \
            getattr(model, "text_pool_type", "") in ("argmax", "eos")

    def text_head(self, model: nn.Module, x: Tensor, ids: Tensor) -> Tensor:  # noqa: D102
        x = model.ln_final(x)
        if getattr(model, "text_pool_type", "argmax") in ("argmax", "eos"):
            x = x[torch.arange(x.shape[0], device=x.device), self.text_eot_positions(model, ids)]
        elif model.text_pool_type == "first":
            x = x[:, 0]
        elif model.text_pool_type == "last":
            x = x[:, -1]
        proj = model.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def visual_embed(self, model: nn.Module, video: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B*T, 1 + HW, D): every frame patchified as an image (CLS, pos, ln_pre)."""
        return model.visual._embeds(rearrange(video, "b t c h w -> (b t) c h w"))

    def visual_head(self, model: nn.Module, x: Tensor, num_frames: int) -> Tensor:
        """(B*T, 1 + HW, D) -> (B, E): per-frame pool, ln_post, proj, then the mean over T."""
        pooled, _ = model.visual._pool(x)
        proj = model.visual.proj
        emb = pooled @ proj if proj is not None else pooled
        return rearrange(emb, "(b t) e -> b t e", t=num_frames).mean(dim=1)

    def logit_scale(self, model: nn.Module) -> Tensor:  # noqa: D102
        return model.logit_scale.exp().reshape(())

    def preprocess(self, model: nn.Module) -> ImagePreprocess:  # noqa: D102
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        size = model.visual.image_size
        if isinstance(size, (tuple, list)):
            size = int(size[0]) if size[0] == size[1] else (int(size[0]), int(size[1]))
        mean = tuple(getattr(model.visual, "image_mean", None) or OPENAI_DATASET_MEAN)
        std = tuple(getattr(model.visual, "image_std", None) or OPENAI_DATASET_STD)
        return ImagePreprocess(size, mean, std, eval_resize="crop", interpolation="bilinear")


OPEN_CLIP = OpenClipBackbone()
