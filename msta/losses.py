"""Training losses as pure functions of tensors.

L = L_CE + alpha * L_CC (DESIGN §2):
- ``classification_loss``: cross entropy over ``logit_scale * cos(video, class prompt)`` for all C classes.
- ``infonce_loss``: symmetric video <-> caption InfoNCE, for caption data instead of class labels; optionally only
  some query rows of a batch gathered from several processes (each process's part of one global loss).
- ``consistency_loss``: the spatio-temporal consistency regulariser
  ``L_CC = mean_c [2 - cos(w_c, D_s,c) - cos(w_c, D_t,c)]``, with ``w_c`` the adapted text branch's class embedding
  and ``D_s,c`` / ``D_t,c`` the mean of the frozen branch's normalised description embeddings
  (``description_targets``).
- ``reference_distillation_loss``: an optional guard of zero-shot ability, not part of the paper (ZSCL-style, ICCV
  2023): the adapted model's distribution over a set of reference texts is pulled towards frozen CLIP's,
  ``L_RD = KL(p_frozen || p_adapted)``; see msta.engine.references.

Every function normalises its embeddings itself (cheap, and it makes the functions safe to call on raw encoder
outputs). ``logit_scale`` is always the multiplier itself, i.e. already exponentiated (CLIP: 100), a Python number
or a one-element tensor (0-dim, or (1,) as DeepSpeed needs it); a tensor that requires grad receives a gradient.
Nothing here holds state, calls a model or talks to other processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LossOutput",
    "classification_logits",
    "classification_loss",
    "consistency_loss",
    "description_targets",
    "infonce_loss",
    "reference_distillation_loss",
    "total_loss",
]

Scale = Union[float, Tensor]


@dataclass
class LossOutput:
    """The training objective and its parts, each a 0-dim tensor.

    Attributes:
        total: ``ce + alpha * cc + beta * rd``; the tensor to call ``backward()`` on.
        ce: the classification (or InfoNCE) term.
        cc: the consistency term, a 0-dim zero when the regulariser is off (so logging code never branches).
        rd: the reference-distillation term, None when it is off (then it is not logged).
    """

    total: Tensor
    ce: Tensor
    cc: Tensor
    rd: Optional[Tensor] = None

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats for logging: ``{"loss": .., "loss_ce": .., "loss_cc": ..[, "loss_rd": ..]}``."""
        out = {"loss": float(self.total.detach()), "loss_ce": float(self.ce.detach()),
               "loss_cc": float(self.cc.detach())}
        if self.rd is not None:
            out["loss_rd"] = float(self.rd.detach())
        return out


def _check_2d(name: str, x: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, embed_dim), got shape {tuple(x.shape)}")


def _check_scale(logit_scale: Scale) -> None:
    # Only Python numbers are checked by value: reading a tensor's value would force a device sync every step.
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
    elif not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0 (the exponentiated CLIP scale, e.g. 100), got {logit_scale}")


def _at_least_fp32(x: Tensor) -> Tensor:
    # Reductions in fp32 or better: bf16 loses the small differences that a logit scale of 100 amplifies.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def classification_logits(video_emb: Tensor, class_emb: Tensor, logit_scale: Scale) -> Tensor:
    """Scaled cosine similarities between clips and class embeddings.

    Args:
        video_emb: (B, E) clip embeddings, normalised or not.
        class_emb: (C, E) class (prompt) embeddings, normalised or not.
        logit_scale: the exponentiated scale (CLIP: 100), a number or a 0-dim / 1-element tensor.

    Returns:
        (B, C) logits ``logit_scale * cos(video_b, class_c)``.
    """
    _check_2d("video_emb", video_emb)
    _check_2d("class_emb", class_emb)
    if video_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(f"embedding sizes differ: video_emb {tuple(video_emb.shape)} vs "
                         f"class_emb {tuple(class_emb.shape)}")
    _check_scale(logit_scale)
    if isinstance(logit_scale, Tensor):
        logit_scale = logit_scale.reshape(())
    return logit_scale * (F.normalize(video_emb, dim=-1) @ F.normalize(class_emb, dim=-1).t())


def classification_loss(video_emb: Tensor, class_emb: Tensor, labels: Tensor, logit_scale: Scale) -> Tensor:
    """L_CE: cross entropy of each clip against all class prompts.

    Args:
        video_emb: (B, E) clip embeddings (normalised inside).
        class_emb: (C, E) class embeddings from the adapted text branch (normalised inside).
        labels: (B,) int64 class indices in [0, C).
        logit_scale: the exponentiated scale (CLIP: 100).

    Returns:
        0-dim tensor, the mean cross entropy over the batch.
    """
    logits = classification_logits(video_emb, class_emb, logit_scale)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match video_emb, "
                         f"got {tuple(labels.shape)}")
    return F.cross_entropy(_at_least_fp32(logits), labels.long())


def infonce_loss(video_emb: Tensor, text_emb: Tensor, logit_scale: Scale, *, rows: Optional[slice] = None) -> Tensor:
    """Symmetric InfoNCE between B clips and their B captions (row b of each is a positive pair).

    With ``rows``, only those pairs are queries (each against all B captions and all B clips): the part of the loss
    that one process owns when the batch is split across processes and gathered (``msta.engine.objective``). The
    mean of the parts over a partition of the B rows into equal slices is the full loss, and so is its gradient.

    Args:
        video_emb: (B, E) clip embeddings (normalised inside).
        text_emb: (B, E) caption embeddings, ``text_emb[b]`` describes ``video_emb[b]`` (normalised inside).
        logit_scale: the exponentiated scale (CLIP: 100).
        rows: the query rows (a slice of range(B)); None: all of them.

    Returns:
        0-dim tensor, ``(CE(video -> text) + CE(text -> video)) / 2`` averaged over the query rows; symmetric in
        its two embedding arguments.
    """
    if video_emb.shape != text_emb.shape:
        raise ValueError(f"infonce_loss needs paired (B, E) inputs, got video_emb {tuple(video_emb.shape)} and "
                         f"text_emb {tuple(text_emb.shape)}")
    rows = slice(None) if rows is None else rows
    target = torch.arange(video_emb.shape[0], device=video_emb.device)[rows]
    if target.numel() == 0:
        raise ValueError(f"infonce_loss: rows {rows} select no pair of the batch of {video_emb.shape[0]}")
    v2t = _at_least_fp32(classification_logits(video_emb[rows], text_emb, logit_scale))   # (b, B)
    t2v = _at_least_fp32(classification_logits(text_emb[rows], video_emb, logit_scale))   # (b, B)
    return 0.5 * (F.cross_entropy(v2t, target) + F.cross_entropy(t2v, target))


def reference_distillation_loss(video_emb: Tensor, ref_emb: Tensor, teacher_video_emb: Tensor,
                                teacher_ref_emb: Tensor, logit_scale: Scale) -> Tensor:
    """L_RD: keep the adapted model's answers over reference texts those of frozen CLIP.

    For each clip, ``p = softmax(logit_scale * cos(video, refs))`` over R reference texts, once with the adapted
    model (both towers adapted: this is what a later zero-shot query sees) and once with frozen CLIP, and
    ``L_RD = mean_b KL(p_frozen,b || p_adapted,b)``. Only the relative scores over the references are held, so the
    adapters stay free to add what the training labels need along directions the references do not read.

    Args:
        video_emb: (B, E) adapted clip embeddings (normalised inside).
        ref_emb: (R, E) adapted text-branch embeddings of the reference texts (normalised inside).
        teacher_video_emb: (B, E) frozen CLIP's embeddings of the same clips (no gradient expected).
        teacher_ref_emb: (R, E) frozen CLIP's embeddings of the same references (no gradient expected).
        logit_scale: the exponentiated scale (CLIP: 100), used for both distributions.

    Returns:
        0-dim tensor, >= 0, zero when the adapted scores equal the frozen ones up to a per-clip constant.
    """
    if video_emb.shape != teacher_video_emb.shape or ref_emb.shape != teacher_ref_emb.shape:
        raise ValueError(f"student and teacher shapes differ: video {tuple(video_emb.shape)} vs "
                         f"{tuple(teacher_video_emb.shape)}, references {tuple(ref_emb.shape)} vs "
                         f"{tuple(teacher_ref_emb.shape)}; encode the same clips and references with both")
    # in fp32 or better: under bf16 the teacher's video embedding is bf16 while its reference table is fp32
    video_emb, ref_emb, teacher_video_emb, teacher_ref_emb = map(
        _at_least_fp32, (video_emb, ref_emb, teacher_video_emb, teacher_ref_emb))
    student = F.log_softmax(classification_logits(video_emb, ref_emb, logit_scale), dim=-1)
    teacher = F.log_softmax(classification_logits(teacher_video_emb, teacher_ref_emb, logit_scale), dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True)


def description_targets(desc_emb: Tensor) -> Tensor:
    """Per-class L_CC target: the mean of the class's N normalised description embeddings.

    Each description embedding is L2-normalised before averaging, so every description weighs the same whatever the
    norm the encoder gave it. The mean is deliberately *not* renormalised: ``consistency_loss`` compares by cosine,
    which ignores the target's length, and skipping it keeps a degenerate (near-zero) mean from being blown up.

    Args:
        desc_emb: (C, N, E) frozen-branch embeddings of N descriptions (one type: spatial or temporal) per class.

    Returns:
        (C, E) targets, one per class.
    """
    if desc_emb.ndim != 3:
        raise ValueError(f"desc_emb must be (C, N, E), got shape {tuple(desc_emb.shape)}")
    if desc_emb.shape[1] == 0:
        raise ValueError("desc_emb has N = 0 descriptions per class; at least one is needed for a target")
    return F.normalize(desc_emb, dim=-1).mean(dim=1)


def consistency_loss(class_emb: Tensor, spatial_target: Tensor, temporal_target: Tensor) -> Tensor:
    """L_CC: pull each class embedding towards its spatial and temporal description targets.

    ``L_CC = mean_c [2 - cos(w_c, D_s,c) - cos(w_c, D_t,c)]``: 0 when ``w_c`` points along both targets, 4 when it
    points opposite to both. The targets come from the frozen branch and should carry no gradient (detach them
    before calling if they were not computed under ``torch.no_grad``); this function does not detach, so it stays a
    plain function of its inputs.

    Args:
        class_emb: (C, E) class embeddings ``w_c`` from the adapted text branch (any norm).
        spatial_target: (C, E) spatial targets ``D_s,c`` (any norm; see ``description_targets``).
        temporal_target: (C, E) temporal targets ``D_t,c`` (any norm).

    Returns:
        0-dim tensor, the mean over the C classes.
    """
    _check_2d("class_emb", class_emb)
    for name, target in (("spatial_target", spatial_target), ("temporal_target", temporal_target)):
        if target.shape != class_emb.shape:
            raise ValueError(f"{name} must match class_emb's shape {tuple(class_emb.shape)}, "
                             f"got {tuple(target.shape)}; pass one target per class in the same order")
    w = F.normalize(_at_least_fp32(class_emb), dim=-1)
    cos_s = (w * F.normalize(_at_least_fp32(spatial_target), dim=-1)).sum(-1)
    cos_t = (w * F.normalize(_at_least_fp32(temporal_target), dim=-1)).sum(-1)
    return (2.0 - cos_s - cos_t).mean()


def total_loss(
        video_emb: Tensor,
        class_emb: Tensor,
        labels: Tensor,
        logit_scale: Scale,
        *,
        spatial_target: Optional[Tensor] = None,
        temporal_target: Optional[Tensor] = None,
        alpha: float = 1.0,
) -> LossOutput:
    """The MSTA objective ``L = L_CE + alpha * L_CC`` for class-labelled clips.

    L_CC is included when both targets are given and ``alpha > 0``; otherwise ``cc`` is a zero and ``total == ce``
    (the paper's "MSTA without L_CC" runs).

    Args:
        video_emb: (B, E) clip embeddings.
        class_emb: (C, E) adapted-branch class embeddings; used by both terms.
        labels: (B,) int64 class indices in [0, C).
        logit_scale: the exponentiated scale (CLIP: 100).
        spatial_target: (C, E) spatial description targets, or None.
        temporal_target: (C, E) temporal description targets, or None.
        alpha: weight of L_CC (paper: 1.0).

    Returns:
        LossOutput(total, ce, cc), each a 0-dim tensor.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if (spatial_target is None) != (temporal_target is None):
        raise ValueError("give both spatial_target and temporal_target, or neither")
    ce = classification_loss(video_emb, class_emb, labels, logit_scale)
    if spatial_target is None or alpha == 0:
        cc = ce.new_zeros(())
        return LossOutput(total=ce, ce=ce, cc=cc)
    cc = consistency_loss(class_emb, spatial_target, temporal_target)
    return LossOutput(total=ce + alpha * cc, ce=ce, cc=cc)
