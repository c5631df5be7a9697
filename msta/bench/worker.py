"""Runs benchmark jobs in this (fresh) process: ``python -m msta.bench.worker JOBS OUT``.

JOBS is a JSON list of ``[kind, spec]`` pairs (kind: train, eval, ckpt, data or peaks; spec: a JSON object); the
list of results is written to the JSON file OUT. The full-size suite sends one job per process, which keeps peak
memory, allocator state and caches of one configuration out of the next; the tiny (CI) suite sends all jobs to one
process, because importing torch and open_clip costs more than its whole workload.
"""
from __future__ import annotations

import json
import logging
import os
import sys

__all__ = ["run_one", "main"]


def run_one(kind: str, spec: dict) -> dict:
    """Dispatches to the measuring function of ``kind`` with ``spec`` and returns its JSON-able result."""
    threads = spec.pop("threads", 2)
    if kind == "train":
        from msta.bench.train_step import TrainSpec, run_train_bench
        return run_train_bench(TrainSpec.from_dict(spec), threads=threads)
    if kind == "eval":
        from msta.bench.eval_bench import EvalSpec, run_eval_bench
        return run_eval_bench(EvalSpec.from_dict(spec), threads=threads)
    if kind == "ckpt":
        from msta.bench.ckpt_bench import run_ckpt_bench
        from msta.bench.train_step import TrainSpec
        return run_ckpt_bench(TrainSpec.from_dict(spec))
    if kind == "data":
        from msta.data.bench import benchmark_data
        spec.pop("name", None)
        spec["resolutions"] = [tuple(r) for r in spec.get("resolutions", [(240, 320), (480, 640)])]
        return {"kind": "data", **benchmark_data(**spec)}
    if kind == "index":
        from msta.bench.index_bench import IndexSpec, run_index_bench
        return run_index_bench(IndexSpec.from_dict(spec), threads=threads)
    if kind == "retrieval":
        from msta.bench.retrieval_bench import RetrievalSpec, run_retrieval_bench
        return run_retrieval_bench(RetrievalSpec.from_dict(spec), threads=threads)
    if kind == "peaks":
        import torch

        from msta.bench.peaks import cpu_flags, matmul_peak
        torch.set_num_threads(threads)
        shapes = [tuple(s) for s in spec["shapes"]]
        out = {"kind": "peaks", "threads": torch.get_num_threads(), "cpu_flags": cpu_flags()}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peak = matmul_peak(dtype, shapes, repeats=spec.get("repeats", 5))
            out[f"{name}_flops_per_s"] = peak.flops_per_s
            out[f"{name}_shape"] = list(peak.shape)
            out[f"{name}_per_shape"] = peak.per_shape
        return out
    raise ValueError(f"unknown benchmark kind {kind!r}; expected train, eval, ckpt, data or peaks")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m msta.bench.worker JOBS_JSON OUT_JSON", file=sys.stderr)
        return 2
    jobs, out = argv
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    logging.basicConfig(level=os.environ.get("MSTA_BENCH_LOG", "WARNING"), format="%(name)s: %(message)s")
    results = [run_one(kind, dict(spec)) for kind, spec in json.loads(jobs)]
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
