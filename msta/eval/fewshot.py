"""Gathering few-shot results: the K = 2, 4, 8, 16 records of one or more datasets in one table and one plot.

Each source is an evaluation record (``results.json`` written by ``protocols.fewshot``), a folder holding one, or a
training run folder whose few-shot evaluation lives in ``<run>/eval_fewshot/``. The engine writes its training
summary to ``<run>/train_summary.json``; a run folder without an evaluation is answered with the command to run
(runs written before the rename hold the summary as ``results.json``, a different schema that is skipped).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from msta.eval.outputs import MARKDOWN_FILE, provenance_markdown
from msta.eval.report import RESULTS_FILE, EvalRecord, plot_accuracy_vs_shots, render_markdown

__all__ = ["FEWSHOT_EVAL_DIR", "find_fewshot_record", "gather_fewshot"]

_logger = logging.getLogger(__name__)

FEWSHOT_EVAL_DIR = "eval_fewshot"   # where scripts/eval.py puts a run's few-shot evaluation by default
SUMMARY_FILE = "fewshot_summary.json"
TRAIN_SUMMARY_FILE = "train_summary.json"   # msta.engine.trainer.SUMMARY_FILE (not imported: no engine deps here)


def find_fewshot_record(source: str | Path) -> tuple[Path, EvalRecord]:
    """Locates and reads the few-shot evaluation record of ``source`` (see the module doc).

    Raises:
        FileNotFoundError / ValueError: with the command that produces the missing record.
    """
    source = Path(source)
    candidates = [source] if source.suffix == ".json" else [source / RESULTS_FILE,
                                                              source / FEWSHOT_EVAL_DIR / RESULTS_FILE]
    for path in candidates:
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if "protocol" not in data:  # an older run's training summary (now train_summary.json), not a record
            continue
        record = EvalRecord.from_dict(data)
        if record.protocol != "fewshot":
            raise ValueError(f"{path} is a {record.protocol!r} record, not a few-shot one")
        return path, record
    run = " (a training run: it holds train_summary.json)" if (source / TRAIN_SUMMARY_FILE).is_file() else ""
    raise FileNotFoundError(f"no few-shot evaluation record at {source}{run} (looked for "
                            f"{', '.join(str(c) for c in candidates)}); evaluate the run first: "
                            f"python scripts/eval.py --cfg CONFIG --protocol fewshot --ckpt {source}/best")


def _check_same(records: Sequence[EvalRecord], paths: Sequence[Path]) -> list[str]:
    """Warnings for settings that differ between gathered records (their numbers are then not one protocol)."""
    notes = []
    for key in ("model_name", "pretrained", "num_frames", "views", "templates", "video_pool"):
        values = {json.dumps(getattr(r, key), sort_keys=True) for r in records}
        if len(values) > 1:
            notes.append(f"runs differ in {key}: " + "; ".join(f"{p}: {getattr(r, key)}"
                                                                for r, p in zip(records, paths)))
    if len({r.extra.get("start") for r in records}) > 1:   # CLIP vs K400-finetuned starts differ by 5-8 pts
        notes.append("runs differ in their starting point: " + "; ".join(f"{p}: {r.extra.get('start')}"
                                                                         for r, p in zip(records, paths)))
    for n in notes:
        _logger.warning("%s", n)
    return notes


def gather_fewshot(sources: Sequence[str | Path], out_dir: Optional[str | Path] = None,
                   metric: str = "top1") -> dict:
    """One table (rows: dataset, columns: K) and one accuracy-vs-K plot from few-shot records.

    Args:
        sources: records, record folders or run folders (see ``find_fewshot_record``).
        out_dir: where to write ``results.md``, ``fewshot_summary.json`` and ``accuracy_vs_shots.png``.
        metric: the split metric gathered (its mean over the record's splits).

    Returns:
        ``{"table": {dataset: {K: value}}, "sources": {dataset: {K: record path}}, "notes": [...]}``.

    Raises:
        ValueError: two records for the same dataset and K.
    """
    found = [find_fewshot_record(s) for s in sources]
    curves: dict[str, dict[int, float]] = {}
    origin: dict[str, dict[int, str]] = {}
    for path, rec in found:
        k = int(rec.extra.get("shots", 0))
        value = rec.metrics.get(f"{metric}_mean")
        if k in curves.setdefault(rec.dataset, {}):
            raise ValueError(f"two {rec.dataset} records with K={k}: {origin[rec.dataset][k]} and {path}")
        curves[rec.dataset][k] = value
        origin.setdefault(rec.dataset, {})[k] = str(path)
    notes = _check_same([r for _, r in found], [p for p, _ in found])
    summary = {"metric": metric, "table": {d: dict(sorted(c.items())) for d, c in curves.items()},
               "sources": origin, "notes": notes}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        shots = sorted({k for c in curves.values() for k in c})
        rows = {d: {f"K={k}": c.get(k) for k in shots} for d, c in curves.items()}
        md = [f"# few-shot ({metric}, %, all-way)\n\n", render_markdown(rows, summary=False),
              "\n## how each number was obtained\n"]
        for path, rec in found:
            md += [f"\n### {rec.dataset}, K={rec.extra.get('shots')} (`{path}`)\n\n", provenance_markdown(rec)]
        md += [f"- note: {n}\n" for n in notes]
        (out / MARKDOWN_FILE).write_text("".join(md), encoding="utf-8")
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        try:
            plot_accuracy_vs_shots(curves, out / "accuracy_vs_shots.png", metric=f"{metric} (%)")
        except ImportError as e:
            _logger.warning("plot skipped: %s", e)
    return summary
