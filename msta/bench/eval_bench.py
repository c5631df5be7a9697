"""Zero-shot evaluation speed: clips/s with the V views of a clip batched into one forward vs one view at a time.

Both modes use the evaluation engine (``msta.eval.evaluator.score_dataset``) with the class embeddings computed
once by ``ClassBank``; a third mode re-encodes the class prompts for every batch, which is what a loop without the
class-embedding cache (DESIGN §3) pays. All modes run in one process, one after the other, on the same model and
clips, so their ratio is measured under the same machine conditions.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch.utils.data import Dataset

from msta.bench.workload import bench_prompts, random_clips

__all__ = ["EvalSpec", "run_eval_bench"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSpec:
    """Zero-shot evaluation workload: ``clips`` videos of ``views`` views each, ``batch_size`` videos per forward."""
    name: str = "zeroshot"
    model: str = "ViT-B-16"
    num_frames: int = 8
    image_size: int = 0
    views: int = 3
    clips: int = 4
    batch_size: int = 2
    num_classes: int = 51
    msta_dim: int = 128
    msta_blocks: tuple[int, int] = (8, 12)
    repeats: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "EvalSpec":
        d = dict(d)
        if "msta_blocks" in d:
            d["msta_blocks"] = tuple(d["msta_blocks"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class _ClipSet(Dataset):
    """In-memory multi-view clips in the dataset contract of ``score_dataset``."""

    def __init__(self, video: torch.Tensor, num_classes: int):
        from msta.data.annotations import VideoItem
        self.video = video
        self.items = [VideoItem(f"clip_{i}.mp4", i % num_classes) for i in range(video.shape[0])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.video[i], "label": self.items[i].label, "index": i}


def _text_per_batch(model, dataset: _ClipSet, prompts: list[str], batch_size: int) -> None:
    # the loop without the class-embedding cache: the prompts go through the text tower for every batch
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            video = dataset.video[start:start + batch_size]
            model.set_class_prompts(prompts, 1)
            emb = model.encode_classes()
            out = model.encode_video(video.flatten(0, 1)).view(video.shape[0], video.shape[1], -1)
            (out @ emb.t()).softmax(-1).sum(1)


def run_eval_bench(spec: EvalSpec, threads: Optional[int] = 2) -> dict:
    """Measures clips/s of zero-shot scoring in three modes (see the module docstring).

    Returns:
        A JSON-able dict: the spec, ``text_once_s`` (class embeddings, once), and per mode ``<mode>_clips_per_s``
        and ``<mode>_s``; modes ``batched_views``, ``per_view``, ``text_per_batch``.
    """
    from msta.config import ModelCfg, MstaCfg
    from msta.eval.evaluator import ClassBank, score_dataset
    from msta.models import build_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(ModelCfg(name=spec.model, num_frames=spec.num_frames,
                                 msta=MstaCfg(dim=spec.msta_dim, text_blocks=spec.msta_blocks,
                                              vision_blocks=spec.msta_blocks)))
    model.eval()
    size = spec.image_size or model.image_size
    dataset = _ClipSet(random_clips(spec.clips, spec.num_frames, size, views=spec.views), spec.num_classes)
    prompts = bench_prompts(spec.num_classes).classes
    names = [p[len("a video of "):-1] for p in prompts]
    start = time.perf_counter()
    class_emb = ClassBank(model)(names, ["a video of {}."])
    result = {"kind": "eval", **spec.to_dict(), "threads": torch.get_num_threads(),
              "text_once_s": time.perf_counter() - start}
    classes = [f"class_{c}" for c in range(spec.num_classes)]
    modes = {
        "batched_views": lambda: score_dataset(model, dataset, class_emb, classes, batch_size=spec.batch_size),
        "per_view": lambda: score_dataset(model, dataset, class_emb, classes, batch_size=spec.batch_size,
                                          batch_views=False),
        "text_per_batch": lambda: _text_per_batch(model, dataset, prompts, spec.batch_size),
    }
    with torch.no_grad():
        model.encode_video(dataset.video[:1, 0])  # warm-up: first-call allocations and kernel selection
    for mode, fn in modes.items():
        best = float("inf")
        for _ in range(spec.repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        result[f"{mode}_s"] = best
        result[f"{mode}_clips_per_s"] = spec.clips / best
        _logger.info("eval %s: %.3f clips/s", mode, spec.clips / best)
    return result
