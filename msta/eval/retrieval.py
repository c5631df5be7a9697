"""Text <-> video retrieval metrics as pure tensor functions (MSR-VTT conventions, reference/viclip-and-retrieval §4.3).

- ``query_ranks``: the 0-based rank of each query's best-ranked correct gallery item, pessimistic about ties: every
  wrong item that scores at least as high as the best correct one ranks ahead of it. For one correct item this is
  ``count(scores >= score_correct) - 1``, the rule of the toolkit's top-1 (``msta.eval.metrics.topk_hits``), so a
  model that outputs one constant score ranks every query last instead of first. (CLIP4Clip and mmaction2 find the
  rank by equality against the sorted scores, which duplicates matches under ties.)
- ``rank_metrics``: R@K = 100 * mean(rank < K), MdR = median(rank) + 1, MnR = mean(rank) + 1 (lower is better for
  the last two); the median of an even count is the mean of the two middle ranks, as numpy's.
- ``dual_softmax``: the dual-softmax re-scoring ``s * softmax(scale * s)`` over the *query* axis (each gallery item's
  scores spread over all queries), ViCLIP's ``_emb`` rows with ``scale = 1`` (raw cosine). It uses the statistics of
  the whole test query set, so its numbers are transductive and are reported as a separate, labelled row.
- ``retrieval_metrics``: both directions over one (captions, videos) similarity: text -> video with each caption a
  query (its own video the one correct item), video -> text with every caption of the video correct and the
  best-ranked one counting.

Every function takes torch tensors (or anything ``torch.as_tensor`` accepts) and returns Python floats or CPU
tensors; nothing here calls a model.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["query_ranks", "rank_metrics", "dual_softmax", "retrieval_metrics", "RANK_CHUNK"]

RANK_CHUNK = 1024   # query rows compared at once: bounds the (rows, G) temporaries of a 10k x 10k matrix to ~40 MB


def _check_sim(sim) -> Tensor:
    sim = torch.as_tensor(sim).detach().cpu()
    if sim.ndim != 2:
        raise ValueError(f"sim must be (Q, G), got shape {tuple(sim.shape)}")
    if not sim.is_floating_point():
        sim = sim.double()
    if torch.isnan(sim).any():
        raise ValueError("sim contains NaN; ranks are undefined (check the embeddings for overflow)")
    return sim


def _ranks_from_pairs(sim: Tensor, rows: Tensor, cols: Tensor, *, queries_are_rows: bool) -> Tensor:
    """Pessimistic 0-based ranks of the queries of ``sim`` (its rows, or its columns) from the correct pairs.

    ``(rows[p], cols[p])`` are the positions of the correct pairs; every query must have one. The rank is
    #(items scoring >= the query's best correct score) - #(correct items scoring that high): one comparison pass over
    the matrix (row chunks, so a column query needs no transposed copy) plus work linear in the number of pairs.
    """
    num_queries = sim.shape[0] if queries_are_rows else sim.shape[1]
    query = rows if queries_are_rows else cols
    score = sim[rows, cols]                                                          # (P,) correct scores
    best = torch.full((num_queries,), -math.inf, dtype=sim.dtype).scatter_reduce(0, query, score, "amax")
    tied = torch.zeros(num_queries, dtype=torch.int64).scatter_add_(0, query, (score >= best[query]).long())
    at_least = torch.zeros(num_queries, dtype=torch.int64)
    for start in range(0, sim.shape[0], RANK_CHUNK):
        chunk = sim[start:start + RANK_CHUNK]
        if queries_are_rows:
            ge = chunk >= best[start:start + RANK_CHUNK, None]
            at_least[start:start + RANK_CHUNK] = ge.view(torch.uint8).sum(1, dtype=torch.int32).long()
        else:
            at_least += (chunk >= best[None, :]).view(torch.uint8).sum(0, dtype=torch.int32).long()
    return at_least - tied


def query_ranks(sim, match) -> Tensor:
    """0-based rank of each query's best correct item, ties counted against it.

    Args:
        sim: (Q, G) similarities, higher is better.
        match: (Q, G) bool, True where gallery item g is a correct answer to query q; every row needs one.

    Returns:
        (Q,) int64 ranks in [0, G - 1]: the number of wrong items scoring >= the best correct item's score.
    """
    sim = _check_sim(sim)
    match = torch.as_tensor(match).detach().cpu()
    if match.shape != sim.shape:
        raise ValueError(f"sim must be (Q, G) and match the same shape, got {tuple(sim.shape)} and "
                         f"{tuple(match.shape)}")
    if match.dtype != torch.bool:
        raise ValueError(f"match must be a bool (Q, G) matrix, got dtype {match.dtype}")
    missing = (~match.any(1)).nonzero().flatten()
    if missing.numel():
        raise ValueError(f"queries {missing[:10].tolist()} have no correct item in the gallery; every row of match "
                         "needs a True (is the gallery complete?)")
    rows, cols = match.nonzero(as_tuple=True)
    return _ranks_from_pairs(sim.contiguous(), rows, cols, queries_are_rows=True)   # a transposed view: one copy


def rank_metrics(ranks, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (%), median rank and mean rank (1-based) from 0-based ranks.

    Args:
        ranks: (Q,) 0-based ranks (``query_ranks``).
        ks: the recall cut-offs, each >= 1.

    Returns:
        ``{"r1", "r5", "r10", "medr", "meanr"}``; NaN for every entry when Q == 0.
    """
    ranks = torch.as_tensor(ranks).detach().cpu().double()
    out = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out[f"r{k}"] = 100.0 * (ranks < k).double().mean().item() if ranks.numel() else math.nan
    out["medr"] = float(np.median(ranks.numpy())) + 1.0 if ranks.numel() else math.nan
    out["meanr"] = ranks.mean().item() + 1.0 if ranks.numel() else math.nan
    return out


def dual_softmax(sim, scale: float = 1.0, *, query_dim: int = 0) -> Tensor:
    """Dual-softmax re-scoring of a query-gallery similarity: ``sim * softmax(scale * sim, dim=query_dim)``.

    The prior of gallery item g for query q is q's share of g's scores over all queries, so a gallery item that
    scores high for every query (a "hub") is pushed down. Rank the result along the other axis, as ``sim`` itself.

    Args:
        sim: (Q, G) similarities (cosines) with ``query_dim=0``; (G, Q) with ``query_dim=1`` (the same matrix
            ranked the other way, without a transposed copy).
        scale: inverse temperature of the prior (1 = ViCLIP's raw cosine; the DSL papers use the CLIP scale, 100).
        query_dim: the axis of the queries.

    Returns:
        (Q, G) float re-scored similarities (fp32 or better).
    """
    sim = torch.as_tensor(sim)
    if sim.ndim != 2:
        raise ValueError(f"sim must be (Q, G), got shape {tuple(sim.shape)}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if query_dim not in (0, 1):
        raise ValueError(f"query_dim must be 0 or 1, got {query_dim}")
    sim = sim.to(torch.promote_types(sim.dtype, torch.float32))
    return sim * torch.softmax(scale * sim, dim=query_dim)


def retrieval_metrics(sim, caption_video, ks: Sequence[int] = (1, 5, 10), *,
                      dual_softmax_scale: Optional[float] = None) -> dict[str, float]:
    """Text -> video and video -> text metrics of one captions x videos similarity matrix.

    Args:
        sim: (Q, N) similarities of Q captions (rows) against N videos (columns).
        caption_video: (Q,) int, the video (column) each caption describes; every video needs >= 1 caption.
        ks: recall cut-offs.
        dual_softmax_scale: None for the plain scores; a scale to re-score each direction with ``dual_softmax``
            first (over captions for text -> video, over videos for video -> text).

    Returns:
        ``t2v_r1 .. t2v_r10, t2v_medr, t2v_meanr``, the same for ``v2t_``, ``mean_r1`` = (t2v_r1 + v2t_r1) / 2 and
        ``rsum`` = the sum of the 2 x len(ks) recalls.
    """
    sim = torch.as_tensor(sim).detach().cpu()
    owner = torch.as_tensor(caption_video).detach().cpu().long()
    if sim.ndim != 2 or owner.shape != (sim.shape[0],):
        raise ValueError(f"sim must be (captions, videos) and caption_video (captions,), got {tuple(sim.shape)} "
                         f"and {tuple(owner.shape)}")
    if owner.numel() and (int(owner.min()) < 0 or int(owner.max()) >= sim.shape[1]):
        raise ValueError(f"caption_video must index the {sim.shape[1]} video columns, got range "
                         f"[{int(owner.min())}, {int(owner.max())}]")
    has_caption = torch.zeros(sim.shape[1], dtype=torch.bool)
    has_caption[owner] = True
    uncaptioned = (~has_caption).nonzero().flatten()
    if uncaptioned.numel():
        raise ValueError(f"videos {uncaptioned[:10].tolist()} have no caption; video -> text needs one per video")
    sim = _check_sim(sim)
    t2v_sim = v2t_sim = sim
    if dual_softmax_scale is not None:
        # each direction's prior is a softmax over its own queries: captions for t2v, videos for v2t
        t2v_sim = dual_softmax(sim, dual_softmax_scale)
        v2t_sim = dual_softmax(sim, dual_softmax_scale, query_dim=1)
    captions = torch.arange(sim.shape[0])
    t2v = rank_metrics(_ranks_from_pairs(t2v_sim, captions, owner, queries_are_rows=True), ks)
    v2t = rank_metrics(_ranks_from_pairs(v2t_sim, captions, owner, queries_are_rows=False), ks)
    out = {**{f"t2v_{k}": v for k, v in t2v.items()}, **{f"v2t_{k}": v for k, v in v2t.items()}}
    out["mean_r1"] = (t2v["r1"] + v2t["r1"]) / 2 if 1 in ks else math.nan
    out["rsum"] = sum(t2v[f"r{k}"] + v2t[f"r{k}"] for k in ks)
    return out
