"""VideoCLIP: a frozen video-text backbone with adapters (docs/architecture.md contracts).

The backbone (:mod:`msta.models.backbones`: open_clip's frame-wise CLIP, or ViCLIP's joint space-time attention)
turns a clip into tokens and the final tokens into one embedding; VideoCLIP runs the blocks in between in pieces
(frozen prefix without autograd, adapted suffix) without knowing the family. The text side encodes class prompts
(cached where constant, DESIGN §3), captions, or runs as the frozen teacher.

Under DeepSpeed ZeRO-3 call the engine, i.e. ``forward``, not ``encode_*``: CLIP's own parameters are gathered
only inside a forward pass (``forward(video, texts=None, frozen_texts=None)`` covers every use).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from msta.config import ConfigError, ModelCfg
from msta.models import injection as inj
from msta.models.backbones.base import Backbone

__all__ = ["VideoCLIP", "VideoTextOutput", "ParamReport"]


@dataclass
class VideoTextOutput:
    """What ``VideoCLIP.forward`` returns.

    Attributes:
        video_emb: (B, E) L2-normalised video embeddings, or None when no video was given.
        class_emb: (C, E) L2-normalised class embeddings from the adapted text branch, or (N, E) caption
            embeddings when ``texts`` was given, or None when there is neither.
        logit_scale: () the exp of CLIP's frozen temperature parameter.
        frozen_emb: (N', E) L2-normalised frozen-teacher embeddings of ``frozen_texts``, or None.
        ref_emb: (R, E) L2-normalised adapted-branch embeddings of ``ref_texts``, or None.
        teacher_video_emb: (B, E) L2-normalised frozen-CLIP embeddings of ``video`` (no gradient), or None.
    """
    video_emb: Optional[Tensor]
    class_emb: Optional[Tensor]
    logit_scale: Tensor
    frozen_emb: Optional[Tensor] = None
    ref_emb: Optional[Tensor] = None
    teacher_video_emb: Optional[Tensor] = None


@dataclass
class ParamReport:
    """Trainable and total parameter counts plus the adapted block ranges."""
    trainable: int
    total: int
    blocks: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def line(self) -> str:
        """E.g. ``'trainable params: 1,744,000 / total: 151,364,865 (1.15%)'``."""
        return f"trainable params: {self.trainable:,} / total: {self.total:,} ({self.percent:.2f}%)"


def _numel(p: Tensor) -> int:
    return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 partitions leave p.numel() == 0


class VideoCLIP(nn.Module):
    """A backbone with MSTA / ST adapters injected, mapping videos and texts to one embedding space.

    Attributes:
        clip: the wrapped model (open_clip CLIP or ViCLIP; its adapted blocks replaced in place, keys unchanged).
        backbone: the :class:`~msta.models.backbones.base.Backbone` that knows ``clip``'s internals.
        adapters: every adapter module, registered once (``msta.<j>.{shared,text,visual}``, ``st.<j>.{attn,mlp}``).
        image_size: input side (int, or (H, W) when not square); image_mean, image_std: normalisation constants.
        preprocess: the backbone's full frame preparation (``eval_resize`` "crop" or "squash", interpolation).
        num_frames: T the model was configured for; context_length: the text context length.
        num_templates: M of the current class prompts (0 when none are set).
    """

    def __init__(self, clip: nn.Module, cfg: ModelCfg, tokenizer: Callable[..., Tensor],
                 backbone: Optional[Backbone] = None):
        """Args:
            clip: the backbone's model (modified in place: adapted blocks are wrapped).
            cfg: the model config (adapters, frames, perf switches).
            tokenizer: ``tokenizer(texts, context_length=L) -> (N, L)`` ids, e.g. ``open_clip.get_tokenizer(name)``.
            backbone: the backbone of ``clip``; default: found from the model's type (``backbone_of``).
        """
        super().__init__()
        from msta.models.backbones import backbone_of
        self.clip = clip
        self.backbone = backbone if backbone is not None else backbone_of(clip)
        injected = inj.inject_adapters(clip, cfg.msta, cfg.st_adapter, cfg.name, self.backbone)
        self.adapters = injected.adapters
        self._ctx = injected.ctx
        self._first_text, self._first_visual = injected.first_text, injected.first_visual
        self._block_summary = injected.blocks
        self.perf = cfg.perf
        self.model_name = cfg.name
        self.num_frames = cfg.num_frames
        self.context_length = self.backbone.context_length(clip)
        self.preprocess = self.backbone.preprocess(clip)
        self.image_size, self.image_mean, self.image_std = self.preprocess.size, self.preprocess.mean, \
            self.preprocess.std
        self._tokenizer = tokenizer
        self.num_templates = 0
        # non-persistent: moves with .to() but is not part of any checkpoint
        self.register_buffer("class_ids", None, persistent=False)
        self._class_cache: Optional[tuple[Tensor, Tensor]] = None  # (cut ids, prefix hidden states)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.clear_text_cache())

    # ------------------------------------------------------------------------------------------------ helpers

    def _prefix_context(self):
        # the blocks below the first adapted one carry no gradient: skip building their autograd graph
        return torch.no_grad() if self.perf.frozen_prefix_no_grad else contextlib.nullcontext()

    def _cut_length(self, ids: Tensor) -> int:
        # exact: positions after the pooled EOT token never influence it under the causal mask
        if not (self.perf.cut_text and self.backbone.can_cut_text(self.clip)):
            return ids.shape[1]
        return int(self.backbone.text_eot_positions(self.clip, ids).max()) + 1

    def _text_prefix(self, ids: Tensor) -> Tensor:
        """(N, L) ids -> (N, L, D) hidden states after the text blocks below the first adapted one."""
        bb = self.backbone
        with self._prefix_context():
            x = bb.text_embed(self.clip, ids)
            return inj.run_blocks(bb.text_blocks(self.clip), x, 0, self._first_text,
                                  bb.text_mask(self.clip, ids.shape[1]), frozen=bb.run_frozen_block)

    def _text_suffix(self, x: Tensor, ids: Tensor) -> Tensor:
        """(N, L, D) prefix states + (N, L) ids -> (N, E) unnormalised embeddings (adapted blocks and head)."""
        bb = self.backbone
        blocks = bb.text_blocks(self.clip)
        x = inj.run_blocks(blocks, x, self._first_text, len(blocks), bb.text_mask(self.clip, ids.shape[1]),
                           checkpointing=self.perf.grad_checkpointing, frozen=bb.run_frozen_block)
        return bb.text_head(self.clip, x, ids)

    def _encode_ids(self, ids: Tensor) -> Tensor:
        ids = ids[:, :self._cut_length(ids)]
        return self._text_suffix(self._text_prefix(ids), ids)

    # ------------------------------------------------------------------------------------------------ video

    def _video_prefix(self, video: Tensor) -> Tensor:
        """(B, T, C, H, W) -> tokens (backbone layout) after the visual blocks below the first adapted one."""
        if video.ndim != 5:
            raise ValueError(f"encode_video expects (B, T, C, H, W), got shape {tuple(video.shape)}; "
                             "stack clips as (B, T, C, H, W) (multi-view batches: fold the views into B)")
        t = video.shape[1]
        self._ctx.num_frames = t  # for callers that run the wrapped blocks without passing num_frames
        bb = self.backbone
        with self._prefix_context():
            x = bb.visual_embed(self.clip, video)
            return inj.run_blocks(bb.visual_blocks(self.clip), x, 0, self._first_visual, num_frames=t,
                                  frozen=bb.run_frozen_block)

    def _video_suffix(self, x: Tensor, num_frames: int) -> Tensor:
        """Prefix tokens -> (B, E) L2-normalised embeddings (adapted blocks, then the backbone's video head)."""
        bb = self.backbone
        blocks = bb.visual_blocks(self.clip)
        x = inj.run_blocks(blocks, x, self._first_visual, len(blocks), num_frames=num_frames,
                           checkpointing=self.perf.grad_checkpointing, frozen=bb.run_frozen_block)
        return F.normalize(bb.visual_head(self.clip, x, num_frames), dim=-1)

    @torch.no_grad()
    def _frozen_video_suffix(self, x: Tensor, num_frames: int) -> Tensor:
        """``_video_suffix`` with every visual adapter bypassed: frozen CLIP's embeddings, no grad."""
        with self._ctx.visual_bypassed():
            return self._video_suffix(x, num_frames)

    def encode_video(self, video: Tensor) -> Tensor:
        """Encodes clips (frame-wise CLIP: mean over time of the frame embeddings; ViCLIP: its CLS token).

        Args:
            video: (B, T, C, H, W) frames normalised as ``self.preprocess`` says.

        Returns:
            (B, E) L2-normalised video embeddings.
        """
        return self._video_suffix(self._video_prefix(video), video.shape[1])

    @torch.no_grad()
    def encode_video_frozen(self, video: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, E) L2-normalised embeddings of frozen CLIP (visual adapters bypassed, no grad)."""
        return self._frozen_video_suffix(self._video_prefix(video), video.shape[1])

    # ------------------------------------------------------------------------------------------------ text

    @property
    def text_device(self) -> torch.device:
        """Where token ids must go (the device of the text tower's token embedding)."""
        return self.backbone.text_device(self.clip)

    def tokenize(self, texts: Sequence[str] | str) -> Tensor:
        """Texts -> (N, context_length) token ids with the model's own tokenizer (CPU tensor)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._tokenizer(texts, context_length=self.context_length)

    def encode_text(self, ids: Tensor) -> Tensor:
        """(N, L) ids -> (N, E) L2-normalised embeddings from the adapted text branch."""
        return F.normalize(self._encode_ids(ids), dim=-1)

    @torch.no_grad()
    def encode_text_frozen(self, ids: Tensor) -> Tensor:
        """(N, L) ids -> (N, E) L2-normalised embeddings of frozen CLIP (text adapters bypassed, no grad)."""
        with self._ctx.text_bypassed():
            return F.normalize(self._encode_ids(ids), dim=-1)

    def set_class_prompts(self, texts: Sequence[str], num_templates: int = 1) -> None:
        """Sets the class prompts used by ``encode_classes`` / ``forward`` and drops the cached text prefix.

        Args:
            texts: C * M prompts, class-major (the M templates of class 0 first, then class 1, ...).
            num_templates: M.
        """
        texts = list(texts)
        if num_templates < 1 or not texts or len(texts) % num_templates:
            raise ValueError(f"set_class_prompts got {len(texts)} prompts for num_templates={num_templates}; "
                             "pass C * M prompts, class-major, with M >= 1 templates per class")
        ids = self.tokenize(texts)
        # follow the parameters' device (the model may already have been moved by the engine)
        self.class_ids = ids.to(self.text_device)
        self.num_templates = num_templates
        self.clear_text_cache()

    def clear_text_cache(self) -> None:
        """Forgets the cached class-prompt prefix (recomputed lazily on the next use)."""
        self._class_cache = None

    def _class_prefix(self) -> tuple[Tensor, Tensor]:
        """(cut ids (C*M, L'), prefix states (C*M, L', D)) of the class prompts, cached when perf.cache_text."""
        device, dtype = self.text_device, self.backbone.text_dtype(self.clip)
        cached = self._class_cache
        if self.perf.cache_text and cached is not None and cached[1].device == device and cached[1].dtype == dtype:
            return cached
        ids = self.class_ids.to(device)
        ids = ids[:, :self._cut_length(ids)]
        if not self.perf.cache_text:
            return ids, self._text_prefix(ids)
        # constant while the prompts are; computed lazily here, inside forward, so that ZeRO-3 gathers the weights
        with torch.no_grad():
            self._class_cache = (ids, self._text_prefix(ids))
        return self._class_cache

    def encode_classes(self) -> Tensor:
        """(C, E): mean of the normalised template embeddings of each class, renormalised (adapted branch)."""
        if self.class_ids is None:
            raise ValueError("no class prompts set; call model.set_class_prompts(prompts, num_templates) first")
        ids, prefix = self._class_prefix()
        emb = F.normalize(self._text_suffix(prefix, ids), dim=-1)
        emb = rearrange(emb, "(c m) e -> c m e", m=self.num_templates).mean(dim=1)
        return F.normalize(emb, dim=-1)

    # ------------------------------------------------------------------------------------------------ forward

    def forward(self, video: Optional[Tensor] = None, texts: Optional[Tensor] = None,
                frozen_texts: Optional[Tensor] = None, with_classes: bool = True,
                ref_texts: Optional[Tensor] = None, teacher_video: bool = False) -> VideoTextOutput:
        """One call for every use, so that DeepSpeed ZeRO-3 can gather parameters.

        Args:
            video: (B, T, C, H, W) clips, or None.
            texts: (N, L) caption ids encoded by the adapted branch instead of the class prompts (InfoNCE data).
            frozen_texts: (N', L) ids encoded by the frozen teacher (consistency-loss descriptions).
            with_classes: encode the class prompts (when set and ``texts`` is None).
            ref_texts: (R, L) reference-text ids encoded by the adapted branch (reference distillation).
            teacher_video: also encode ``video`` with frozen CLIP, without gradient (reference distillation).

        Returns:
            VideoTextOutput(video_emb (B, E), class_emb (C, E) or (N, E), logit_scale (), frozen_emb (N', E),
            ref_emb (R, E), teacher_video_emb (B, E)); the parts not asked for are None.
        """
        video_emb = teacher = None
        if video is not None:
            x = self._video_prefix(video)
            video_emb = self._video_suffix(x, video.shape[1])
            if teacher_video:  # frozen CLIP shares the blocks below the first adapted one: run them once
                teacher = self._frozen_video_suffix(x, video.shape[1])
        if texts is not None:
            class_emb = self.encode_text(texts)
        elif with_classes and self.class_ids is not None:
            class_emb = self.encode_classes()
        else:
            class_emb = None
        frozen_emb = self.encode_text_frozen(frozen_texts) if frozen_texts is not None else None
        ref_emb = self.encode_text(ref_texts) if ref_texts is not None else None
        logit_scale = self.backbone.logit_scale(self.clip)
        return VideoTextOutput(video_emb, class_emb, logit_scale, frozen_emb, ref_emb, teacher)

    # ------------------------------------------------------------------------------------------------ params

    def freeze_backbone(self) -> None:
        """requires_grad False on every parameter except the adapters (whose parameters are set trainable)."""
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.adapters.parameters():
            p.requires_grad_(True)

    def param_report(self) -> ParamReport:
        """Counts (each parameter once) and the adapted block ranges."""
        params = list(self.parameters())
        return ParamReport(trainable=sum(_numel(p) for p in params if p.requires_grad),
                           total=sum(_numel(p) for p in params), blocks=list(self._block_summary))

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """The trainable tensors only, each once, keyed as in ``state_dict()``.

        Keys look like ``adapters.msta.8.shared.weight`` or ``adapters.st.3.mlp.fc1.weight`` (1-based block index).
        """
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        """Loads what ``adapter_state_dict`` saved; the key sets and shapes must match exactly."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ConfigError(f"adapter state dict does not match model '{self.model_name}' with {self._block_summary}:"
                             f" missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}),"
                             f" unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
                             f" ({len(unexpected)}); was it saved with the same model.msta / model.st_adapter config?")
        bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(p.shape)}"
               for k, p in params.items() if state[k].shape != p.shape]
        if bad:
            raise ConfigError(f"adapter state dict has wrong shapes (saved vs model): {bad[:10]}; "
                             "check model.msta.dim / model.st_adapter.width")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state[k])
