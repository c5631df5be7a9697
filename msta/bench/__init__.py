"""Benchmarks: training-step speed, memory and FLOP utilisation, evaluation and data throughput, checkpoint size.

The measuring logic lives here; ``scripts/benchmark.py`` only parses arguments and prints. Each configuration runs
in a fresh subprocess (``msta.bench.worker``) so that peak memory is that configuration's own.
"""
from msta.bench.flops import FlopCount, StepFlops, count_flops, flop_counter, utilization, wasted_fraction
from msta.bench.peaks import MatmulPeak, matmul_peak
from msta.bench.report import check_targets, format_report
from msta.bench.suite import GROUPS, run_suite

__all__ = [
    "FlopCount", "StepFlops", "count_flops", "flop_counter", "utilization", "wasted_fraction", "MatmulPeak",
    "matmul_peak", "check_targets", "format_report", "GROUPS", "run_suite",
]
