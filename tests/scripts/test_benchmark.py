"""scripts/benchmark.py all --tiny end to end, and the FLOP-counting helpers of msta.bench."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msta.bench.flops import count_flops, flop_counter, utilization, wasted_fraction
from msta.bench.report import check_targets, format_report
from msta.bench.suite import derive_train, train_specs

ROOT = Path(__file__).resolve().parents[2]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_benchmark_all_tiny(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "all", "--tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("### train step", "### zero-shot eval", "### data", "### checkpoint size", "### targets"):
        assert heading in proc.stdout
    result = json.loads(out.read_text())
    names = {(r["name"], r["precision"]) for r in result["train"]}
    assert names == {(s.name, s.precision) for s in train_specs(tiny=True)}
    for row in result["train"]:
        for key in ("step_s", "peak_rss_mb", "flops", "fwd_flops", "bwd_flops", "required_flops", "flops_per_s",
                    "util_required"):
            assert _positive(row[key]), (row["name"], key, row[key])
        assert len(row["local_peaks"]) == row["steps"] + 1 and all(_positive(x) for x in row["local_peaks"])
        assert _positive(row["util_required_local"])
        assert row["flops"] >= row["required_flops"] * 0.999  # no configuration does less than the necessary work
    assert _positive(result["peaks"]["fp32_flops_per_s"]) and _positive(result["peaks"]["bf16_flops_per_s"])
    ev = result["eval"]
    for mode in ("batched_views", "per_view", "text_per_batch"):
        assert _positive(ev[f"{mode}_clips_per_s"])
    assert any(k.endswith("_clips_per_s") and _positive(v) for k, v in result["data"].items())
    for c in result["ckpt"]:
        assert 0 < c["adapters_bytes"] < c["full_bytes"]
    assert set(check_targets(result)) >= {"all_on_speedup_vs_all_off", "fp32_required_util", "adapters_ckpt_share"}


def test_linear_flops_forward_and_frozen_backward():
    lin = torch.nn.Linear(8, 4).requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    y, fwd = count_flops(lambda: lin(x))
    assert fwd.total == 2 * 3 * 8 * 4
    with flop_counter() as bwd:
        y.sum().backward()
    # frozen weight: only the input gradient (one product of the same size), no weight gradient
    assert bwd.total == 2 * 3 * 8 * 4


def test_trainable_linear_backward_counts_weight_gradient():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)  # input needs no gradient: only the weight gradient is computed
    y = lin(x)
    with flop_counter() as bwd:
        y.sum().backward()
    assert bwd.total == 2 * 3 * 8 * 4


def test_cpu_attention_is_counted():
    q, k, v = (torch.randn(2, 4, 10, 16, requires_grad=True) for _ in range(3))
    out, fwd = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    # Q K^T and P V: 2 * (2 * B * H * L * L * E)
    assert fwd.total == 2 * (2 * 2 * 4 * 10 * 10 * 16)
    with flop_counter() as bwd:
        out.sum().backward()
    assert bwd.total > fwd.total


def test_flopcount_add_and_ratios():
    _, a = count_flops(lambda: torch.randn(4, 5) @ torch.randn(5, 6))
    total = a + a
    assert total.total == 2 * a.total and sum(total.by_op.values()) == total.total
    assert utilization(100.0, 2.0, 100.0) == 0.5
    assert utilization(0.0, 1.0, 1.0) == 0.0 and utilization(1.0, 0.0, 1.0) == 0.0
    assert wasted_fraction(200.0, 50.0) == 0.75
    assert wasted_fraction(50.0, 50.0) == 0.0 and wasted_fraction(0.0, 1.0) == 0.0


def _row(name, precision="fp32", step_s=1.0, flops=100.0, all_on=True, peak=10.0, **kw):
    spec = train_specs(tiny=True)[0].to_dict()
    return {**spec, **kw, "name": name, "precision": precision, "step_s": step_s, "flops": flops, "all_on": all_on,
            "peak_rss_mb": peak, "step_peak_mb": peak / 2}


def test_derive_train_takes_required_flops_from_the_all_on_row():
    rows = [_row("base", step_s=2.0, flops=100.0), _row("base:all_off", step_s=6.0, flops=400.0, all_on=False,
                                                          peak=30.0, cache_text=False),
            _row("base", precision="bf16", step_s=4.0, flops=100.0)]
    derive_train(rows, {"fp32_flops_per_s": 100.0, "bf16_flops_per_s": 25.0})
    base, off, bf16 = rows
    assert off["required_flops"] == 100.0 and off["slowdown_vs_on"] == 3.0
    assert base["util_required"] == pytest.approx(0.5) and off["util_executed"] == pytest.approx(400 / 6 / 100)
    assert bf16["bf16_speedup"] == pytest.approx(0.5) and bf16["util_required"] == pytest.approx(1.0)
    targets = check_targets({"train": rows})
    assert targets["all_on_speedup_vs_all_off"]["met"] and targets["all_on_peak_share_of_all_off"]["met"]
    assert not targets["bf16_speedup"]["met"]
    assert "| base:all_off | fp32 | 6.00 | 3.00 |" in format_report({"train": rows, "peaks": {
        "fp32_flops_per_s": 100.0, "bf16_flops_per_s": 25.0}})
