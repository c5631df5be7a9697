"""The machine's matrix-multiply peak per dtype, measured (not looked up), in the caller's thread setting.

A measured peak is the honest denominator for "achieved FLOP/s": it already includes the CPU's real clock under
AVX-512, the BLAS/oneDNN kernel quality for the dtype, and the thread count the benchmark uses. On CPUs without
native bf16 instructions (no AVX512_BF16 / AMX) the bf16 peak is far below fp32, because the kernels convert.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["MatmulPeak", "DEFAULT_SHAPES", "TINY_SHAPES", "matmul_peak", "cpu_flags"]

_logger = logging.getLogger(__name__)

# (M, K, N): a square product and the two ViT-B/16 MLP products of one 8-frame clip (8 x 197 tokens)
DEFAULT_SHAPES: tuple[tuple[int, int, int], ...] = ((2048, 2048, 2048), (1576, 768, 3072), (1576, 3072, 768))
TINY_SHAPES: tuple[tuple[int, int, int], ...] = ((256, 256, 256),)


@dataclass
class MatmulPeak:
    """Best measured throughput of ``F.linear``-style products of one dtype."""
    dtype: str
    flops_per_s: float
    shape: tuple[int, int, int]
    per_shape: dict[str, float]


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(dtype: torch.dtype = torch.float32, shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES,
                repeats: int = 5) -> MatmulPeak:
    """Measures the best FLOP/s of ``x @ w.T`` over ``shapes`` (best of ``repeats`` per shape).

    The product runs through ``torch.nn.functional.linear``, the op the ViT's layers use, in ``dtype`` directly
    (what ``torch.autocast`` feeds the kernels for bf16).

    Args:
        dtype: torch.float32 or torch.bfloat16.
        shapes: (M, K, N) products: (M, K) activations times a (N, K) weight.
        repeats: timed runs per shape; the fastest counts (noise on a shared machine only ever slows things).

    Returns:
        The best shape's FLOP/s (2 * M * K * N per product) and every shape's figure.
    """
    gen = torch.Generator().manual_seed(0)
    per_shape: dict[str, float] = {}
    best = (0.0, shapes[0])
    for m, k, n in shapes:
        x = torch.randn(m, k, generator=gen).to(dtype)
        w = torch.randn(n, k, generator=gen).to(dtype)
        with torch.no_grad():
            seconds = _best_time(lambda: torch.nn.functional.linear(x, w), repeats)
        rate = 2.0 * m * k * n / seconds
        per_shape[f"{m}x{k}x{n}"] = rate
        if rate > best[0]:
            best = (rate, (m, k, n))
        _logger.info("matmul %s %dx%dx%d: %.1f GFLOP/s", dtype, m, k, n, rate / 1e9)
    return MatmulPeak(str(dtype).replace("torch.", ""), best[0], best[1], per_shape)


def cpu_flags(names: Sequence[str] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> dict[str, bool]:
    """Which of ``names`` the CPU advertises in /proc/cpuinfo (all False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        flags = set()
    return {n: n in flags for n in names}
