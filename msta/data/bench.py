"""Data-pipeline speed: decode + sample + transform clips per second in one process (= per DataLoader worker).

Generated 320x240 H.264 videos are read through `VideoDataset` with the training transforms, for each backend,
with and without resize-on-decode. scripts/benchmark.py calls `benchmark_data` and prints the dict.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .annotations import VideoItem
from .datasets import VideoDataset
from .mp4 import write_mp4
from .transforms import TrainTransform

__all__ = ["make_bench_videos", "benchmark_data"]

_logger = logging.getLogger(__name__)


def make_bench_videos(out_dir: str | Path, *, count: int = 4, frames: int = 96, height: int = 240, width: int = 320,
                      fps: int = 25, seed: int = 0) -> list[VideoItem]:
    """Writes `count` videos of a smooth random texture panning diagonally (camera-like content: pure noise
    would make the decoder, not the pipeline, the whole measurement)."""
    g = np.random.default_rng(seed)
    items = []
    for k in range(count):
        coarse = g.integers(0, 256, ((height + frames) // 8 + 1, (width + frames) // 8 + 1, 3), dtype=np.uint8)
        base = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)
        clip = np.stack([base[t:t + height, t:t + width] for t in range(frames)])
        write_mp4(Path(out_dir) / f"bench_{k}.mp4", clip, fps=fps, crf=23)
        items.append(VideoItem(f"bench_{k}.mp4", k))
    return items


def benchmark_data(*, backends: Sequence[str] = ("decord", "pyav"), image_size: int = 224, num_frames: int = 8,
                   clips: int = 16, num_videos: int = 4, video_frames: int = 96,
                   resolutions: Sequence[tuple[int, int]] = ((240, 320), (480, 640)),
                   work_dir: Optional[str] = None, threads: int = 1) -> dict[str, float]:
    """Measures clips/s of decode + TSN sampling + training transforms, per configuration.

    Args:
        backends: decoders to compare.
        image_size, num_frames: model input (the decode resize target is round(image_size * 256 / 224)).
        clips: clips timed per configuration (after one warm-up clip).
        num_videos, video_frames: the generated videos.
        resolutions: (height, width) of the generated videos. Decoders only downscale (decoding.resized_hw), so
            at 320x240 with image_size 224 (resize target 256) both settings decode at native size; the larger
            source shows what resize-on-decode buys.
        work_dir: where to write them (default a temporary folder, removed afterwards).
        threads: torch intra-op threads during the measurement (1 = one DataLoader worker's share).

    Returns:
        {"<H>x<W>_<backend>_resize_clips_per_s", "..._noresize_clips_per_s", "..._ms_per_clip",
        "<H>x<W>_decode_resize_speedup_<backend>"} (W x H as usual: "320x240") plus the settings used.
    """
    results: dict[str, float] = {"image_size": image_size, "num_frames": num_frames, "video_frames": video_frames,
                                 "clips": clips, "threads": threads}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for height, width in resolutions:
            with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
                items = make_bench_videos(tmp, count=num_videos, frames=video_frames, height=height, width=width)
                for backend in backends:
                    res = f"{width}x{height}"
                    for resize in (True, False):
                        ds = VideoDataset(items, tmp, num_frames=num_frames, transform=TrainTransform(image_size),
                                          train=True, backend=backend, resize_on_decode=resize, max_bad_fraction=0.0)
                        ds[0]  # warm-up: imports, first open
                        start = time.perf_counter()
                        for i in range(clips):
                            ds[i % len(ds)]
                        dt = time.perf_counter() - start
                        tag = f"{res}_{backend}_{'resize' if resize else 'noresize'}"
                        results[f"{tag}_clips_per_s"] = clips / dt
                        results[f"{tag}_ms_per_clip"] = 1000 * dt / clips
                        _logger.info("%s: %.1f clips/s", tag, clips / dt)
                    on, off = (results[f"{res}_{backend}_{m}_clips_per_s"] for m in ("resize", "noresize"))
                    results[f"{res}_decode_resize_speedup_{backend}"] = on / off
    finally:
        torch.set_num_threads(old_threads)
    return results
