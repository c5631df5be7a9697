"""Injection of adapters into open_clip 3.x CLIP blocks: the ONLY module that knows open_clip internals.

What it relies on (open_clip 3.3, plain ``CLIP``): text blocks at ``clip.transformer.resblocks`` and visual blocks at
``clip.visual.transformer.resblocks`` are ``ResidualAttentionBlock`` s with children ``ln_1, attn (batch_first
nn.MultiheadAttention), ls_1, ln_2, mlp, ls_2`` and ``forward(q_x, k_x=None, v_x=None, attn_mask=None)`` on
``(N, L, D)`` tokens. Adapted blocks are replaced by :class:`AdaptedBlock`, which re-registers the block's children
under their original names (pretrained keys such as ``visual.transformer.resblocks.3.attn.in_proj_weight`` are
unchanged) and only *references* its adapters, which are registered once in the ``adapters`` ModuleDict built here.

The tower helpers (``text_embed``, ``text_head``, ``visual_embed``, ``visual_head``, ``run_blocks``) let
``VideoCLIP`` run the towers in pieces (frozen prefix without autograd, cached text prefix) without knowing them.

Speed: batch-first ``nn.MultiheadAttention`` transposes its input to (L, N, D), so outside its fused inference
path (eval mode and no autograd) its q/k/v projection runs as a batched matmul with a broadcast weight, about 3x
slower on CPU than one GEMM. :func:`self_attention` computes the same attention from the module's own weights as
2-D GEMMs and ``F.scaled_dot_product_attention``; adapted blocks always use it, plain blocks whenever open_clip's
own call would miss the fused path (:func:`block_forward`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msta.config import MstaCfg, StAdapterCfg
from msta.models.adapters import MstaLayer, StAdapter

__all__ = [
    "InjectionContext", "AdaptedBlock", "Injection", "inject_adapters", "text_blocks", "visual_blocks",
    "self_attention", "block_forward",
    "text_cast_dtype", "text_embed", "text_mask", "text_head", "text_eot_positions", "can_cut_text",
    "visual_embed", "visual_head", "run_blocks", "make_logit_scale_1d", "image_preprocess_info",
]


@dataclass
class InjectionContext:
    """Mutable state shared by every adapted block of one model.

    Attributes:
        num_frames: T of the current visual batch, set by ``VideoCLIP.encode_video`` (used when a caller does not
            pass ``num_frames`` to the block itself, e.g. open_clip's own ``VisionTransformer.forward``).
        bypass_text: run the text blocks as frozen CLIP (the consistency-loss teacher).
        bypass_visual: run the visual blocks as frozen CLIP, ST-Adapters included (the distillation teacher).
    """
    num_frames: int = 1
    bypass_text: bool = False
    bypass_visual: bool = False

    @contextlib.contextmanager
    def _bypassed(self, attr: str) -> Iterator[None]:
        old = getattr(self, attr)
        setattr(self, attr, True)
        try:
            yield
        finally:
            setattr(self, attr, old)

    def text_bypassed(self) -> contextlib.AbstractContextManager[None]:
        """Context in which the text adapters are skipped."""
        return self._bypassed("bypass_text")

    def visual_bypassed(self) -> contextlib.AbstractContextManager[None]:
        """Context in which every visual adapter (MSTA and ST-Adapter) is skipped."""
        return self._bypassed("bypass_visual")

    def bypassed(self, modality: str) -> bool:
        """Whether the adapters of ``modality`` ("text" or "visual") are skipped now."""
        return self.bypass_text if modality == "text" else self.bypass_visual


class AdaptedBlock(nn.Module):
    """A ResidualAttentionBlock with its MSTA layer (parallel) and ST-Adapters (before attention / MLP).

    Keeps open_clip's positional call signature, plus an optional ``num_frames`` keyword (passed explicitly by
    VideoCLIP so that activation checkpointing recomputes with the same T).
    """

    def __init__(self, block: nn.Module, modality: str, ctx: InjectionContext, msta: Optional[MstaLayer] = None,
                 st_attn: Optional[StAdapter] = None, st_mlp: Optional[StAdapter] = None):
        super().__init__()
        missing = [n for n in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2") if not hasattr(block, n)]
        if missing or hasattr(block, "ln_1_kv") or not isinstance(block.attn, nn.MultiheadAttention):
            raise ValueError(f"cannot adapt {type(block).__name__}: msta supports open_clip's self-attention "
                             f"ResidualAttentionBlock (missing {missing}); use a plain open_clip CLIP ViT model")
        if not getattr(block.attn, "batch_first", False):
            raise ValueError("msta expects batch_first attention (open_clip >= 2.23 uses (N, L, D) tokens)")
        # same child names as the wrapped block, so its parameters keep their state-dict keys
        for name, child in block.named_children():
            self.add_module(name, child)
        for name, p in block.named_parameters(recurse=False):
            self.register_parameter(name, p)
        self.modality = modality
        # references only: the adapters are registered once, in VideoCLIP.adapters
        object.__setattr__(self, "_refs", (ctx, msta, st_attn, st_mlp))

    def get_weight_dtype(self) -> torch.dtype:
        """open_clip's Transformer.get_cast_dtype() asks block 0 for this; same answer as the wrapped block."""
        fc = self.mlp.c_fc
        return getattr(fc, "int8_original_dtype", None) or fc.weight.dtype

    def forward(self, q_x: Tensor, k_x: Optional[Tensor] = None, v_x: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None, num_frames: Optional[int] = None) -> Tensor:
        """(N, L, D) -> (N, L, D); k_x / v_x are ignored, as by open_clip's self-attention block."""
        ctx, msta, st_attn, st_mlp = self._refs
        t = num_frames if num_frames is not None else ctx.num_frames
        if ctx.bypassed(self.modality):
            st_attn = st_mlp = msta = None
        x = q_x if st_attn is None else st_attn(q_x, t)
        mask = attn_mask.to(x.dtype) if attn_mask is not None else None  # as open_clip's block does
        h = self.ln_1(x)
        x = x + self.ls_1(self_attention(self.attn, h, mask))
        if st_mlp is not None:
            x = st_mlp(x, t)
        x = x + self.ls_2(self.mlp(self.ln_2(x)))
        if msta is not None:
            # parallel to the whole block, on the block input, through the block's own frozen ln_1; without an
            # ST-Adapter before attention that is h itself, so the norm is not computed (and differentiated) twice
            normed = h if st_attn is None else None
            if self.modality == "text":
                x = x + msta.forward_text(q_x, self.ln_1, normed=normed)
            else:
                x = x + msta.forward_visual(q_x, self.ln_1, t, normed=normed)
        return x


@dataclass
class Injection:
    """What :func:`inject_adapters` did.

    Attributes:
        adapters: every adapter module, registered once (``msta.<j>``, ``st.<j>.attn``/``st.<j>.mlp``, 1-based j).
        ctx: the state shared by the adapted blocks.
        first_text: 0-based index of the first adapted text block (= number of text blocks if none).
        first_visual: 0-based index of the first adapted visual block (= number of visual blocks if none).
        blocks: readable summary lines, e.g. ``'text.8-12 msta r=128'``.
    """
    adapters: nn.ModuleDict
    ctx: InjectionContext
    first_text: int
    first_visual: int
    blocks: list[str] = field(default_factory=list)


def text_blocks(clip: nn.Module) -> nn.ModuleList:
    """The text tower's block list (plain open_clip CLIP)."""
    if not (hasattr(clip, "transformer") and hasattr(clip, "token_embedding")):
        raise ValueError(f"{type(clip).__name__} has no built-in text transformer; msta supports open_clip CLIP "
                         "ViT models (CustomTextCLIP / CoCa / SigLIP towers are not supported)")
    return clip.transformer.resblocks


def visual_blocks(clip: nn.Module) -> nn.ModuleList:
    """The visual tower's block list (open_clip VisionTransformer)."""
    vt = getattr(clip.visual, "transformer", None)
    if vt is None or not hasattr(vt, "resblocks"):
        raise ValueError(f"visual tower {type(clip.visual).__name__} is not an open_clip VisionTransformer; "
                         "msta adapts ViT models only (e.g. ViT-B-16), not ResNet / timm towers")
    return vt.resblocks


def resolve_range(name: str, blocks: tuple[int, int], n: int, model_name: str) -> tuple[int, int]:
    """1-based inclusive ``blocks`` (negative ones count from the end) -> absolute (first, last) within [1, n].

    Raises:
        ValueError: the range does not fit the ``n`` blocks of the tower (names the key and the fitting range).
    """
    first, last = (b if b > 0 else n + 1 + b for b in blocks)
    if not 1 <= first <= last <= n:
        shown = f"{list(blocks)}" + (f" (blocks {first}-{last})" if min(blocks) < 0 else "")
        raise ValueError(f"{name}={shown} exceeds the {n} blocks of '{model_name}'; "
                         f"set {name} to a range within [1, {n}], or count from the end, e.g. [-5, -1]")
    return first, last


def inject_adapters(clip: nn.Module, msta: MstaCfg, st: StAdapterCfg, model_name: str = "model") -> Injection:
    """Builds the adapters for ``clip`` and wraps the adapted blocks in place.

    Args:
        clip: an open_clip CLIP (ViT) model; its adapted ``resblocks[i]`` are replaced.
        msta: MSTA config (block ranges are 1-based, inclusive).
        st: ST-Adapter config (visual blocks only).
        model_name: used in error messages.

    Returns:
        The :class:`Injection` (adapters are new, trainable, default-dtype modules on CPU; the caller moves them).
    """
    tblocks, vblocks = text_blocks(clip), visual_blocks(clip)
    t_w, v_w = tblocks[0].ln_1.normalized_shape[0], vblocks[0].ln_1.normalized_shape[0]
    ctx = InjectionContext()
    adapters = nn.ModuleDict()
    summary: list[str] = []
    # MSTA layer keys align the two towers at their ends (block j of a tower of depth n is layer j + depth - n,
    # depth = the deeper tower's): equal depths keep the block index; ViT-L/14's text block 12 shares with visual 24
    depth = max(len(tblocks), len(vblocks))
    t_off, v_off = depth - len(tblocks), depth - len(vblocks)
    text_ids: set[int] = set()
    vis_msta: set[int] = set()
    if msta.enabled and msta.text:
        a, b = resolve_range("model.msta.text_blocks", msta.text_blocks, len(tblocks), model_name)
        text_ids = set(range(a, b + 1))
        keys = f" (layers {a + t_off}-{b + t_off})" if t_off else ""
        summary.append(f"text.{a}-{b} of {len(tblocks)} msta r={msta.dim}{keys}")
    if msta.enabled and msta.vision:
        a, b = resolve_range("model.msta.vision_blocks", msta.vision_blocks, len(vblocks), model_name)
        vis_msta = set(range(a, b + 1))
        tmp = (f" temporal k={msta.temporal_kernel}{' +cls' if msta.temporal_cls else ''}" if msta.temporal else "")
        keys = f" (layers {a + v_off}-{b + v_off})" if v_off else ""
        summary.append(f"visual.{a}-{b} of {len(vblocks)} msta r={msta.dim}{tmp}{keys}")
    t_keys, v_keys = {j + t_off for j in text_ids}, {j + v_off for j in vis_msta}
    layers = nn.ModuleDict()
    for j in sorted(t_keys | v_keys):
        # a layer index with one modality still owns its shared projection (MMA builds one per index)
        layers[str(j)] = MstaLayer(msta.dim, msta.scale, t_w if j in t_keys else None,
                                   v_w if j in v_keys else None, msta.shared, msta.temporal, msta.temporal_kernel,
                                   msta.temporal_cls)
    if len(layers):
        adapters["msta"] = layers
    vis_st: set[int] = set()
    if st.enabled:
        a, b = resolve_range("model.st_adapter.blocks", st.blocks, len(vblocks), model_name)
        vis_st = set(range(a, b + 1))
        sts = nn.ModuleDict()
        for j in sorted(vis_st):
            sts[str(j)] = nn.ModuleDict({p: StAdapter(v_w, st.width, st.kernel) for p in ("attn", "mlp")
                                         if p in st.positions})
        adapters["st"] = sts
        summary.append(f"visual.{a}-{b} of {len(vblocks)} st w={st.width} {'+'.join(st.positions)}")
    for j in text_ids:
        tblocks[j - 1] = AdaptedBlock(tblocks[j - 1], "text", ctx, msta=layers[str(j + t_off)])
    for j in vis_msta | vis_st:
        st_j = adapters["st"][str(j)] if j in vis_st else nn.ModuleDict()
        vblocks[j - 1] = AdaptedBlock(vblocks[j - 1], "visual", ctx,
                                      msta=layers[str(j + v_off)] if j in vis_msta else None,
                                      st_attn=st_j["attn"] if "attn" in st_j else None,
                                      st_mlp=st_j["mlp"] if "mlp" in st_j else None)
    first_text = min(text_ids) - 1 if text_ids else len(tblocks)
    first_visual = min(vis_msta | vis_st) - 1 if (vis_msta | vis_st) else len(vblocks)
    return Injection(adapters, ctx, first_text, first_visual, summary)


def self_attention(attn: nn.MultiheadAttention, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """Self-attention of a batch-first ``nn.MultiheadAttention`` from its own weights, as 2-D GEMMs.

    Equals ``attn(x, x, x, need_weights=False, attn_mask=attn_mask)[0]`` (within float rounding) for the packed,
    bias-kv-free modules open_clip builds: the projections run on the contiguous (N*L, D) tokens instead of the
    transposed (L, N, D) ones.

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
    stays bit-identical to plain open_clip); otherwise the same block is computed with :func:`self_attention`.
    """
    if not (blk.training or torch.is_grad_enabled()) or not _is_plain_block(blk):
        return blk(x, attn_mask=attn_mask)
    mask = attn_mask.to(x.dtype) if attn_mask is not None else None  # as open_clip's block does
    x = x + blk.ls_1(self_attention(blk.attn, blk.ln_1(x), mask))
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def run_blocks(blocks: nn.ModuleList, x: Tensor, start: int, stop: int, attn_mask: Optional[Tensor] = None,
               num_frames: Optional[int] = None, checkpointing: bool = False) -> Tensor:
    """Runs ``blocks[start:stop]`` on (N, L, D) tokens; adapted blocks optionally under activation checkpointing."""
    for blk in blocks[start:stop]:
        if not isinstance(blk, AdaptedBlock):
            x = block_forward(blk, x, attn_mask)
        elif checkpointing and torch.is_grad_enabled():
            x = checkpoint(blk, x, None, None, attn_mask, num_frames=num_frames, use_reentrant=False)
        else:
            x = blk(x, None, None, attn_mask, num_frames=num_frames)
    return x


def text_eot_positions(clip: nn.Module, ids: Tensor) -> Tensor:
    """(N, L) ids -> (N,) index of the token whose state the text tower pools."""
    eos = getattr(clip, "text_eos_id", None)
    if getattr(clip, "text_pool_type", "argmax") == "eos" and eos is not None:
        return (ids == eos).int().argmax(dim=-1)
    return ids.argmax(dim=-1)  # 'argmax': the EOT token has the largest id


def can_cut_text(clip: nn.Module) -> bool:
    """True when cutting the sequence after the pooled token is exact: causal mask and EOT pooling."""
    return getattr(clip, "attn_mask", None) is not None and getattr(clip, "text_pool_type", "") in ("argmax", "eos")


def text_cast_dtype(clip: nn.Module) -> torch.dtype:
    """The dtype open_clip casts text embeddings to (that of the text blocks' weights)."""
    return clip.transformer.get_cast_dtype()


def text_embed(clip: nn.Module, ids: Tensor) -> Tensor:
    """(N, L) ids -> (N, L, D) token + positional embeddings (L may be shorter than the context length)."""
    cast_dtype = text_cast_dtype(clip)
    x = clip.token_embedding(ids).to(cast_dtype)
    return x + clip.positional_embedding[:ids.shape[1]].to(cast_dtype)


def text_mask(clip: nn.Module, length: int) -> Optional[Tensor]:
    """The text tower's causal attention mask cut to (length, length), or None if it has none."""
    mask = clip.attn_mask
    return mask[:length, :length] if mask is not None else None


def text_head(clip: nn.Module, x: Tensor, ids: Tensor) -> Tensor:
    """(N, L, D) final text tokens + (N, L') ids -> (N, E) unnormalised text embeddings (ln_final, pool, proj)."""
    x = clip.ln_final(x)
    if getattr(clip, "text_pool_type", "argmax") in ("argmax", "eos"):
        x = x[torch.arange(x.shape[0], device=x.device), text_eot_positions(clip, ids)]
    elif clip.text_pool_type == "first":
        x = x[:, 0]
    elif clip.text_pool_type == "last":
        x = x[:, -1]
    proj = clip.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def visual_embed(clip: nn.Module, images: Tensor) -> Tensor:
    """(N, C, H, W) images -> (N, 1 + HW, D) tokens before the first block (patchify, CLS, pos, ln_pre)."""
    return clip.visual._embeds(images)


def visual_head(clip: nn.Module, x: Tensor) -> Tensor:
    """(N, 1 + HW, D) final tokens -> (N, E) unnormalised image embeddings (pool, ln_post, proj)."""
    pooled, _ = clip.visual._pool(x)
    proj = clip.visual.proj
    return pooled @ proj if proj is not None else pooled


def make_logit_scale_1d(clip: nn.Module) -> None:
    """Reshapes a 0-dim ``logit_scale`` to (1,): DeepSpeed's initial broadcast crashes on 0-dim parameters."""
    p = clip.logit_scale
    if p.dim() == 0:
        clip.logit_scale = nn.Parameter(p.detach().reshape(1), requires_grad=p.requires_grad)


def image_preprocess_info(clip: nn.Module) -> tuple[int | tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """(image_size, mean, std) of the visual tower (open_clip stores them on ``clip.visual``)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    size = clip.visual.image_size
    if isinstance(size, (tuple, list)):
        size = int(size[0]) if size[0] == size[1] else (int(size[0]), int(size[1]))
    mean = tuple(getattr(clip.visual, "image_mean", None) or OPENAI_DATASET_MEAN)
    std = tuple(getattr(clip.visual, "image_std", None) or OPENAI_DATASET_STD)
    return size, mean, std
