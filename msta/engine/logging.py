"""Run logging: rank-0 console and file log, metrics.jsonl, TensorBoard events, a progress bar and throughput/ETA.

Only rank 0 writes anything; on other ranks every method here is a no-op.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["setup_logging", "MetricWriter", "Throughput", "format_duration", "step_line", "progress_bar"]

_logger = logging.getLogger(__name__)


class _TqdmHandler(logging.StreamHandler):
    """Writes log records through `tqdm.write`, so console lines do not break the progress bar."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(rank: int, run_dir: Optional[str | Path] = None, level: int = logging.INFO) -> None:
    """Configures the `msta` logger: INFO to the console and `run_dir/train.log` on rank 0, warnings elsewhere."""
    root = logging.getLogger("msta")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(fmt if rank == 0 else logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    root.setLevel(level if rank == 0 else logging.WARNING)
    if rank == 0 and run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(run_dir) / "train.log")
        fh.setFormatter(fmt)
        root.addHandler(fh)


class MetricWriter:
    """Appends metrics to `run_dir/metrics.jsonl` and TensorBoard (rank 0 only).

    Each record is one JSON line: {"step": ..., "split": "train" | "val" | ..., <name>: <float>, ...}.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))
            except ImportError:  # pragma: no cover - tensorboard is an install requirement
                _logger.warning("tensorboard is not installed (`pip install tensorboard`); writing metrics.jsonl only")

    def write(self, step: int, split: str, values: dict[str, float], **extra) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: float(v) for k, v in values.items()}, **extra}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{split}/{k}", float(v), step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


@dataclass
class Throughput:
    """Clips per second over the steps since the last `rate()` call, and the ETA of the run."""
    total_steps: int
    _t0: float = field(default_factory=time.perf_counter)
    _clips: int = 0
    _steps: int = 0
    _rate_steps: float = 0.0

    def update(self, clips: int) -> None:
        self._clips += clips
        self._steps += 1

    def rate(self) -> float:
        """Clips/s since the last call; resets the window."""
        dt = max(time.perf_counter() - self._t0, 1e-9)
        clips_per_s = self._clips / dt
        self._rate_steps = self._steps / dt
        self._t0, self._clips, self._steps = time.perf_counter(), 0, 0
        return clips_per_s

    def eta(self, step: int) -> float:
        """Seconds left at the last measured step rate."""
        return (self.total_steps - step) / self._rate_steps if self._rate_steps > 0 else float("nan")


def format_duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def step_line(step: int, total: int, epoch: int, losses: dict[str, float], lr: float, clips_per_s: float,
              eta_s: float) -> str:
    """`step 120/2500 ep 3 | loss 1.2345 ce 1.0012 cc 0.2333 | lr 3.00e-04 | 45.2 clips/s | eta 0:12:34`."""
    terms = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
    return (f"step {step}/{total} ep {epoch} | {terms} | lr {lr:.2e} | {clips_per_s:.1f} clips/s | "
            f"eta {format_duration(eta_s)}")


def progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar over optimiser steps on rank 0 when stderr is a terminal (log files get the step lines only)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not (enabled and sys.stderr.isatty()), unit="step",
                dynamic_ncols=True, leave=False, file=sys.stderr)
