"""The training objective per micro batch: forward through the engine, then L = L_CE + alpha * L_CC (DESIGN §2),
plus beta * L_RD when reference distillation is on (``loss.distill``; msta.engine.references).

L_CC averages over the classes in the step. Every step encodes all C class prompts (they are the classifier of
L_CE), so all C classes are in every step; this also makes the loss independent of how the global batch is split
across processes and accumulation steps.

Caption batches (loss.kind infonce): with ``loss.negatives: global`` (default) the clip and caption embeddings of
every rank's micro batch are gathered with gradient (``all_gather_with_grad``), and each rank's loss is its own rows
as queries against all W * b pairs (``infonce_loss(rows=...)``). The mean over ranks, which is what the averaged
gradients descend, is then exactly the InfoNCE of one process holding all W * b pairs: a W-process run equals a
1-process run whose micro batch is the W micro batches together (the same global batch without accumulation;
gradient accumulation never adds negatives). ``local`` keeps each rank's micro batch as its own contrastive batch
(no communication; the loss then depends on the number of ranks). Either way two captions of one video in the same
contrastive batch count as negatives of each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from msta.config import LossCfg
from msta.engine.descriptions import DescriptionTargets
from msta.engine.distributed import all_gather_with_grad, get_rank
from msta.engine.references import ReferenceBank
from msta.losses import LossOutput, infonce_loss, reference_distillation_loss, total_loss

__all__ = ["Objective", "to_device", "model_forward"]


def model_forward(engine, *args, **kwargs):
    """Calls the engine (so ZeRO-3 gathers parameters) and returns the model's own output type.

    The engine wraps a `TupleOutput` (see deepspeed_setup), which returns a tuple; it is turned back here.
    """
    out = engine(*args, **kwargs)
    wrapper = getattr(engine, "module", engine)
    return wrapper.as_output(out) if isinstance(out, tuple) and hasattr(wrapper, "as_output") else out


def to_device(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Moves tensors to `device`; floating tensors (the video) also to the engine's compute dtype."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            out[k] = v.to(dtype) if v.is_floating_point() else v
        else:
            out[k] = v
    return out


@dataclass
class Objective:
    """Computes the loss of one micro batch.

    Attributes:
        cfg: loss kind, alpha and the consistency switch.
        targets: the description targets on the training device (None: no L_CC).
        tokenize: the model's tokenizer, for caption batches (loss.kind infonce: batch["text"] is a list of str).
        references: the reference texts of L_RD with their frozen embeddings (None: no L_RD).
    """
    cfg: LossCfg
    targets: Optional[DescriptionTargets]
    tokenize: Optional[Callable[[list[str]], torch.Tensor]] = None
    references: Optional[ReferenceBank] = None

    def __call__(self, engine, batch: dict, step: int = 0) -> LossOutput:
        """`engine` is the DeepSpeed engine (or the model): under ZeRO-3 only its forward gathers the parameters.

        `step` (the optimiser step) picks the step's reference texts, the same on every rank and micro batch.
        """
        extra, teacher_refs = {}, None
        if self.references is not None and self.cfg.distill > 0:
            ref_ids, teacher_refs = self.references.draw(step)
            extra = {"ref_texts": ref_ids, "teacher_video": True}
        if self.cfg.kind == "infonce":
            ids = self.tokenize(batch["text"]).to(batch["video"].device)
            out = model_forward(engine, batch["video"], texts=ids, **extra)
            ce = self._infonce(out)
            loss = LossOutput(total=ce, ce=ce, cc=ce.new_zeros(()))
        else:
            out = model_forward(engine, batch["video"], **extra)
            use_cc = self.cfg.consistency and self.targets is not None
            loss = total_loss(out.video_emb, out.class_emb, batch["label"], out.logit_scale,
                              spatial_target=self.targets.spatial if use_cc else None,
                              temporal_target=self.targets.temporal if use_cc else None, alpha=self.cfg.alpha)
        if teacher_refs is None:
            return loss
        rd = reference_distillation_loss(out.video_emb, out.ref_emb, out.teacher_video_emb, teacher_refs,
                                         out.logit_scale)
        return LossOutput(total=loss.total + self.cfg.distill * rd, ce=loss.ce, cc=loss.cc, rd=rd)

    def _infonce(self, out) -> torch.Tensor:
        """InfoNCE of the micro batch, its negatives gathered from all ranks unless ``loss.negatives`` is local."""
        if self.cfg.negatives == "local":
            return infonce_loss(out.video_emb, out.class_emb, out.logit_scale)
        b = out.video_emb.shape[0]
        videos, texts = all_gather_with_grad(out.video_emb), all_gather_with_grad(out.class_emb)   # (W * b, E)
        rank = get_rank()
        return infonce_loss(videos, texts, out.logit_scale, rows=slice(rank * b, (rank + 1) * b))
