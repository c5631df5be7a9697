"""FLOP counting for one optimiser step with ``torch.utils.flop_counter.FlopCounterMode``.

FlopCounterMode counts matrix products, convolutions and attention kernels (the work that dominates a ViT step),
not element-wise ops, norms or the optimiser update. Two additions make it complete for a CPU step:
- the CPU fused attention kernels (``_scaled_dot_product_flash_attention_for_cpu`` and its backward) are not in
  torch's registry, so their formulas are added here (the same counts as the CUDA flash kernels);
- a step is counted in two phases, forward (including the loss) and backward, so that a report can say which
  part of the work is the frozen forward and which the backward through the adapted blocks.

"Required" FLOPs are what the step must do; a configuration with an optimisation switched off executes more.
The benchmark takes the required count of a configuration from the run of the same model with every
optimisation on, in which autograd already skips the weight gradients of frozen layers (see docs/benchmarks.md).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch.utils import flop_counter as _fc

__all__ = ["FlopCount", "StepFlops", "flop_counter", "count_flops", "utilization", "wasted_fraction"]


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # (B, H, L, E) tensors: two batched matmuls, as torch counts its CUDA flash kernel
    return _fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    return _fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    mapping = {}
    aten = torch.ops.aten
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward_flops
    return mapping


@dataclass
class FlopCount:
    """FLOPs (a multiply-add counts 2) of one counted region, in total and per aten op."""
    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: "FlopCount") -> "FlopCount":
        ops = dict(self.by_op)
        for k, v in other.by_op.items():
            ops[k] = ops.get(k, 0) + v
        return FlopCount(self.total + other.total, ops)


@dataclass
class StepFlops:
    """The FLOPs of one optimiser step, by phase."""
    forward: FlopCount
    backward: FlopCount

    @property
    def total(self) -> int:
        return self.forward.total + self.backward.total


@contextlib.contextmanager
def flop_counter() -> Iterator[FlopCount]:
    """Context that counts the FLOPs run inside it; the yielded FlopCount is filled in on exit.

    Example:
        with flop_counter() as fc:
            y = model(x)
        fc.total  # FLOPs of the forward
    """
    result = FlopCount()
    mode = _fc.FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with mode:
        yield result
    counts = mode.get_flop_counts().get("Global", {})
    result.by_op = {str(op): int(v) for op, v in counts.items()}
    result.total = int(mode.get_total_flops())


def count_flops(fn: Callable[[], Any]) -> tuple[Any, FlopCount]:
    """Runs ``fn()`` once under the counter; returns (its result, the FlopCount)."""
    with flop_counter() as fc:
        out = fn()
    return out, fc


def utilization(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Achieved fraction of a peak: ``flops / seconds / peak`` (0 when an input is not positive)."""
    if flops <= 0 or seconds <= 0 or peak_flops_per_s <= 0:
        return 0.0
    return flops / seconds / peak_flops_per_s


def wasted_fraction(executed: float, required: float) -> float:
    """Share of the executed FLOPs that the step did not need: ``1 - required / executed`` (>= 0)."""
    if executed <= 0:
        return 0.0
    return max(0.0, 1.0 - required / executed)
