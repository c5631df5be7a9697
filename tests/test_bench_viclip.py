"""The benchmark's viclip group (msta.bench.viclip_bench): three rows of one run and their ratios, tiny models."""
from __future__ import annotations

import math

import pytest

from msta.bench.report import format_report
from msta.bench.suite import run_suite
from msta.bench.viclip_bench import viclip_specs, viclip_summary


def test_specs_are_the_papers_workload_on_both_backbones():
    on, off, fw = viclip_specs()
    assert (on.model, off.model, fw.model) == ("viclip-b16", "viclip-b16", "ViT-B-16")
    for s in (on, off, fw):
        assert (s.num_frames, s.image_size, s.msta_dim, s.msta_blocks, s.micro_batch) == (8, 0, 128, (8, 12), 2)
    assert on.all_on and fw.all_on and not (off.frozen_prefix_no_grad or off.cache_text or off.cut_text
                                            or off.cache_descriptions)


def test_summary_ratios_and_the_1569_tokens():
    rows = [dict(s.to_dict(), all_on=s.all_on, step_s=t, flops=f, step_peak_mb=m)
            for s, t, f, m in zip(viclip_specs(), (2.0, 6.0, 1.0), (30e9, 90e9, 20e9), (400.0, 1000.0, 300.0))]
    s = viclip_summary(rows)
    assert s["speedup_all_on_vs_off"] == 3.0 and s["step_peak_share_on_vs_off"] == 0.4
    assert s["flops_vs_framewise"] == 1.5 and s["time_vs_framewise"] == 2.0
    assert (s["tokens_joint"], s["tokens_framewise"], s["sequences_framewise"]) == (1569, 197, 8)
    assert s["attention_ratio"] == pytest.approx(1569 ** 2 / (8 * 197 ** 2))


@pytest.mark.slow
def test_viclip_group_runs_in_one_invocation():
    result = run_suite(["viclip"], tiny=True, isolate=False)
    assert "train" not in result
    rows = result["viclip"]["rows"]
    assert [r["name"] for r in rows] == [s.name for s in viclip_specs(tiny=True)]
    assert [r["model"] for r in rows] == ["viclip-tiny", "viclip-tiny", "msta-tiny"]
    for r in rows:
        assert r["step_s"] > 0 and r["flops"] > 0 and math.isfinite(r["loss"])
    # switches off: the frozen branch encodes the descriptions in every step, so the step executes more FLOPs
    assert rows[1]["flops"] > rows[0]["flops"]
    assert rows[0]["trainable"] == rows[1]["trainable"]
    summary = result["viclip"]
    assert summary["flops_vs_framewise"] == rows[0]["flops"] / rows[2]["flops"]
    assert summary["tokens_joint"] == 1 + 8 * 16 and summary["tokens_framewise"] == 17
    text = format_report(result)
    assert "### ViCLIP-B/16 train step" in text and "viclip-tiny msta_r16_b2-2:all_off" in text
