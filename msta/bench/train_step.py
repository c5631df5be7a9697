"""Seconds, peak memory and FLOPs of one training optimiser step (forward, loss, backward, clip, AdamW step).

The step is the trainer's: ``Objective`` (L = L_CE + alpha * L_CC over all C classes) and ``build_optimizer``
from msta.engine, on a plain model (no DeepSpeed wrapper; on one CPU process the engine adds bookkeeping only).
Switching the description cache off means what a toolkit without it does: the frozen branch encodes the
2 * C * N descriptions inside every step (``forward(frozen_texts=...)``) instead of once per run.

Run one spec per fresh process (``msta.bench.worker``) so that peak memory belongs to that spec alone.
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from msta.bench.flops import StepFlops, flop_counter
from msta.bench.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
from msta.bench.peaks import matmul_peak
from msta.bench.workload import bench_prompts, random_clips

__all__ = ["TrainSpec", "model_cfg", "run_train_bench"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """One training-step configuration (plain values, so that it travels to a worker process as JSON).

    Attributes:
        name: row label.
        model: open_clip model name (random init).
        num_frames, image_size (0: the model's own), micro_batch, num_classes: the workload.
        msta, msta_dim, msta_blocks: MSTA adapters in text and visual blocks first..last (1-based).
        st_adapter, st_width, st_blocks: ST-Adapters before the MLP of visual blocks first..last.
        frozen_prefix_no_grad, cache_text, cut_text: model.perf switches.
        cache_descriptions: description targets once per run (True) or encoded in every step (False).
        precision: "fp32" or "bf16" (torch.autocast on the CPU; weights and optimiser stay fp32).
        steps, warmup: timed and untimed steps; one more step is run under the FLOP counter afterwards.
        local_peak_shape: (M, K, N) of the matmul peak measured right before each timed step and after the last
            (default: the ViT-B/16 MLP product of one 8-frame clip), in the row's precision.
    """
    name: str = "msta_r128_b8-12"
    model: str = "ViT-B-16"
    num_frames: int = 8
    image_size: int = 0
    micro_batch: int = 2
    num_classes: int = 51
    msta: bool = True
    msta_dim: int = 128
    msta_blocks: tuple[int, int] = (8, 12)
    st_adapter: bool = False
    st_width: int = 384
    st_blocks: tuple[int, int] = (1, 12)
    frozen_prefix_no_grad: bool = True
    cache_text: bool = True
    cut_text: bool = True
    cache_descriptions: bool = True
    precision: str = "fp32"
    steps: int = 3
    warmup: int = 1
    local_peak_shape: tuple[int, int, int] = (1576, 3072, 768)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        d = dict(d)
        for k in ("msta_blocks", "st_blocks", "local_peak_shape"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def all_on(self) -> bool:
        return self.frozen_prefix_no_grad and self.cache_text and self.cut_text and self.cache_descriptions


def model_cfg(spec: TrainSpec):
    """The ModelCfg a spec describes."""
    from msta.config import ModelCfg, MstaCfg, PerfCfg, StAdapterCfg
    return ModelCfg(
        name=spec.model, pretrained=None, num_frames=spec.num_frames,
        msta=MstaCfg(enabled=spec.msta, dim=spec.msta_dim, text_blocks=spec.msta_blocks,
                     vision_blocks=spec.msta_blocks),
        st_adapter=StAdapterCfg(enabled=spec.st_adapter, width=spec.st_width, blocks=spec.st_blocks),
        perf=PerfCfg(frozen_prefix_no_grad=spec.frozen_prefix_no_grad, cache_text=spec.cache_text,
                     cut_text=spec.cut_text, cache_descriptions=spec.cache_descriptions))


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16' on the CPU, got {precision!r}")
    return contextlib.nullcontext()


class _Step:
    """One optimiser step of the trainer's objective, in two callable phases (so FLOPs can be split)."""

    def __init__(self, spec: TrainSpec):
        from msta.config import LossCfg, OptimCfg
        from msta.engine.descriptions import compute_description_targets
        from msta.engine.objective import Objective
        from msta.engine.optim import build_optimizer
        from msta.models import build_model

        torch.manual_seed(0)
        self.spec = spec
        self.model = build_model(model_cfg(spec))
        self.model.train()
        size = spec.image_size or self.model.image_size
        prompts = bench_prompts(spec.num_classes)
        self.model.set_class_prompts(prompts.classes, 1)
        self.optimizer = build_optimizer(self.model, OptimCfg())
        self.grad_clip = OptimCfg().grad_clip
        self.batch = {"video": random_clips(spec.micro_batch, spec.num_frames, size),
                      "label": torch.arange(spec.micro_batch) % spec.num_classes}
        self.num_descriptions = len(prompts.spatial[0])
        self.desc_once_s = 0.0
        self.objective = None
        self.desc_ids = None
        if spec.cache_descriptions:
            # once per run, in fp32, as the trainer does before the first step (disk cache not involved)
            start = time.perf_counter()
            targets = compute_description_targets(self.model, prompts.spatial, prompts.temporal,
                                                  model_name=spec.model, weights="random-init:seed=0", cache_dir=None)
            self.desc_once_s = time.perf_counter() - start
            self.objective = Objective(LossCfg(), targets)
        else:
            self.desc_ids = self.model.tokenize(prompts.descriptions())
        self.loss = None

    def forward(self) -> torch.Tensor:
        from msta.losses import description_targets, total_loss
        with _autocast(self.spec.precision):
            if self.objective is not None:
                out = self.objective(self.model, self.batch)
            else:
                res = self.model(self.batch["video"], frozen_texts=self.desc_ids)
                emb = res.frozen_emb.float().view(2, self.spec.num_classes, self.num_descriptions, -1)
                out = total_loss(res.video_emb, res.class_emb, self.batch["label"], res.logit_scale,
                                 spatial_target=description_targets(emb[0]),
                                 temporal_target=description_targets(emb[1]))
        self.loss = out.total
        return out.total

    def backward(self) -> None:
        self.loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss = None

    def __call__(self) -> float:
        loss = float(self.forward().detach())
        self.backward()
        return loss


def _local_peak(dtype: torch.dtype, shape: tuple[int, int, int]) -> float:
    """FLOP/s of the best of 3 products of `shape` now (about 0.2 s at the ViT-B/16 shape)."""
    return matmul_peak(dtype, shapes=(tuple(shape),), repeats=3).flops_per_s


def run_train_bench(spec: TrainSpec, threads: Optional[int] = 2) -> dict:
    """Builds the spec's model and measures its optimiser step.

    Returns:
        A JSON-able dict: the spec, ``step_s`` (median of the timed steps), ``step_s_min``, ``steps_s``,
        ``local_peaks`` (matmul FLOP/s in the row's precision before the first timed step and after each),
        ``peak_rss_mb`` (process peak during the steps, model and workload included), ``step_peak_mb`` (that
        peak minus the resident memory before the first step), ``model_rss_mb``, ``flops`` / ``fwd_flops`` /
        ``bwd_flops`` (executed by one step), ``trainable``, ``desc_once_s`` and ``loss``.
    """
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    step = _Step(spec)
    build_s = time.perf_counter() - start
    before = rss_bytes()
    reset_ok = reset_peak_rss()
    loss = 0.0
    for _ in range(spec.warmup):
        loss = step()
    # The machine's matmul throughput drifts by tens of percent from minute to minute on these shared VMs, so the
    # peak is also measured beside every timed step: utilisation against it compares the same machine state.
    dtype = torch.bfloat16 if spec.precision == "bf16" else torch.float32
    local_peaks = [_local_peak(dtype, spec.local_peak_shape)]
    times = []
    for _ in range(spec.steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
        local_peaks.append(_local_peak(dtype, spec.local_peak_shape))
    peak = peak_rss_bytes()
    # the counted step comes last: the counter's dispatch overhead must not reach the timings
    with flop_counter() as fwd:
        step.forward()
    with flop_counter() as bwd:
        step.backward()
    flops = StepFlops(fwd, bwd)
    report = step.model.param_report()
    result = {
        "kind": "train", **spec.to_dict(), "threads": torch.get_num_threads(),
        "step_s": statistics.median(times) if times else 0.0, "step_s_min": min(times) if times else 0.0,
        "steps_s": times, "local_peaks": local_peaks, "build_s": build_s, "desc_once_s": step.desc_once_s,
        "peak_rss_mb": peak / 2**20, "model_rss_mb": before / 2**20,
        "step_peak_mb": (peak - before) / 2**20 if reset_ok else float("nan"), "peak_reset": reset_ok,
        "flops": flops.total, "fwd_flops": flops.forward.total, "bwd_flops": flops.backward.total,
        "flops_by_op": (flops.forward + flops.backward).by_op,
        "trainable": report.trainable, "total_params": report.total, "loss": loss,
    }
    _logger.info("%s: %.2f s/step, peak %.0f MB, %.1f GFLOP/step", spec.name, result["step_s"],
                 result["peak_rss_mb"], flops.total / 1e9)
    return result
