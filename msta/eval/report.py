"""Evaluation reports: ``results.json`` records, markdown tables and PNG plots.

A number without its protocol is not reproducible (peers.md §3: video pools, templates and views differ between
repos), so every ``EvalRecord`` states the model, weights, checkpoint, frames, views, templates, split files,
class tables and video pool next to its metrics.

Plots use matplotlib's object API on an Agg canvas (``matplotlib.figure.Figure``), imported lazily: no pyplot, no
global backend switch, nothing left open, and importing this module stays cheap.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from msta import __version__
from msta.eval.metrics import mean_std

__all__ = [
    "EvalRecord",
    "RESULTS_FILE",
    "load_results",
    "plot_accuracy_vs_shots",
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "render_markdown",
    "table_title",
    "write_results",
]

_logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PathLike = Union[str, os.PathLike]


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class EvalRecord:
    """Everything needed to reproduce and compare one evaluation.

    Attributes:
        protocol: "zeroshot", "fewshot", "b2n" or "supervised".
        dataset: evaluated dataset, e.g. "hmdb51".
        model_name: open_clip architecture, e.g. "ViT-B-16".
        pretrained: open_clip pretrained tag or weight file ("" for random init).
        checkpoint: adapter checkpoint evaluated ("" for the frozen model).
        num_frames: frames per clip.
        views: ``{"clips": temporal clips, "crops": spatial crops}`` per video.
        templates: prompt templates used to build class embeddings.
        split_files: test lists, one per split, in the order of ``split_metrics``.
        class_tables: class tables (one, or one per split where the classes differ).
        video_pool: which videos the lists draw from, e.g. "K600 train+val+test of the 220 new classes".
        num_videos: videos evaluated, summed over splits.
        num_bad_videos: videos that failed to decode and were replaced.
        metrics: the headline numbers, e.g. ``{"top1_mean": .., "top1_std": ..}`` or base/novel/HM.
        split_metrics: per-split metrics, ``{split name: {metric: value}}``.
        created: ISO 8601 UTC time of writing.
        msta_version: the toolkit version that produced it.
        extra: anything protocol-specific (shots K, seeds, starting point "CLIP" or "K400-finetuned").
    """

    protocol: str
    dataset: str
    model_name: str
    pretrained: str = ""
    checkpoint: str = ""
    num_frames: int = 8
    views: dict[str, int] = field(default_factory=lambda: {"clips": 1, "crops": 1})
    templates: list[str] = field(default_factory=list)
    split_files: list[str] = field(default_factory=list)
    class_tables: list[str] = field(default_factory=list)
    video_pool: str = ""
    num_videos: int = 0
    num_bad_videos: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    split_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    created: str = field(default_factory=_now_iso)
    msta_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if set(self.views) != {"clips", "crops"}:
            raise ValueError(f"views must have exactly the keys 'clips' and 'crops', got {sorted(self.views)}")
        if self.num_frames < 1 or self.num_videos < 0 or self.num_bad_videos < 0:
            raise ValueError(f"num_frames must be >= 1 and video counts >= 0, got num_frames={self.num_frames}, "
                             f"num_videos={self.num_videos}, num_bad_videos={self.num_bad_videos}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: tuples become lists, numpy scalars floats, and NaN / inf become None."""
        return _json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvalRecord":
        """Rebuild a record from ``to_dict`` output; unknown keys are an error (they signal a schema mismatch)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown EvalRecord fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))


def _json_safe(obj: Any) -> Any:
    # Strict JSON has no NaN: a class with no test video gives a NaN accuracy, which is written as null.
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_results(record: EvalRecord, path: PathLike) -> Path:
    """Write ``record`` as strict JSON.

    Args:
        record: the evaluation record.
        path: a ``.json`` file, or a directory (then ``<dir>/results.json``); parents are created.

    Returns:
        The path written. The write goes through a temporary file and a rename, so a crash never leaves half a file.
    """
    path = Path(path)
    if path.suffix != ".json":
        path = path / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    _logger.info("wrote %s", path)
    return path


def load_results(path: PathLike) -> EvalRecord:
    """Read a record written by ``write_results`` (a file, or a directory holding ``results.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    return EvalRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _fmt(value: Optional[float], digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


_METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "mean_class": "mean-class"}


def table_title(prefix: str, rows: Mapping[str, Mapping[str, float]], unit: str = "%") -> str:
    """A table's section title that names exactly the metrics its columns hold.

    Top-5 is left out of splits with 5 classes or fewer (it would be 100 %), so a fixed "top-1 / top-5" title would
    promise a column that is not there.

    Args:
        prefix: e.g. "per split".
        rows: the table's rows, as given to ``render_markdown``.
        unit: shown after the metric names.

    Returns:
        e.g. "per split (top-1 / top-5, %)" or "per split (top-1, %)".
    """
    columns = list(dict.fromkeys(k for metrics in rows.values() for k in metrics))
    names = " / ".join(_METRIC_NAMES.get(c, c) for c in columns)
    return f"{prefix} ({names}, {unit})" if names else prefix


def render_markdown(
        rows: Mapping[str, Mapping[str, float]],
        columns: Optional[Sequence[str]] = None,
        *,
        summary: bool = True,
        digits: int = 2,
        ddof: int = 0,
) -> str:
    """A markdown table: one row per run or split, one column per metric, plus a ``mean ± std`` row.

    Args:
        rows: ``{row name: {metric: value}}``, e.g. ``record.split_metrics``.
        columns: metrics to show, in order; default: every metric, in first-seen order.
        summary: append the ``mean ± std`` row (over the rows that have the metric).
        digits: decimals shown.
        ddof: passed to ``mean_std``.

    Returns:
        The table, ending with a newline.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for metrics in rows.values() for k in metrics))
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics.get(c), digits) for c in columns) + " |")
    if summary and rows:
        cells = []
        for c in columns:
            values = [m[c] for m in rows.values() if m.get(c) is not None and not math.isnan(m[c])]
            mean, std = mean_std(values, ddof=ddof)
            cells.append("-" if not values else f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append("| mean ± std | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# plots


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib: `pip install matplotlib`") from e
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    _logger.info("wrote %s", path)
    return path


# Beyond this many classes tick labels overlap into a black band, so they are left off.
_MAX_LABELLED_CLASSES = 60


def plot_confusion_matrix(
        cm: np.ndarray,
        path: PathLike,
        class_names: Optional[Sequence[str]] = None,
        *,
        normalize: bool = True,
        title: str = "",
) -> Path:
    """Save a confusion-matrix heat map as PNG.

    Args:
        cm: (C, C) counts, rows = true class, columns = predicted class (``metrics.confusion_matrix``).
        path: output ``.png`` file.
        class_names: C names for the ticks (omitted above 60 classes).
        normalize: show each row as a fraction of the class's videos.
        title: figure title.

    Returns:
        The path written.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be square (C, C), got shape {cm.shape}")
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    num_classes = cm.shape[0]
    side = min(4 + 0.18 * num_classes, 24)
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if class_names is not None and num_classes <= _MAX_LABELLED_CLASSES:
        ticks = np.arange(num_classes)
        ax.set_xticks(ticks, labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels=list(class_names), fontsize=7)
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    return _save(fig, path)


def plot_per_class_accuracy(
        accuracy: Sequence[float],
        path: PathLike,
        class_names: Optional[Sequence[str]] = None,
        *,
        sort: bool = True,
        title: str = "",
) -> Path:
    """Save a horizontal bar chart of per-class accuracy as PNG.

    Args:
        accuracy: (C,) percentages (``metrics.per_class_accuracy``); NaN classes (no videos) are left out.
        path: output ``.png`` file.
        class_names: C names; default "class <i>".
        sort: order the bars from worst to best, so the failures are on top.
        title: figure title.

    Returns:
        The path written.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(acc.size)]
    if len(names) != acc.size:
        raise ValueError(f"got {acc.size} accuracies but {len(names)} class names")
    keep = ~np.isnan(acc)
    acc, names = acc[keep], [n for n, k in zip(names, keep) if k]
    order = np.argsort(acc, kind="stable") if sort else np.arange(acc.size)
    fig = _figure(8, min(2 + 0.16 * max(acc.size, 1), 60))
    ax = fig.add_subplot()
    ax.barh(np.arange(acc.size), acc[order], color="tab:blue")
    ax.set_yticks(np.arange(acc.size), labels=[names[i] for i in order], fontsize=6)
    ax.set_ylim(-0.5, max(acc.size, 1) - 0.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    if acc.size:
        mean = float(acc.mean())
        ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean-class {mean:.1f}%")
        ax.legend(loc="lower right")
    ax.set_title(title or "per-class accuracy")
    return _save(fig, path)


def plot_accuracy_vs_shots(
        curves: Mapping[str, Mapping[int, float]],
        path: PathLike,
        *,
        metric: str = "top-1 (%)",
        title: str = "",
) -> Path:
    """Save a few-shot curve (accuracy against K shots per class, one line per run or dataset) as PNG.

    Args:
        curves: ``{label: {K: accuracy}}``, e.g. ``{"hmdb51": {2: 60.1, 4: 64.0, 8: 68.2, 16: 71.3}}``.
        path: output ``.png`` file.
        metric: y-axis label.
        title: figure title.

    Returns:
        The path written.
    """
    if not curves:
        raise ValueError("curves is empty; give at least one {label: {K: accuracy}}")
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    all_shots = set()
    for label, points in curves.items():
        points = {int(k): float(v) for k, v in points.items()}     # JSON round trips turn K into a string
        shots = sorted(points)
        all_shots.update(shots)
        ax.plot(shots, [points[k] for k in shots], marker="o", label=label)
    # K doubles in the standard protocol (2, 4, 8, 16), so a log-2 axis spaces the points evenly.
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_shots), labels=[str(k) for k in sorted(all_shots)])
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or "accuracy vs shots")
    return _save(fig, path)
