"""Search and classification results as a table (for people) or JSON (for programs)."""
from __future__ import annotations

import json
from typing import Sequence

from msta.index.video_index import Hit, Labelled

__all__ = ["hits_table", "hits_json", "labels_table", "labels_json"]


def hits_table(hits: Sequence[Hit]) -> str:
    """``rank  score  path`` lines, best first."""
    lines = [f"{'rank':>4}  {'score':>7}  path"]
    lines += [f"{h.rank:>4}  {h.score:7.4f}  {h.path}" for h in hits]
    return "\n".join(lines)


def hits_json(query: str, hits: Sequence[Hit]) -> str:
    return json.dumps({"query": query, "results": [{"rank": h.rank, "path": h.path, "score": h.score}
                                                   for h in hits]}, indent=2)


def labels_table(rows: Sequence[Labelled]) -> str:
    """One line per video: the path, then ``prob% name`` for each of its top classes."""
    return "\n".join(f"{r.path}\t" + "\t".join(f"{p:6.1%} {name}" for name, p in r.top) for r in rows)


def labels_json(labels: Sequence[str], rows: Sequence[Labelled]) -> str:
    return json.dumps({"labels": list(labels), "results": [
        {"path": r.path, "top": [{"label": name, "probability": p} for name, p in r.top]} for r in rows]}, indent=2)
