"""Frame-index samplers: pure functions of (video length, clip length, generator).

Two schemes, as in the peers:
- segment (TSN): split the video into `n` equal segments and take one frame per segment, at a random offset in
  training and at the segment centre in testing. Covers the whole video whatever its length.
- dense: `n` frames `stride` apart from one window; random window start in training, evenly spaced windows in
  testing.
Multi-clip testing shifts the segment offsets (segment) or the window starts (dense) evenly over the video.

Videos shorter than the clip repeat frames (indices are sorted but not necessarily distinct), the usual practice,
so that any video with at least one frame yields a clip. No function here decodes video.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ["SAMPLINGS", "segment_indices", "dense_indices", "sample_indices", "sample_views"]

SAMPLINGS = ("segment", "dense")


def _check(num_frames: int, n: int) -> None:
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames; it needs at least 1")
    if n < 1:
        raise ValueError(f"clip length must be >= 1, got {n}")


def _uniform(generator: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=generator))


def segment_indices(num_frames: int, n: int, *, train: bool, generator: Optional[torch.Generator] = None,
                    clip: int = 0, num_clips: int = 1) -> list[int]:
    """TSN segment sampling.

    Segment k covers [k * L / n, (k + 1) * L / n) for L = num_frames. Training picks a uniform frame among the
    segment's frames [floor(k L / n), floor((k + 1) L / n)) (distinct frames when L >= n); testing picks position
    (clip + 0.5) / num_clips of the segment, i.e. the centre for a single clip.

    Args:
        num_frames: frames in the video (>= 1).
        n: frames in the clip.
        train: random offsets (True) or deterministic test offsets (False).
        generator: randomness for training; ignored in testing.
        clip, num_clips: which of `num_clips` test clips (0-based).

    Returns:
        n sorted frame indices in [0, num_frames).
    """
    _check(num_frames, n)
    if train:
        # Integer segment bounds b_k = floor(k L / n): a uniform frame in [b_k, b_{k+1}) keeps the n frames distinct
        # whenever L >= n (a float offset could floor two neighbours onto the same frame).
        bounds = [k * num_frames // n for k in range(n + 1)]
        u = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        return [lo + min(hi - lo - 1, int(o * (hi - lo))) if hi > lo else min(lo, num_frames - 1)
                for lo, hi, o in zip(bounds[:-1], bounds[1:], u)]
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip must be in [0, {num_clips}), got {clip}")
    seg, o = num_frames / n, (clip + 0.5) / num_clips
    return [min(num_frames - 1, int(math.floor((k + o) * seg))) for k in range(n)]


def dense_indices(num_frames: int, n: int, stride: int, *, train: bool, generator: Optional[torch.Generator] = None,
                  clip: int = 0, num_clips: int = 1) -> list[int]:
    """Dense sampling: n frames `stride` apart from one window of span (n - 1) * stride + 1.

    Training draws the window start uniformly from [0, L - span]; testing puts `num_clips` windows evenly from the
    start to the end (a single clip is centred). Windows longer than the video are clamped to its last frame.

    Returns:
        n sorted frame indices in [0, num_frames).
    """
    _check(num_frames, n)
    if stride < 1:
        raise ValueError(f"dense sampling stride must be >= 1, got {stride} (config key data.stride)")
    span = (n - 1) * stride + 1
    room = max(0, num_frames - span)  # number of start positions beyond the first
    if train:
        start = int(torch.randint(room + 1, (), generator=generator))
    else:
        if not 0 <= clip < num_clips:
            raise ValueError(f"clip must be in [0, {num_clips}), got {clip}")
        start = room // 2 if num_clips == 1 else int(round(clip * room / (num_clips - 1)))
    return [min(num_frames - 1, start + k * stride) for k in range(n)]


def sample_indices(num_frames: int, n: int, *, sampling: str = "segment", train: bool, stride: int = 2,
                   generator: Optional[torch.Generator] = None, clip: int = 0, num_clips: int = 1) -> list[int]:
    """Dispatches to `segment_indices` or `dense_indices` by name (config key data.sampling)."""
    if sampling == "segment":
        return segment_indices(num_frames, n, train=train, generator=generator, clip=clip, num_clips=num_clips)
    if sampling == "dense":
        return dense_indices(num_frames, n, stride, train=train, generator=generator, clip=clip, num_clips=num_clips)
    raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLINGS} (config key data.sampling)")


def sample_views(num_frames: int, n: int, num_clips: int, *, sampling: str = "segment",
                 stride: int = 2) -> list[list[int]]:
    """Test-time temporal views: `num_clips` deterministic clips, each n sorted indices."""
    return [sample_indices(num_frames, n, sampling=sampling, train=False, stride=stride, clip=c, num_clips=num_clips)
            for c in range(num_clips)]
