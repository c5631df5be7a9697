"""Search and classification over a folder index, from Python or the ``msta search`` / ``msta classify`` commands.

Example:
    import msta
    index = msta.VideoIndex("my_videos.msta-index")      # the model is rebuilt from what the index records
    for hit in index.search("a dog catching a frisbee", topk=5):
        print(f"{hit.score:.3f}  {hit.path}")
    labels = index.classify(["juggling", "knitting", "skiing"])

Ranking is one matrix product: a query's (E,) embedding against the (N, E) video embeddings (the mean of each
video's normalised view embeddings, renormalised), then a top-k. Classification follows the evaluators exactly:
per-view logits ``logit_scale * cos``, a softmax over the classes per view, the mean over the views.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from msta.errors import UsageError, UserError
from msta.index.model import IDENTITY_KEYS, IndexModel
from msta.index.store import IndexData, read_index

__all__ = ["VideoIndex", "Hit", "Labelled", "IndexModelMismatch", "rank"]

_logger = logging.getLogger(__name__)


class IndexModelMismatch(UserError, ValueError):
    """The model offered for queries is not the one the index was built with (or that one is gone)."""


@dataclass(frozen=True)
class Hit:
    """One search result: the video (absolute path), its cosine similarity to the query, its rank (1 = best)."""
    rank: int
    path: str
    score: float


@dataclass(frozen=True)
class Labelled:
    """One video's classification: ``top`` = [(class name, probability), ...] best first."""
    path: str
    top: list[tuple[str, float]]


def rank(query: Tensor, embeddings: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """Top-k rows of ``embeddings`` by dot product with ``query``.

    Args:
        query: (Q, E) or (E,) normalised query embeddings.
        embeddings: (N, E) normalised item embeddings.
        topk: results per query (capped at N).

    Returns:
        (scores (Q, k) float32 descending, indices (Q, k) int64); ties keep the lower index first.
    """
    q = query[None] if query.ndim == 1 else query
    sims = q.float() @ embeddings.float().t()                                        # (Q, N)
    k = min(topk, embeddings.shape[0])
    if k == 0:
        return sims[:, :0], torch.zeros(sims.shape[0], 0, dtype=torch.long)
    kth = sims.topk(k, dim=1).values[:, -1]                                         # (Q,) the k-th best score
    scores, indices = [], []
    for row, bound in zip(sims, kth):
        # topk's order among equal scores is unspecified: sort the (few) candidates stably, ties by row index
        cand = (row >= bound).nonzero().flatten()
        order = torch.sort(row[cand], descending=True, stable=True).indices[:k]
        scores.append(row[cand[order]])
        indices.append(cand[order])
    return torch.stack(scores), torch.stack(indices)


class VideoIndex:
    """An index file opened for queries.

    Args:
        path: the index file (``msta index DIR --out PATH``).
        model: an ``IndexModel`` to encode queries with; it must have the index's identity. Default: rebuilt
            lazily, on the first text query, from the checkpoint and config the index records.
        ckpt: use this adapters file instead of the recorded one (e.g. it was moved); its identity is checked.
        device: where a rebuilt model runs (default: a GPU when present).

    Raises:
        msta.index.store.IndexFileError: not a readable index.
        IndexModelMismatch: ``model`` has another identity than the index.
    """

    def __init__(self, path: str | os.PathLike, *, model: Optional[IndexModel] = None, ckpt: Optional[str] = None,
                 device: Optional[str] = None):
        self.path = Path(path)
        self.data: IndexData = read_index(self.path)
        self._ckpt, self._device = ckpt, device
        self._model: Optional[IndexModel] = None
        self._paths: Optional[list[str]] = None
        if model is not None:
            self._check_model(model)
            self._model = model
        views = self.data.views
        self.embeddings: Tensor = (F.normalize(views.mean(dim=1), dim=-1) if views.shape[0]
                                   else torch.zeros(0, views.shape[-1]))   # (N, E)

    def __len__(self) -> int:
        return len(self.data.entries)

    @property
    def paths(self) -> list[str]:
        """The indexed videos' absolute paths, in row order."""
        if self._paths is None:   # built once: 100,000 Path joins cost more than a query
            root = self.data.root.rstrip("/\\") + os.sep
            self._paths = [root + e.path.replace("/", os.sep) for e in self.data.entries]
        return self._paths

    @property
    def failed(self) -> list[tuple[str, str]]:
        """(absolute path, reason) of the videos that could not be read."""
        return [(str(Path(self.data.root) / f.path), f.reason) for f in self.data.failed]

    def _check_model(self, model: IndexModel) -> None:
        diff = [f"{k}: index {self.data.identity.get(k)!r} vs model {model.identity.get(k)!r}"
                for k in IDENTITY_KEYS if self.data.identity.get(k) != model.identity.get(k)]
        if diff:
            raise IndexModelMismatch(f"{self.path} was built with another model ({'; '.join(diff)}); query it with the "
                             "checkpoint it was built with, or rebuild it with this one")

    @property
    def model(self) -> IndexModel:
        """The query encoder (built on first use from the index's recorded checkpoint and config)."""
        if self._model is None:
            from msta.index.model import load_index_model

            ckpt = self._ckpt or self.data.ckpt
            if ckpt and not Path(ckpt).exists():
                raise IndexModelMismatch(f"{self.path} was built with the adapters file {ckpt}, which is gone; "
                                        "pass the file's new place (--ckpt / VideoIndex(..., ckpt=...))")
            model = load_index_model(ckpt, config_dict=self.data.config, device=self._device)
            self._check_model(model)
            self._model = model
        return self._model

    def search_embedding(self, query: Tensor, topk: int = 10) -> list[Hit]:
        """Ranks the videos against one (E,) normalised query embedding."""
        if not len(self):
            return []
        scores, idx = rank(query, self.embeddings, topk)
        paths = self.paths
        return [Hit(r + 1, paths[i], float(s)) for r, (s, i) in enumerate(zip(scores[0].tolist(), idx[0].tolist()))]

    def search(self, text: str, topk: int = 10) -> list[Hit]:
        """The ``topk`` videos most similar to ``text`` (a raw query, no template), best first."""
        return self.search_embedding(self.model.embed_texts([text])[0], topk)

    def classify(self, labels: Sequence[str], templates: Optional[Sequence[str]] = None, topk: int = 1
                 ) -> list[Labelled]:
        """Labels every video with its ``topk`` most probable classes among ``labels``.

        Args:
            labels: readable class names.
            templates: prompt templates with ``{}`` (default: the checkpoint's, else ``"a video of {}."``).
            topk: classes per video (capped at the number of labels).

        Returns:
            One ``Labelled`` per video, in row order; probabilities are softmax scores averaged over the views.
        """
        labels = list(labels)
        if not labels:
            raise UsageError("no labels given; pass class names, e.g. ['juggling', 'knitting']")
        model = self.model
        templates = list(templates or model.templates or ["a video of {}."])
        probs = self.probabilities(model.embed_classes(labels, templates), model.logit_scale())
        k = min(topk, len(labels))
        top = probs.topk(k, dim=1) if len(self) else None
        out = []
        for row, path in enumerate(self.paths):
            pairs = zip(top.values[row].tolist(), top.indices[row].tolist())
            out.append(Labelled(path, [(labels[i], float(p)) for p, i in pairs]))
        return out

    def probabilities(self, class_emb: Tensor, logit_scale: float) -> Tensor:
        """(C, E) class embeddings -> (N, C) class probabilities, softmax per view then mean over the V views."""
        logits = logit_scale * self.data.views.float() @ class_emb.float().t()         # (N, V, C)
        return logits.softmax(dim=-1).mean(dim=1)
