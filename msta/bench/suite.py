"""The benchmark suite: which configurations, each run in its own subprocess, and the derived figures.

``run_suite(["train", "eval", "data", "ckpt"], tiny=False)`` returns one JSON-able dict; ``msta.bench.report``
turns it into markdown. Ratios (speed-ups, memory, bf16 vs fp32, checkpoint share) are computed from rows of the
same invocation, because the shared machines are too noisy to compare numbers across runs.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from typing import Callable, Optional, Sequence

from msta.bench.eval_bench import EvalSpec
from msta.bench.peaks import DEFAULT_SHAPES, TINY_SHAPES
from msta.bench.train_step import TrainSpec

__all__ = ["GROUPS", "train_specs", "eval_spec", "data_spec", "ckpt_specs", "run_worker", "run_suite",
           "derive_train", "machine_info"]

_logger = logging.getLogger(__name__)

GROUPS = ("train", "eval", "data", "ckpt", "index", "retrieval", "viclip")

# each DESIGN §3 switch off in turn (the description cache means: targets once per run vs every step)
ABLATIONS: dict[str, dict] = {
    "no_prefix_no_grad": {"frozen_prefix_no_grad": False},
    "no_cache_text": {"cache_text": False},
    "no_cut_text": {"cut_text": False},
    "no_desc_cache": {"cache_descriptions": False},
    "all_off": {"frozen_prefix_no_grad": False, "cache_text": False, "cut_text": False, "cache_descriptions": False},
}


def _base(tiny: bool, steps: Optional[int]) -> TrainSpec:
    if tiny:
        # msta-tiny: vision width 64, 2 blocks; r must divide 64 for the grouped temporal conv
        return TrainSpec(name="msta_r16_b2-2", model="msta-tiny", msta_dim=16, msta_blocks=(2, 2),
                         steps=steps or 1, warmup=1, local_peak_shape=TINY_SHAPES[0])
    return TrainSpec(steps=steps or 3, warmup=1)


def train_specs(tiny: bool = False, steps: Optional[int] = None, precisions: Sequence[str] = ("fp32", "bf16")
                ) -> list[TrainSpec]:
    """All-on, each switch off, all off, ST-Adapter 12x384, MSTA r=256 in blocks 1-12 (tiny: scaled-down
    analogues); in bf16 the all-on rows of the three adapter set-ups (an ablation row costs 2-3x an all-on one)."""
    base = _base(tiny, steps)
    st = replace(base, name="st_adapter_2x32" if tiny else "st_adapter_12x384", msta=False, st_adapter=True,
                 st_width=32 if tiny else 384, st_blocks=(1, 2) if tiny else (1, 12))
    wide = replace(base, name="msta_r32_b1-2" if tiny else "msta_r256_b1-12", msta_dim=32 if tiny else 256,
                   msta_blocks=(1, 2) if tiny else (1, 12))
    specs = []
    if "fp32" in precisions:
        specs.append(base)
        specs += [replace(base, name=f"{base.name}:{tag}", **kw) for tag, kw in ABLATIONS.items()]
        specs += [st, wide]
    if "bf16" in precisions:
        specs += [replace(s, precision="bf16") for s in (base, st, wide)]
    return specs


def eval_spec(tiny: bool = False) -> EvalSpec:
    if tiny:
        return EvalSpec(model="msta-tiny", msta_dim=16, msta_blocks=(2, 2), clips=2, views=3, batch_size=2)
    return EvalSpec(clips=4, views=3, batch_size=2)


def data_spec(tiny: bool = False) -> dict:
    if tiny:
        return {"name": "data", "clips": 2, "num_videos": 1, "video_frames": 16, "resolutions": [(240, 320)]}
    return {"name": "data", "clips": 16}


def ckpt_specs(tiny: bool = False) -> list[TrainSpec]:
    return [s for s in train_specs(tiny, precisions=("fp32",)) if ":" not in s.name]


def machine_info() -> dict:
    """CPU model, core count, torch and Python versions, load average at the time of the call."""
    import torch
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = []
    return {"cpu": model, "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "loadavg": load, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def run_worker(jobs: Sequence[tuple[str, dict]], threads: int = 2, timeout: float = 3600) -> list[dict]:
    """Runs ``msta.bench.worker`` on ``jobs`` in one fresh subprocess; returns its results (raises with its stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ, DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"),
                   OMP_NUM_THREADS=str(threads))
        payload = json.dumps([[kind, {**spec, "threads": threads}] for kind, spec in jobs])
        proc = subprocess.run([sys.executable, "-m", "msta.bench.worker", payload, out], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            names = ", ".join(f"{k} {s.get('name')}" for k, s in jobs)
            raise RuntimeError(f"benchmark worker ({names}) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def _group_key(row: dict) -> tuple:
    # rows that run the same model on the same workload need the same FLOPs, whatever the switches and precision
    keys = ("model", "num_frames", "image_size", "micro_batch", "num_classes", "msta", "msta_dim", "msta_blocks",
            "st_adapter", "st_width", "st_blocks")
    return tuple(tuple(row[k]) if isinstance(row[k], list) else row[k] for k in keys)  # JSON turns tuples to lists


def derive_train(rows: list[dict], peaks: dict) -> None:
    """Adds required FLOPs, FLOP/s, utilisation and ratios to the train rows in place.

    ``required_flops`` of a row = the executed FLOPs of the all-on row of the same model and workload (fp32
    preferred); ``util_required`` = required / step time / the measured matmul peak of the row's precision;
    ``speedup_vs_off`` / ``slowdown_vs_on`` compare with the all-on row of the same group and precision;
    ``bf16_speedup`` = fp32 step time / bf16 step time of the same configuration; ``local_peak_flops_per_s`` =
    median of the peaks measured beside the row's own steps, ``util_required_local`` = required FLOP/s against it.
    """
    on = {}
    for r in rows:
        if r["all_on"]:
            on.setdefault((_group_key(r), r["precision"]), r)
    for r in rows:
        key = _group_key(r)
        ref = on.get((key, r["precision"])) or on.get((key, "fp32"))
        req_src = on.get((key, "fp32")) or ref
        r["required_flops"] = req_src["flops"] if req_src else r["flops"]
        peak = peaks.get(f"{r['precision']}_flops_per_s", 0.0)
        r["peak_flops_per_s"] = peak
        r["flops_per_s"] = r["flops"] / r["step_s"] if r["step_s"] > 0 else 0.0
        r["useful_flops_per_s"] = r["required_flops"] / r["step_s"] if r["step_s"] > 0 else 0.0
        r["util_executed"] = r["flops_per_s"] / peak if peak else 0.0
        r["util_required"] = r["useful_flops_per_s"] / peak if peak else 0.0
        local = statistics.median(r["local_peaks"]) if r.get("local_peaks") else 0.0
        r["local_peak_flops_per_s"] = local
        r["util_required_local"] = r["useful_flops_per_s"] / local if local else 0.0
        r["slowdown_vs_on"] = r["step_s"] / ref["step_s"] if ref and ref["step_s"] > 0 else float("nan")
        r["peak_vs_on"] = r["peak_rss_mb"] / ref["peak_rss_mb"] if ref else float("nan")
        r["step_peak_vs_on"] = (r["step_peak_mb"] / ref["step_peak_mb"]
                                if ref and ref["step_peak_mb"] and ref["step_peak_mb"] > 0 else float("nan"))
        if r["precision"] == "bf16":
            twin = next((x for x in rows if x["precision"] == "fp32" and _group_key(x) == key
                         and x["all_on"] == r["all_on"] and x["name"] == r["name"]), None)
            r["bf16_speedup"] = twin["step_s"] / r["step_s"] if twin and r["step_s"] > 0 else float("nan")


def _peak_spec(tiny: bool) -> dict:
    shapes = TINY_SHAPES if tiny else DEFAULT_SHAPES
    return {"name": "peaks", "shapes": [list(s) for s in shapes], "repeats": 2 if tiny else 5}


def _selected(name: str, only: Optional[str]) -> bool:
    # comma-separated; "=name" matches exactly, anything else as a substring
    if not only:
        return True
    return any(name == o[1:] if o.startswith("=") else o in name for o in only.split(","))


def _jobs(groups: Sequence[str], tiny: bool, steps: Optional[int], only: Optional[str],
          precisions: Sequence[str]) -> list[tuple[str, dict]]:
    jobs: list[tuple[str, dict]] = []
    if "train" in groups:
        # peaks before and after the train rows: the larger counts (load from other processes only lowers it)
        jobs.append(("peaks", _peak_spec(tiny)))
        jobs += [("train", s.to_dict()) for s in train_specs(tiny, steps, precisions) if _selected(s.name, only)]
        jobs.append(("peaks", _peak_spec(tiny)))
    if "viclip" in groups:
        # ViCLIP-B/16 all on / all off and the frame-wise CLIP step, between their own peaks (msta.bench.viclip_bench)
        from msta.bench.viclip_bench import viclip_specs
        jobs.append(("peaks", _peak_spec(tiny)))
        jobs += [("train", s.to_dict()) for s in viclip_specs(tiny, steps)]
        jobs.append(("peaks", _peak_spec(tiny)))
    if "eval" in groups:
        jobs.append(("eval", eval_spec(tiny).to_dict()))
    if "data" in groups:
        jobs.append(("data", data_spec(tiny)))
    if "ckpt" in groups:
        jobs += [("ckpt", s.to_dict()) for s in ckpt_specs(tiny)]
    if "index" in groups:
        from msta.bench.index_bench import index_spec
        jobs.append(("index", index_spec(tiny).to_dict()))
    if "retrieval" in groups:
        from msta.bench.retrieval_bench import retrieval_spec
        jobs.append(("retrieval", retrieval_spec(tiny).to_dict()))
    return jobs


def run_suite(groups: Sequence[str] = GROUPS, *, tiny: bool = False, steps: Optional[int] = None,
              threads: int = 2, only: Optional[str] = None, precisions: Sequence[str] = ("fp32", "bf16"),
              isolate: Optional[bool] = None,
              progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Runs the chosen benchmark groups.

    Args:
        groups: any of train, eval, data, ckpt.
        tiny: msta-tiny and few steps (CI); otherwise the full ViT-B-16 workload.
        steps: timed steps per train configuration (default 3, tiny 1).
        threads: torch threads in every worker.
        only: train configurations to run, comma-separated: substrings of the name, or "=name" for an exact match.
        precisions: train precisions to run ("fp32", "bf16"); bf16 rows exist for the three all-on set-ups.
        isolate: one subprocess per configuration (default: True at full size, False for tiny, where the imports
            would cost more than the work; peaks are then separated by resetting the RSS high-water mark).
        progress: called with a line before each subprocess (the script prints it).

    Returns:
        {"machine": ..., "settings": ..., "peaks": ..., "train": [...], "eval": {...}, "data": {...}, "ckpt": [...]}.
    """
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"unknown benchmark groups {bad}; choose from {', '.join(GROUPS)} or all")
    isolate = (not tiny) if isolate is None else isolate
    result: dict = {"machine": machine_info(),
                    "settings": {"tiny": tiny, "steps": steps, "threads": threads, "isolated": isolate,
                                 "only": only, "precisions": list(precisions)}}
    jobs = _jobs(groups, tiny, steps, only, precisions)
    outputs: list[dict] = []
    for batch in ([[j] for j in jobs] if isolate else [jobs]):
        progress(", ".join(f"{kind} {spec.get('name')} {spec.get('precision', '')}".rstrip() for kind, spec in batch))
        outputs += run_worker(batch, threads)
    peaks = [o for o in outputs if o["kind"] == "peaks"]
    rows = [o for o in outputs if o["kind"] == "train"]
    if peaks:
        best = {k: max(p[k] for p in peaks) for k in ("fp32_flops_per_s", "bf16_flops_per_s")}
        best.update(before=peaks[0], after=peaks[-1], cpu_flags=peaks[0]["cpu_flags"])
        for row in rows:
            row["all_on"] = TrainSpec.from_dict({k: row[k] for k in TrainSpec().to_dict()}).all_on
        derive_train(rows, best)
        from msta.bench.viclip_bench import is_viclip_row, viclip_summary
        if any(is_viclip_row(r) for r in rows):
            result["viclip"] = viclip_summary([r for r in rows if is_viclip_row(r)])
            rows = [r for r in rows if not is_viclip_row(r)]
        result["peaks"] = best
        if rows or "train" in groups:
            result["train"] = rows
    for o in outputs:
        if o["kind"] in ("eval", "data", "index", "retrieval"):
            result[o["kind"]] = o
    if "ckpt" in groups:
        result["ckpt"] = [o for o in outputs if o["kind"] == "ckpt"]
    result["machine"]["loadavg_end"] = machine_info()["loadavg"]
    return result
