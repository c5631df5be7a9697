"""Markdown tables and the target check for a ``run_suite`` result."""
from __future__ import annotations

import math
from typing import Optional

__all__ = ["TARGETS", "format_report", "check_targets"]

# the targets: (what, threshold, direction)
TARGETS = {
    "all_on_speedup_vs_all_off": (2.5, ">="),
    "all_on_peak_share_of_all_off": (0.5, "<="),
    "fp32_required_util": (0.70, ">="),
    "bf16_required_util": (0.70, ">="),
    "bf16_speedup": (1.7, ">="),
    "adapters_ckpt_share": (0.08, "<="),
}


def _f(x: Optional[float], fmt: str = "{:.2f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _train_table(rows: list[dict]) -> str:
    header = ["config", "prec", "s/step", "x all-on", "peak RSS MB", "step peak MB", "GFLOP exec", "GFLOP req",
              "exec GFLOP/s", "req % of peak", "local peak GFLOP/s", "req % of local peak"]
    body = [[r["name"], r["precision"], _f(r["step_s"]), _f(r["slowdown_vs_on"]), _f(r["peak_rss_mb"], "{:.0f}"),
             _f(r["step_peak_mb"], "{:.0f}"), _f(r["flops"] / 1e9, "{:.1f}"), _f(r["required_flops"] / 1e9, "{:.1f}"),
             _f(r["flops_per_s"] / 1e9, "{:.1f}"), _f(100 * r["util_required"], "{:.0f}"),
             _f(r.get("local_peak_flops_per_s", 0.0) / 1e9, "{:.1f}"),
             _f(100 * r.get("util_required_local", 0.0), "{:.0f}")] for r in rows]
    return _table(header, body)


def _base_rows(rows: list[dict]) -> tuple[Optional[dict], Optional[dict], Optional[dict]]:
    base = next((r for r in rows if r["all_on"] and r["precision"] == "fp32" and ":" not in r["name"]), None)
    off = next((r for r in rows if r["name"].endswith(":all_off") and r["precision"] == "fp32"), None)
    bf16 = next((r for r in rows if base and r["name"] == base["name"] and r["precision"] == "bf16"), None)
    return base, off, bf16


def check_targets(result: dict) -> dict[str, dict]:
    """{target: {"value", "threshold", "met"}} for every target the result has the rows for."""
    out: dict[str, dict] = {}

    def put(name: str, value: Optional[float]) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        threshold, op = TARGETS[name]
        out[name] = {"value": value, "threshold": threshold, "met": value >= threshold if op == ">=" else
                     value <= threshold}

    rows = result.get("train", [])
    base, off, bf16 = _base_rows(rows)
    if base and off:
        put("all_on_speedup_vs_all_off", off["step_s"] / base["step_s"])
        put("all_on_peak_share_of_all_off", base["peak_rss_mb"] / off["peak_rss_mb"])
    # utilisation against the peak measured beside the row's own steps (same machine state), when there is one
    if base:
        put("fp32_required_util", base.get("util_required_local") or base["util_required"])
    if bf16:
        put("bf16_required_util", bf16.get("util_required_local") or bf16["util_required"])
        put("bf16_speedup", bf16.get("bf16_speedup"))
    ckpt = result.get("ckpt") or []
    if ckpt:
        put("adapters_ckpt_share", ckpt[0]["ratio"])
    return out


def format_report(result: dict) -> str:
    """The tables of a suite result, as markdown."""
    parts = []
    m = result.get("machine", {})
    parts.append(f"machine: {m.get('cpu')} ({m.get('cpus')} CPUs), torch {m.get('torch')}, "
                 f"{result.get('settings', {}).get('threads')} threads, load average {' '.join(m.get('loadavg', []))}"
                 f" -> {' '.join(m.get('loadavg_end', []))}")
    if "peaks" in result:
        p = result["peaks"]
        parts.append(f"matmul peaks (measured, best of before/after): fp32 {p['fp32_flops_per_s'] / 1e9:.1f} GFLOP/s, "
                     f"bf16 {p['bf16_flops_per_s'] / 1e9:.1f} GFLOP/s; CPU flags "
                     + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in p.get("cpu_flags", {}).items()))
    if "train" in result:
        parts.append("### train step\n\n" + _train_table(result["train"]))
        extra = [[r["name"], _f(r.get("bf16_speedup"))] for r in result["train"] if r["precision"] == "bf16"]
        if extra:
            parts.append(_table(["config", "bf16 speed-up (fp32 s / bf16 s)"], extra))
    if "viclip" in result:
        from msta.bench.viclip_bench import viclip_table
        parts.append("### ViCLIP-B/16 train step (joint space-time attention) vs frame-wise CLIP\n\n"
                     + viclip_table(result["viclip"]))
    if "eval" in result:
        e = result["eval"]
        modes = ("batched_views", "per_view", "text_per_batch")
        body = [[mode, _f(e[f"{mode}_clips_per_s"], "{:.3f}"), _f(e[f"{mode}_s"]),
                 _f(e["batched_views_clips_per_s"] / e[f"{mode}_clips_per_s"])] for mode in modes]
        parts.append(f"### zero-shot eval ({e['clips']} clips x {e['views']} views, {e['num_frames']} frames, "
                     f"batch {e['batch_size']} clips, {e['num_classes']} classes; class embeddings once: "
                     f"{e['text_once_s']:.2f} s)\n\n" + _table(["mode", "clips/s", "s", "batched is x faster"], body))
    if "data" in result:
        d = result["data"]
        keys = sorted(k for k in d if k.endswith("_clips_per_s"))
        body = [[k[:-len("_clips_per_s")], _f(d[k], "{:.1f}"),
                 _f(d[k.replace("_clips_per_s", "_ms_per_clip")], "{:.0f}")] for k in keys]
        parts.append(f"### data (one worker, {d.get('threads')} thread, {d.get('num_frames')} frames at "
                     f"{d.get('image_size')})\n\n" + _table(["video_backend_resize", "clips/s", "ms/clip"], body))
    if "ckpt" in result:
        body = [[c["name"], f"{c['trainable']:,}", _f(c["adapters_bytes"] / 1e6), _f(c["full_bytes"] / 1e6, "{:.1f}"),
                 _f(100 * c["ratio"], "{:.2f}")] for c in result["ckpt"]]
        parts.append("### checkpoint size\n\n" + _table(["config", "trainable", "adapters MB", "full MB", "%"], body))
    if "index" in result:
        from msta.bench.index_bench import index_table
        parts.append("### folder index (msta index / msta search)\n\n" + index_table(result["index"]))
    if "retrieval" in result:
        from msta.bench.retrieval_bench import retrieval_table
        parts.append("### text <-> video retrieval evaluation\n\n" + retrieval_table(result["retrieval"]))
    targets = check_targets(result)
    if targets:
        body = [[k, _f(v["value"], "{:.3f}"), f"{TARGETS[k][1]} {v['threshold']}", "yes" if v["met"] else "MISS"]
                for k, v in targets.items()]
        parts.append("### targets\n\n" + _table(["target", "measured", "wanted", "met"], body))
    return "\n\n".join(parts) + "\n"
