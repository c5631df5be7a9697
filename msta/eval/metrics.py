"""Evaluation metrics as pure functions (torch in, Python floats / numpy arrays out).

Conventions:
- ``scores`` are (N, C): one row per video, one column per class, higher is better (logits, probabilities or
  view-summed probabilities from ``aggregate_views``). ``labels`` are (N,) class indices in [0, C).
- Accuracies are percentages in [0, 100], as the papers report them.
- Retrieval (``retrieval_recall``) takes a (Q, G) query-gallery similarity and a (Q, G) boolean match matrix, so a
  video with several captions has several positives.
- Ties (see ``topk_accuracy``) are resolved pessimistically by default: a class that scores exactly as high as the
  true class counts as ranked ahead of it. A model that outputs constant scores therefore gets 0 % top-1, not a
  score that depends on the class order; torch.topk's order among equal values is unspecified, which is how
  some peer code reports different numbers for the same scores.

Every function accepts torch tensors, numpy arrays or nested lists.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "aggregate_views",
    "confusion_matrix",
    "harmonic_mean",
    "mean_class_accuracy",
    "mean_std",
    "per_class_accuracy",
    "predict",
    "retrieval_recall",
    "topk_accuracy",
    "topk_hits",
]

Ties = Literal["pessimistic", "optimistic"]


def _as_scores_labels(scores, labels) -> tuple[Tensor, Tensor]:
    scores = torch.as_tensor(scores).detach().cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be ({scores.shape[0]},) to match scores {tuple(scores.shape)}, "
                         f"got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]; is the class table the one the split uses?")
    if not scores.is_floating_point():
        scores = scores.double()
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; ranks are undefined (check the model output for overflow)")
    return scores, labels.long()


def topk_hits(scores, labels, k: int, *, ties: Ties = "pessimistic") -> Tensor:
    """Per-video top-k hit indicator.

    A video is a hit when fewer than ``k`` other classes rank ahead of its true class. With ``ties="pessimistic"``
    (default) every other class whose score equals the true class's score ranks ahead; with ``"optimistic"`` only
    strictly higher scores do. Without ties both agree.

    Args:
        scores: (N, C) class scores.
        labels: (N,) true class indices.
        k: rank cut-off, >= 1 (k >= C makes every video a hit).
        ties: "pessimistic" or "optimistic".

    Returns:
        (N,) bool tensor.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores, labels = _as_scores_labels(scores, labels)
    true = scores.gather(1, labels[:, None])
    if ties == "pessimistic":
        ahead = (scores >= true).sum(1) - 1          # minus the true class itself
    elif ties == "optimistic":
        ahead = (scores > true).sum(1)
    else:
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    return ahead < k


def topk_accuracy(scores, labels, ks: Sequence[int] = (1, 5), *, ties: Ties = "pessimistic") -> dict[str, float]:
    """Top-k accuracy in percent for each k.

    Args:
        scores: (N, C) class scores.
        labels: (N,) true class indices.
        ks: the cut-offs to report.
        ties: tie policy, see ``topk_hits``.

    Returns:
        ``{"top1": .., "top5": ..}`` percentages; NaN when N == 0.
    """
    out = {}
    for k in ks:
        hits = topk_hits(scores, labels, k, ties=ties)
        out[f"top{k}"] = 100.0 * hits.double().mean().item() if hits.numel() else math.nan
    return out


def per_class_accuracy(scores, labels, *, k: int = 1, ties: Ties = "pessimistic") -> np.ndarray:
    """Top-k accuracy of each class, in percent.

    Args:
        scores: (N, C) class scores.
        labels: (N,) true class indices.
        k: rank cut-off.
        ties: tie policy, see ``topk_hits``.

    Returns:
        (C,) float64 array; NaN for classes with no video in ``labels``.
    """
    hits = topk_hits(scores, labels, k, ties=ties).double()
    labels = torch.as_tensor(labels).long().cpu()
    num_classes = torch.as_tensor(scores).shape[1]
    counts = torch.bincount(labels, minlength=num_classes).double()
    correct = torch.bincount(labels, weights=hits, minlength=num_classes)
    acc = torch.where(counts > 0, 100.0 * correct / counts.clamp_min(1), torch.full_like(counts, math.nan))
    return acc.numpy()


def mean_class_accuracy(scores, labels, *, k: int = 1, ties: Ties = "pessimistic") -> float:
    """Mean over classes of the per-class top-k accuracy (classes absent from ``labels`` are skipped), in percent."""
    acc = per_class_accuracy(scores, labels, k=k, ties=ties)
    present = acc[~np.isnan(acc)]
    return float(present.mean()) if present.size else math.nan


def predict(scores) -> np.ndarray:
    """Top-1 prediction per video; among equal maxima the lowest class index wins.

    Args:
        scores: (N, C) class scores.

    Returns:
        (N,) int64 predicted class indices.
    """
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    # torch.argmax does not promise which maximum it returns; the first index of max is well defined.
    is_max = scores == scores.max(dim=1, keepdim=True).values
    return is_max.int().argmax(dim=1).numpy().astype(np.int64)


def confusion_matrix(scores, labels) -> np.ndarray:
    """Confusion matrix of top-1 predictions (``predict``), rows = true class, columns = predicted class.

    Under ties the diagonal can exceed the pessimistic top-1 count: a confusion matrix needs one prediction per
    video, so here the lowest tied index is taken.

    Args:
        scores: (N, C) class scores.
        labels: (N,) true class indices.

    Returns:
        (C, C) int64 counts; row c sums to the number of videos of class c.
    """
    from sklearn.metrics import confusion_matrix as _sk_confusion_matrix   # lazy: sklearn import costs ~0.5 s

    scores, labels = _as_scores_labels(scores, labels)
    num_classes = scores.shape[1]
    return _sk_confusion_matrix(labels.numpy(), predict(scores), labels=np.arange(num_classes)).astype(np.int64)


def mean_std(values: Sequence[float], *, ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over splits or seeds.

    The population std (``ddof=0``) is the default, as ``numpy.std`` computes it; pass ``ddof=1`` for the sample
    std. A single value gives std 0.

    Args:
        values: one metric value per split.
        ddof: delta degrees of freedom.

    Returns:
        (mean, std); (NaN, NaN) for no values.
    """
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    std = float(arr.std(ddof=ddof)) if arr.size > ddof else 0.0
    return float(arr.mean()), std


def harmonic_mean(base: float, novel: float) -> float:
    """Base-to-novel HM = 2 * B * N / (B + N); 0 when both are 0."""
    if base < 0 or novel < 0:
        raise ValueError(f"accuracies must be >= 0, got base={base}, novel={novel}")
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def aggregate_views(logits) -> Tensor:
    """Combine multi-view test predictions: softmax over classes per view, summed over views.

    Args:
        logits: (N, V, C) scaled logits of V views (clips x crops) of each of N videos.

    Returns:
        (N, C) float view-summed probabilities (each row sums to V).
    """
    logits = torch.as_tensor(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (N, V, C), got shape {tuple(logits.shape)}; "
                         "a single view is (N, 1, C)")
    # Softmax in fp32 at least: half precision rounds near-equal class probabilities together and creates ties.
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return logits.to(dtype).softmax(dim=-1).sum(dim=1)


def retrieval_recall(sim, match, ks: Sequence[int] = (1, 5, 10), *, ties: Ties = "pessimistic") -> dict[str, float]:
    """Recall@K of a retrieval: the share of queries with a true match among their K highest-scoring gallery items.

    A query is a hit at K when fewer than K non-matching items rank ahead of its best-scoring match; other matches
    never count against it (text -> video with one video per caption; video -> text with all captions of the video
    as positives, the MSR-VTT convention). Ties follow ``topk_hits``: with ``"pessimistic"`` a non-match that scores
    exactly as high as the best match ranks ahead of it, with ``"optimistic"`` it does not.

    Args:
        sim: (Q, G) similarities, higher is better (e.g. text embeddings @ video embeddings.T).
        match: (Q, G) bool, True where gallery item g is a correct answer to query q; every row needs one.
        ks: the cut-offs to report.
        ties: "pessimistic" or "optimistic".

    Returns:
        ``{"r1": .., "r5": .., "r10": ..}`` percentages; NaN when Q == 0.
    """
    sim = torch.as_tensor(sim).detach().cpu()
    match = torch.as_tensor(match).detach().cpu()
    if sim.ndim != 2 or match.shape != sim.shape:
        raise ValueError(f"sim must be (Q, G) and match the same shape, got {tuple(sim.shape)} and "
                         f"{tuple(match.shape)}")
    if match.dtype != torch.bool:
        raise ValueError(f"match must be a bool (Q, G) matrix, got dtype {match.dtype}")
    if not sim.is_floating_point():
        sim = sim.double()
    if torch.isnan(sim).any():
        raise ValueError("sim contains NaN; ranks are undefined (check the embeddings for overflow)")
    missing = (~match.any(1)).nonzero().flatten()
    if missing.numel():
        raise ValueError(f"queries {missing[:10].tolist()} have no match in the gallery; every row of match needs "
                         "a True (is the gallery complete?)")
    best = sim.masked_fill(~match, -math.inf).max(1).values[:, None]   # (Q, 1) score of the best match
    if ties == "pessimistic":
        ahead = ((sim >= best) & ~match).sum(1)
    elif ties == "optimistic":
        ahead = ((sim > best) & ~match).sum(1)
    else:
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    out = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out[f"r{k}"] = 100.0 * (ahead < k).double().mean().item() if ahead.numel() else math.nan
    return out
