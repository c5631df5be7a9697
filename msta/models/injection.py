"""Injection of adapters into a backbone's residual blocks, through the backbone interface only.

Adapted blocks are replaced by :class:`AdaptedBlock`, which re-registers the block's children under their original
names (pretrained keys such as ``visual.transformer.resblocks.3.attn.in_proj_weight`` are unchanged) and only
*references* its adapters, which are registered once in the ``adapters`` ModuleDict built here. What the blocks
must look like is stated in :mod:`msta.models.backbones.base`; the backbone gives the blocks, the way to run a
frozen one and the token layout the temporal adapters read.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msta.config import ConfigError, MstaCfg, StAdapterCfg
from msta.models.adapters import MstaLayer, StAdapter
from msta.models.attention import self_attention
from msta.models.backbones.base import Backbone
from msta.models.layout import FRAMES, TokenLayout

__all__ = ["InjectionContext", "AdaptedBlock", "Injection", "inject_adapters", "resolve_range", "run_blocks"]


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
                 st_attn: Optional[StAdapter] = None, st_mlp: Optional[StAdapter] = None,
                 layout: TokenLayout = FRAMES):
        super().__init__()
        missing = [n for n in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2") if not hasattr(block, n)]
        if missing or hasattr(block, "ln_1_kv") or not isinstance(block.attn, nn.MultiheadAttention):
            raise ValueError(f"cannot adapt {type(block).__name__}: msta supports pre-LN self-attention blocks "
                             f"(open_clip's ResidualAttentionBlock, ViCLIP's; missing {missing}); use a plain "
                             "open_clip CLIP ViT model or ViCLIP")
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
        self.layout = layout

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
        x = q_x if st_attn is None else st_attn(q_x, t, self.layout)
        mask = attn_mask.to(x.dtype) if attn_mask is not None else None  # as open_clip's block does
        h = self.ln_1(x)
        x = x + self.ls_1(self_attention(self.attn, h, mask))
        if st_mlp is not None:
            x = st_mlp(x, t, self.layout)
        x = x + self.ls_2(self.mlp(self.ln_2(x)))
        if msta is not None:
            # parallel to the whole block, on the block input, through the block's own frozen ln_1; without an
            # ST-Adapter before attention that is h itself, so the norm is not computed (and differentiated) twice
            normed = h if st_attn is None else None
            if self.modality == "text":
                x = x + msta.forward_text(q_x, self.ln_1, normed=normed)
            else:
                x = x + msta.forward_visual(q_x, self.ln_1, t, normed=normed, layout=self.layout)
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


def resolve_range(name: str, blocks: tuple[int, int], n: int, model_name: str) -> tuple[int, int]:
    """1-based inclusive ``blocks`` (negative ones count from the end) -> absolute (first, last) within [1, n].

    Raises:
        ValueError: the range does not fit the ``n`` blocks of the tower (names the key and the fitting range).
    """
    first, last = (b if b > 0 else n + 1 + b for b in blocks)
    if not 1 <= first <= last <= n:
        shown = f"{list(blocks)}" + (f" (blocks {first}-{last})" if min(blocks) < 0 else "")
        raise ConfigError(f"{name}={shown} exceeds the {n} blocks of '{model_name}'; "
                         f"set {name} to a range within [1, {n}], or count from the end, e.g. [{-min(n, 5)}, -1]")
    return first, last


def inject_adapters(clip: nn.Module, msta: MstaCfg, st: StAdapterCfg, model_name: str = "model",
                    backbone: Optional[Backbone] = None) -> Injection:
    """Builds the adapters for ``clip`` and wraps the adapted blocks in place.

    Args:
        clip: the backbone's model; its adapted blocks are replaced.
        msta: MSTA config (block ranges are 1-based, inclusive, negative from the end).
        st: ST-Adapter config (visual blocks only).
        model_name: used in error messages.
        backbone: the model's backbone (default: open_clip).

    Returns:
        The :class:`Injection` (adapters are new, trainable, default-dtype modules on CPU; the caller moves them).
    """
    if backbone is None:
        from msta.models.backbones.open_clip import OPEN_CLIP as backbone
    tblocks, vblocks = backbone.text_blocks(clip), backbone.visual_blocks(clip)
    layout = backbone.layout
    if msta.enabled and msta.vision and msta.temporal and msta.temporal_cls and not layout.per_frame_cls:
        raise ConfigError(f"model.msta.temporal_cls needs one CLS token per frame; '{model_name}' has one per clip "
                         "(joint space-time attention): set model.msta.temporal_cls=false")
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
                                      st_mlp=st_j["mlp"] if "mlp" in st_j else None, layout=layout)
    first_text = min(text_ids) - 1 if text_ids else len(tblocks)
    first_visual = min(vis_msta | vis_st) - 1 if (vis_msta | vis_st) else len(vblocks)
    return Injection(adapters, ctx, first_text, first_visual, summary)


def run_blocks(blocks: nn.ModuleList, x: Tensor, start: int, stop: int, attn_mask: Optional[Tensor] = None,
               num_frames: Optional[int] = None, checkpointing: bool = False,
               frozen: Optional[Callable[[nn.Module, Tensor, Optional[Tensor]], Tensor]] = None) -> Tensor:
    """Runs ``blocks[start:stop]`` on (N, L, D) tokens; adapted blocks optionally under activation checkpointing.

    ``frozen(block, x, mask)`` runs a non-adapted block (the backbone's ``run_frozen_block``; default: its call).
    """
    for blk in blocks[start:stop]:
        if not isinstance(blk, AdaptedBlock):
            x = frozen(blk, x, attn_mask) if frozen is not None else blk(x, attn_mask=attn_mask)
        elif checkpointing and torch.is_grad_enabled():
            x = checkpoint(blk, x, None, None, attn_mask, num_frames=num_frames, use_reentrant=False)
        else:
            x = blk(x, None, None, attn_mask, num_frames=num_frames)
    return x
