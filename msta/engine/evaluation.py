"""Periodic evaluation during training: top-1 accuracy on the model-selection split (single view by default).

The full protocols (multi-view, zero-shot, base-to-novel) are in `msta.eval`; this is the cheap number that picks
the best checkpoint. Counts are summed over ranks; padded positions of the `EvalSampler` are not counted.
"""
from __future__ import annotations

import torch

from msta.engine.distributed import all_reduce_sum
from msta.engine.loaders import EvalSampler
from msta.engine.objective import model_forward, to_device

__all__ = ["evaluate_top1"]


@torch.no_grad()
def evaluate_top1(engine, loader, *, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) of `engine` on `loader`; views (B, V, ...) are scored by summed softmax.

    Collective: every rank calls it with its own shard (`eval_loader`).
    """
    sampler = loader.sampler
    valid = sampler.valid_mask() if isinstance(sampler, EvalSampler) else None
    was_training = engine.training
    engine.eval()
    correct1 = correct5 = seen = 0
    pos = 0
    for batch in loader:
        batch = to_device(batch, device, dtype)
        video, labels = batch["video"], batch["label"]
        b = video.shape[0]
        views = video.shape[1] if video.ndim == 6 else 1
        out = model_forward(engine, video.flatten(0, 1) if video.ndim == 6 else video)
        logits = out.logit_scale.float().reshape(()) * out.video_emb.float() @ out.class_emb.float().t()
        scores = logits.softmax(-1).view(b, views, -1).sum(1)
        keep = valid[pos:pos + b].to(device) if valid is not None else torch.ones(b, dtype=torch.bool, device=device)
        pos += b
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        correct1 += int(((top[:, 0] == labels) & keep).sum())
        correct5 += int(((top == labels[:, None]).any(1) & keep).sum())
        seen += int(keep.sum())
    engine.train(was_training)
    totals = all_reduce_sum(torch.tensor([correct1, correct5, seen], dtype=torch.float64))
    n = max(1.0, float(totals[2]))
    return {"top1": 100.0 * float(totals[0]) / n, "top5": 100.0 * float(totals[1]) / n, "num_videos": float(totals[2])}
