"""Periodic evaluation during training: the number that picks the best checkpoint on the model-selection split.

- class labels: top-1 accuracy (single view by default), `evaluate_top1`;
- captions (loss.kind infonce): text -> video and video -> text Recall@1/5/10 and their mean R@1,
  `evaluate_retrieval`.

The full protocols (multi-view, zero-shot, base-to-novel) are in `msta.eval`. Both functions are collectives: every
rank runs the same number of forwards over its `EvalSampler` shard (under ZeRO-3 each forward gathers parameters
from all ranks); padded positions are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from msta.engine.distributed import all_gather_tensor, all_reduce_sum
from msta.engine.loaders import EvalSampler
from msta.engine.objective import model_forward, to_device
from msta.eval.retrieval import retrieval_metrics

__all__ = ["Selection", "top1_selection", "retrieval_selection", "evaluate_top1", "evaluate_retrieval"]


@dataclass(frozen=True)
class Selection:
    """How the trainer evaluates the selection split and which number picks the best checkpoint.

    Attributes:
        metric: the key of `evaluate`'s result compared across evaluations, higher is better ("top1", "mean_r1").
        evaluate: evaluate(engine, loader, device=, dtype=) -> metrics; a collective.
        describe: metrics -> the numbers of the log line, e.g. "top1 61.20 top5 88.00 (120 videos)".
    """
    metric: str
    evaluate: Callable[..., dict[str, float]]
    describe: Callable[[dict[str, float]], str]


def top1_selection() -> Selection:
    """Selection by top-1 accuracy over the class prompts (loss.kind classification)."""
    return Selection("top1", evaluate_top1, lambda m: f"top1 {m['top1']:.2f} top5 {m['top5']:.2f} "
                                                      f"({m['num_videos']:.0f} videos)")


def retrieval_selection(tokenize: Callable[[list[str]], torch.Tensor], text_batch: int = 64) -> Selection:
    """Selection by the mean of text -> video and video -> text R@1 (loss.kind infonce).

    Args:
        tokenize: the model's tokenizer, texts -> (N, L) ids.
        text_batch: captions per text forward.
    """
    def evaluate(engine, loader, *, device, dtype):
        return evaluate_retrieval(engine, loader, tokenize, device=device, dtype=dtype, text_batch=text_batch)

    def describe(m: dict[str, float]) -> str:
        return (f"t2v R@1/5/10 {m['t2v_r1']:.1f}/{m['t2v_r5']:.1f}/{m['t2v_r10']:.1f} v2t R@1/5/10 "
                f"{m['v2t_r1']:.1f}/{m['v2t_r5']:.1f}/{m['v2t_r10']:.1f} mean_r1 {m['mean_r1']:.2f} "
                f"({m['num_videos']:.0f} videos, {m['num_captions']:.0f} captions)")
    return Selection("mean_r1", evaluate, describe)


def _forward_views(engine, video: torch.Tensor):
    """Forwards (B, T, C, H, W) or (B, V, T, C, H, W) clips with the V views folded into the batch.

    Returns:
        (the model output for B * V clips, B, V).
    """
    b, views = video.shape[0], (video.shape[1] if video.ndim == 6 else 1)
    return model_forward(engine, video.flatten(0, 1) if video.ndim == 6 else video), b, views


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
        labels = batch["label"]
        out, b, views = _forward_views(engine, batch["video"])
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


def _gather_strided(local: torch.Tensor, world_size: int, total: int) -> torch.Tensor:
    """Rows held as rank r's j-th = global position j * W + r (`EvalSampler` order) -> (total, ...) in position order.

    Args:
        local: (P, ...) this rank's rows, P equal on all ranks (padded).
    """
    parts = all_gather_tensor(local)                                   # (W * P, ...), rank-major
    per_rank = local.shape[0]
    return parts.view(world_size, per_rank, *local.shape[1:]).transpose(0, 1).reshape(-1, *local.shape[1:])[:total]


@torch.no_grad()
def evaluate_retrieval(engine, loader, tokenize: Callable[[list[str]], torch.Tensor], *, device: torch.device,
                       dtype: torch.dtype, text_batch: int = 64) -> dict[str, float]:
    """Text <-> video retrieval on `loader`'s caption dataset (`CaptionDataset`, one item per video).

    Every video (its views' normalised embeddings averaged) and every caption are embedded by the adapted model,
    the embeddings are gathered from all ranks, and the ranks are computed with all captions of a video as its
    positives (`msta.eval.retrieval.retrieval_metrics`, pessimistic ties). A bad video (replaced by the dataset)
    leaves the gallery together with its captions. Collective: videos are sharded by the loader's `EvalSampler`,
    captions in the same strided way, padded so that every rank runs the same number of forwards.

    Returns:
        {"t2v_r1", "t2v_r5", "t2v_r10", "t2v_medr", "t2v_meanr", the same for v2t_, "mean_r1", "rsum",
        "num_videos", "num_captions"}: recalls in %, median / mean ranks (1-based), mean_r1 = (t2v_r1 + v2t_r1) / 2;
        counts of the videos and captions scored.
    """
    dataset, sampler = loader.dataset, loader.sampler
    rank, world = (sampler.rank, sampler.world_size) if isinstance(sampler, EvalSampler) else (0, 1)
    num_videos = len(dataset)
    was_training = engine.training
    engine.eval()

    embs, got = [], []
    for batch in loader:
        got.append(batch["index"])
        out, b, views = _forward_views(engine, to_device(batch, device, dtype)["video"])
        embs.append(F.normalize(out.video_emb.float().view(b, views, -1).mean(1), dim=-1))
    video_emb = _gather_strided(torch.cat(embs), world, num_videos)                     # (N, E)
    # the dataset replaces a bad video by another one; its position then holds the wrong video
    ok = _gather_strided(torch.cat(got).to(device), world, num_videos).cpu() == torch.arange(num_videos)

    texts = [c for caps in dataset.captions for c in caps]
    owner = torch.tensor([v for v, caps in enumerate(dataset.captions) for _ in caps])   # (Q,) video of each caption
    mine = [q if q < len(texts) else 0 for q in range(rank, world * -(-len(texts) // world), world)]
    text_embs = []
    for start in range(0, len(mine), text_batch):
        ids = tokenize([texts[q] for q in mine[start:start + text_batch]]).to(device)
        text_embs.append(model_forward(engine, None, texts=ids).class_emb.float())
    text_emb = _gather_strided(torch.cat(text_embs), world, len(texts))                # (Q, E)
    engine.train(was_training)

    keep = ok[owner]
    sim = (text_emb[keep.to(text_emb.device)] @ video_emb[ok.to(video_emb.device)].t()).cpu()   # (Q', N')
    column = torch.cumsum(ok.long(), 0) - 1                          # video position -> its column among the good
    metrics = retrieval_metrics(sim, column[owner[keep]])   # t2v_/v2t_ r1 r5 r10 medr meanr, mean_r1, rsum
    return {**metrics, "num_videos": float(ok.sum()), "num_captions": float(keep.sum())}
