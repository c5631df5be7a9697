"""Benchmark rows of the text <-> video retrieval evaluation (``msta.eval.retrieval_protocol``).

- embedding: ``embed_videos`` (one centre view per video, the MSR-VTT protocol) in videos/s and ``embed_texts`` in
  captions/s, on the model under test (random init: speed does not depend on the weights), MSR-VTT-like captions;
- ranking: for N = 1,000 (the 1k-A test) and 10,000 captions x videos of synthetic unit embeddings, the similarity
  matrix (one matrix product) and the ranking (``retrieval_metrics``: both directions, R@K, MdR, MnR), plain and with
  dual softmax; medians over repeats.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["RetrievalSpec", "retrieval_spec", "run_retrieval_bench", "retrieval_table"]

_logger = logging.getLogger(__name__)

_WORDS = ("a man", "a woman", "a group of people", "a dog", "a cartoon character", "a chef", "a girl", "a band")
_ACTS = ("is cooking pasta in a kitchen", "plays a guitar on stage", "talks about a car in front of a house",
         "runs across a field of grass", "explains how to fix a computer", "dances with friends at a party")


@dataclass(frozen=True)
class RetrievalSpec:
    """What the retrieval rows measure.

    Attributes:
        model, num_frames, image_size: the model and clip shape (image_size 0: the model's own).
        videos: clips embedded for the videos/s row; captions: captions embedded for the captions/s row.
        batch_size, text_batch: videos per forward, captions per text forward.
        sizes: N of the N x N ranking rows; embed_dim: dimension of their synthetic embeddings.
        msta_dim, msta_blocks: the MSTA adapters (bottleneck, blocks of both encoders).
        repeats: timed repeats per row (median reported).
    """
    name: str = "retrieval"
    model: str = "ViT-B-16"
    num_frames: int = 8
    image_size: int = 0
    videos: int = 8
    captions: int = 256
    batch_size: int = 4
    text_batch: int = 256
    sizes: tuple[int, ...] = (1000, 10000)
    embed_dim: int = 512
    msta_dim: int = 128
    msta_blocks: tuple[int, int] = (8, 12)
    repeats: int = 3

    @classmethod
    def from_dict(cls, d: dict) -> "RetrievalSpec":
        d = dict(d)
        for key in ("sizes", "msta_blocks"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def retrieval_spec(tiny: bool = False) -> RetrievalSpec:
    """The suite's rows: ViT-B/16 8 frames at 224 and N = 1k, 10k; msta-tiny and N = 200, 1k for CI."""
    if tiny:
        return RetrievalSpec(model="msta-tiny", num_frames=4, videos=4, captions=32, sizes=(200, 1000), embed_dim=32,
                             msta_dim=16, msta_blocks=(2, 2), repeats=1)
    return RetrievalSpec()


class _Clips(torch.utils.data.Dataset):
    def __init__(self, video: torch.Tensor):
        self.video = video

    def __len__(self) -> int:
        return self.video.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"video": self.video[i], "index": i}


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ranking_row(n: int, dim: int, repeats: int) -> dict:
    from msta.eval.retrieval import retrieval_metrics

    g = torch.Generator().manual_seed(n)
    video = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    text = F.normalize(video + 0.8 * torch.randn(n, dim, generator=g) / dim ** 0.5, dim=-1)  # a plausible matrix
    owner = torch.arange(n)
    sim = text @ video.t()
    row = {"n": n, "similarity_s": _median_time(lambda: text @ video.t(), repeats),
           "rank_s": _median_time(lambda: retrieval_metrics(sim, owner), repeats),
           "rank_dual_softmax_s": _median_time(lambda: retrieval_metrics(sim, owner, dual_softmax_scale=1.0),
                                               repeats),
           "t2v_r1": retrieval_metrics(sim, owner)["t2v_r1"]}
    _logger.info("retrieval %d x %d: similarity %.3f s, ranking %.3f s", n, n, row["similarity_s"], row["rank_s"])
    return row


def run_retrieval_bench(spec: RetrievalSpec, threads: int = 2) -> dict:
    """Measures the retrieval evaluation (see the module docstring).

    Returns:
        A JSON-able dict: ``spec``, ``threads``, ``embed`` (videos, videos_per_s, captions, captions_per_s) and
        ``ranking`` (one row per N: similarity_s, rank_s, rank_dual_softmax_s).
    """
    from msta.bench.workload import random_clips
    from msta.config import ModelCfg, MstaCfg
    from msta.eval.retrieval_protocol import embed_texts, embed_videos
    from msta.models import build_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(ModelCfg(name=spec.model, num_frames=spec.num_frames,
                                 msta=MstaCfg(dim=spec.msta_dim, text_blocks=spec.msta_blocks,
                                              vision_blocks=spec.msta_blocks))).eval()
    size = spec.image_size or (model.image_size if isinstance(model.image_size, int) else model.image_size[0])
    clips = _Clips(random_clips(spec.videos, spec.num_frames, size, views=1))
    captions = [f"{_WORDS[i % len(_WORDS)]} {_ACTS[(i // len(_WORDS)) % len(_ACTS)]}" for i in range(spec.captions)]
    with torch.no_grad():
        model.encode_video(clips.video[:1, 0])   # warm-up: first-call allocations and kernel selection
        embed_texts(model, captions[:8])
    video_s = _median_time(lambda: embed_videos(model, clips, batch_size=spec.batch_size), spec.repeats)
    text_s = _median_time(lambda: embed_texts(model, captions, batch_size=spec.text_batch), spec.repeats)
    result = {"kind": "retrieval", "spec": spec.to_dict(), "threads": torch.get_num_threads(),
              "image_size": size, "embed": {"videos": spec.videos, "videos_per_s": spec.videos / video_s,
                                            "captions": spec.captions, "captions_per_s": spec.captions / text_s}}
    result["ranking"] = [_ranking_row(n, spec.embed_dim, spec.repeats) for n in spec.sizes]
    return result


def retrieval_table(result: dict) -> str:
    """Markdown of a ``retrieval`` result."""
    s, e = result["spec"], result["embed"]
    lines = [f"Retrieval evaluation ({s['model']} + MSTA adapters, {s['num_frames']} frames at {result['image_size']}, "
             f"one view, {result['threads']} threads): **{e['videos_per_s']:.2f} videos/s** embedded (batch "
             f"{s['batch_size']}), **{e['captions_per_s']:.1f} captions/s** (batch {s['text_batch']})", "",
             "| captions x videos | similarity s | ranking s (t2v + v2t) | ranking with dual softmax s |",
             "|---|---|---|---|"]
    for r in result["ranking"]:
        lines.append(f"| {r['n']:,} x {r['n']:,} | {r['similarity_s']:.3f} | {r['rank_s']:.3f} | "
                     f"{r['rank_dual_softmax_s']:.3f} |")
    return "\n".join(lines)
