"""Writing a protocol's outputs: results.json (``EvalRecord``), results.md (provenance + tables) and PNG plots."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

from msta.devices import world
from msta.eval import metrics as M
from msta.eval.evaluator import ScoreMatrix
from msta.eval.report import (EvalRecord, plot_confusion_matrix, plot_per_class_accuracy, render_markdown,
                              write_results)

__all__ = ["MARKDOWN_FILE", "provenance_markdown", "table", "write_outputs", "write_plots"]

_logger = logging.getLogger(__name__)

MARKDOWN_FILE = "results.md"


def provenance_markdown(record: EvalRecord) -> str:
    """The lines that say how a number was obtained, as a markdown bullet list."""
    views = record.views
    templates = record.templates if len(record.templates) <= 4 else record.templates[:4] + ["..."]
    lines = [
        f"- protocol: **{record.protocol}** on **{record.dataset}**",
        f"- model: {record.model_name}, weights: {record.pretrained or 'random init'}",
        f"- checkpoint: {record.checkpoint or 'none (frozen CLIP, no adapters)'}",
        *([f"- start: {record.extra['start']}"] if record.extra.get("start") else []),   # few-shot: CLIP or K400
        f"- frames: {record.num_frames}, views: {views['clips']} clips x {views['crops']} crops "
        f"(softmax scores summed over views)",
        f"- templates ({len(record.templates)}): " + ", ".join(f"`{t}`" for t in templates),
        "- split files: " + (", ".join(f"`{s}`" for s in record.split_files) or "-"),
        "- class tables: " + (", ".join(f"`{s}`" for s in record.class_tables) or "-"),
        f"- video pool: {record.video_pool or '-'}",
        f"- videos: {record.num_videos} evaluated, {record.num_bad_videos} undecodable and left out",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(record: EvalRecord, out_dir: str | Path, tables: Mapping[str, str],
                  notes: Sequence[str] = ()) -> Path:
    """Writes ``results.json`` and ``results.md`` into ``out_dir``.

    Args:
        record: the evaluation record.
        out_dir: output folder (created).
        tables: section title -> markdown table (``render_markdown`` output).
        notes: extra lines under the tables (e.g. how HM was averaged).

    Returns:
        The folder (written by rank 0 only when several evaluation processes share the work).
    """
    out = Path(out_dir)
    if world()[0] != 0:
        return out
    write_results(record, out)
    parts = [f"# {record.protocol}: {record.dataset}\n", provenance_markdown(record)]
    for title, table in tables.items():
        parts += [f"\n## {title}\n\n", table]
    if notes:
        parts.append("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    (out / MARKDOWN_FILE).write_text("".join(parts), encoding="utf-8")
    _logger.info("wrote %s", out / MARKDOWN_FILE)
    return out


def write_plots(matrix: ScoreMatrix, out_dir: str | Path, tag: str,
                class_names: Optional[Sequence[str]] = None) -> list[Path]:
    """Confusion matrix and per-class accuracy PNGs of one evaluated split.

    Args:
        matrix: the split's scores.
        out_dir: output folder.
        tag: file-name suffix (the split name).
        class_names: readable names for the axes (default the raw labels).

    Returns:
        The files written (none when matplotlib is missing: logged, since plots are optional; none on ranks > 0).
    """
    out = Path(out_dir)
    if world()[0] != 0:
        return []
    names = list(class_names) if class_names is not None else matrix.classes
    try:
        cm = M.confusion_matrix(matrix.scores, matrix.labels)
        acc = M.per_class_accuracy(matrix.scores, matrix.labels)
        return [plot_confusion_matrix(cm, out / f"confusion_{tag}.png", names, title=f"confusion matrix: {tag}"),
                plot_per_class_accuracy(acc, out / f"per_class_{tag}.png", names, title=f"per-class top-1: {tag}")]
    except ImportError as e:
        _logger.warning("plots skipped: %s", e)
        return []


def table(rows: Mapping[str, Mapping[str, float]], columns: Optional[Sequence[str]] = None, *,
          summary: bool = True) -> str:
    """``render_markdown`` with the toolkit's defaults (2 decimals, population std)."""
    return render_markdown(rows, columns, summary=summary)
