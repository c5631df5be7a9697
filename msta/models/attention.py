"""Self-attention of a batch-first ``nn.MultiheadAttention`` from its own weights, as 2-D GEMMs.

Batch-first ``nn.MultiheadAttention`` transposes its input to (L, N, D), so outside its fused inference path (eval
mode and no autograd) its q/k/v projection runs as a batched matmul with a broadcast weight, about 3x slower on CPU
than one GEMM. :func:`self_attention` computes the same attention on the contiguous tokens.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["self_attention"]


def self_attention(attn: nn.MultiheadAttention, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """Equals ``attn(x, x, x, need_weights=False, attn_mask=attn_mask)[0]`` (within float rounding).

    For the packed, bias-kv-free modules open_clip and ViCLIP build: the projections run on the contiguous
    (N*L, D) tokens instead of the transposed (L, N, D) ones.

    Args:
        attn: the module (``_qkv_same_embed_dim``, no ``bias_k`` / ``bias_v``, no ``add_zero_attn``).
        x: (N, L, D) tokens.
        attn_mask: (L, L) or (N * H, L, L) float mask added to the attention logits, or None.

    Returns:
        (N, L, D).
    """
    n, length, d = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # (N, L, 3D): one GEMM
    q, k, v = qkv.view(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (N, H, L, D / H) each
    if attn_mask is not None:
        # the layouts nn.MultiheadAttention hands to scaled_dot_product_attention
        shared = attn_mask.dim() == 2 or attn_mask.shape[0] == 1
        attn_mask = attn_mask.view(1 if shared else n, 1 if shared else heads, *attn_mask.shape[-2:])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                         dropout_p=attn.dropout if attn.training else 0.0)
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, d))
