"""The shared evaluation engine: class embeddings once per class set, all views of a clip in one forward, and a
score matrix that protocols restrict instead of recomputing.

- ``ClassBank`` encodes a class set's prompts once (DESIGN §3) and hands out the (C, E) embeddings on every later
  request for the same names and templates.
- ``score_dataset`` runs every video of a dataset once: the V views of B clips go through ``encode_video`` as one
  (B*V, T, C, H, W) batch, and the per-view scaled logits are kept as an (N, V, C) ``ScoreMatrix``.
- ``ScoreMatrix.restrict`` keeps some rows (videos) and columns (classes). It is exact, i.e. equal to evaluating
  directly on the smaller class set, because each class embedding depends on its own prompts only, and because the
  *logits* are restricted and the softmax over classes is taken afterwards (``scores``): a softmax taken over the
  full class set and then restricted would weight the views differently whenever V > 1.

A video that cannot be decoded is replaced by the dataset with another one; the engine notices the replacement
(the returned ``index`` differs from the requested one) and drops that row, so no video is counted twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from msta.eval.metrics import aggregate_views, topk_accuracy

__all__ = ["ClassBank", "ScoreMatrix", "score_dataset", "logit_scale_of"]

_logger = logging.getLogger(__name__)


class ClassBank:
    """Class-set text embeddings, computed once per (class names, templates) and reused.

    Args:
        model: a ``VideoCLIP`` (its class prompts are replaced by each new class set).

    Create a new bank after changing the model's weights (e.g. loading another checkpoint): the adapted text
    branch then gives different embeddings.
    """

    def __init__(self, model):
        self.model = model
        self._cache: dict[tuple, Tensor] = {}
        self.computed = 0  # how many class sets were actually encoded (tests check the reuse)

    @torch.no_grad()
    def __call__(self, names: Sequence[str], templates: Sequence[str]) -> Tensor:
        """Returns (C, E) L2-normalised embeddings of the classes ``names`` (readable), template-ensembled."""
        key = (tuple(names), tuple(templates))
        if key not in self._cache:
            prompts = [t.format(n) for n in names for t in templates]   # class-major, as set_class_prompts expects
            self.model.set_class_prompts(prompts, len(templates))
            self._cache[key] = self.model.encode_classes().float()
            self.computed += 1
            _logger.info("encoded %d classes x %d templates", len(names), len(templates))
        return self._cache[key]


@dataclass
class ScoreMatrix:
    """Per-view scaled logits of N videos against C classes, with the identities of rows and columns.

    Attributes:
        logits: (N, V, C) float32 ``logit_scale * cos(view, class)``.
        labels: (N,) int64 true class, an index into ``classes``.
        paths: N video paths (as in the list files): the row identities.
        classes: C raw labels: the column identities.
        bad: paths of videos that could not be decoded (not in the rows).
    """

    logits: Tensor
    labels: Tensor
    paths: list[str]
    classes: list[str]
    bad: list[str] = field(default_factory=list)

    @property
    def scores(self) -> Tensor:
        """(N, C) softmax probabilities summed over the views (the peers' multi-view rule)."""
        return aggregate_views(self.logits)

    def accuracy(self, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
        """Top-k accuracy (%) for each k < C (top-k with k >= C is trivially 100 and left out)."""
        ks = [k for k in ks if k == 1 or k < len(self.classes)]
        return topk_accuracy(self.scores, self.labels, ks)

    def restrict(self, classes: Sequence[str], paths: Optional[Sequence[str]] = None,
                 labels: Optional[Sequence[int]] = None) -> "ScoreMatrix":
        """The same videos scored against a subset of the classes, as a direct evaluation would score them.

        Args:
            classes: raw labels to keep, in the order the new columns take (e.g. a draw's class table).
            paths: rows to keep, in this order (default: every video whose class is in ``classes``).
            labels: the rows' labels as indices into ``classes`` (e.g. from the draw's own list file); they are
                checked against this matrix's labels, which catches a list that disagrees with the pool.

        Returns:
            A new ``ScoreMatrix`` with labels re-indexed into ``classes``.

        Raises:
            KeyError: an unknown class or path; ValueError: a row whose class is not kept, or conflicting labels.
        """
        col_of = {c: i for i, c in enumerate(self.classes)}
        missing = [c for c in classes if c not in col_of]
        if missing:
            raise KeyError(f"classes not scored: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        new_index = {c: i for i, c in enumerate(classes)}
        bad = set(self.bad)
        if paths is None:
            rows = [i for i, lab in enumerate(self.labels.tolist()) if self.classes[lab] in new_index]
            given = None
        else:
            row_of = {p: i for i, p in enumerate(self.paths)}
            unknown = [p for p in paths if p not in row_of and p not in bad]
            if unknown:
                raise KeyError(f"videos not scored: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
            good = [i for i, p in enumerate(paths) if p not in bad]   # bad videos stay out, as in the pool
            rows = [row_of[paths[i]] for i in good]
            given = [int(labels[i]) for i in good] if labels is not None else None
        new_labels = []
        for r in rows:
            name = self.classes[int(self.labels[r])]
            if name not in new_index:
                raise ValueError(f"{self.paths[r]} is a {name!r} video, but {name!r} is not among the kept classes")
            new_labels.append(new_index[name])
        if given is not None and given != new_labels:
            wrong = [self.paths[r] for r, a, b in zip(rows, given, new_labels) if a != b]
            raise ValueError(f"labels disagree with the pooled class table for {wrong[:5]}; a video must carry "
                             "the same class name in every list")
        cols = torch.tensor([col_of[c] for c in classes], dtype=torch.long)
        rows_t = torch.tensor(rows, dtype=torch.long)
        return ScoreMatrix(self.logits[rows_t][:, :, cols], torch.tensor(new_labels, dtype=torch.long),
                           [self.paths[r] for r in rows], list(classes),
                           sorted(bad if paths is None else bad & set(paths)))


def logit_scale_of(model) -> Tensor:
    """The model's exponentiated CLIP temperature, () float32 (through ``forward``, as ZeRO-3 requires)."""
    return model(with_classes=False).logit_scale.float().reshape(())


def _as_views(video: Tensor) -> Tensor:
    """(B, T, C, H, W) or (B, V, T, C, H, W) -> (B, V, T, C, H, W)."""
    if video.ndim == 5:
        return video.unsqueeze(1)
    if video.ndim != 6:
        raise ValueError(f"expected video batches (B, T, C, H, W) or (B, V, T, C, H, W), got {tuple(video.shape)}")
    return video


@torch.no_grad()
def score_dataset(model, dataset: Dataset, class_emb: Tensor, classes: Sequence[str], *, batch_size: int = 8,
                  num_workers: int = 0, batch_views: bool = True, device: Optional[torch.device] = None
                  ) -> ScoreMatrix:
    """Scores every video of ``dataset`` against ``class_emb`` once.

    Under several evaluation processes (``msta.devices.eval_processes``), batch b is scored by rank b % world size
    and the rows are gathered back into dataset order on every rank: each batch holds the same videos as in one
    process, so the matrix equals the one-process matrix.

    Args:
        model: a ``VideoCLIP`` in eval mode.
        dataset: a map-style dataset of ``{"video": (V, T, C, H, W) or (T, C, H, W), "label", "index"}`` samples
            with an ``items`` list of ``VideoItem`` (``msta.data.datasets.VideoDataset``).
        class_emb: (C, E) normalised class embeddings (``ClassBank``).
        classes: C raw labels naming the columns; dataset labels index them.
        batch_size: clips per forward; each forward encodes ``batch_size * V`` clips.
        num_workers: DataLoader workers.
        batch_views: True folds the V views into the batch (one ``encode_video`` call); False encodes view by view
            (the reference the views test compares against).
        device: where to run (default: the model's device). Autocast, when wanted, is the caller's context.

    Returns:
        The (N', V, C) ``ScoreMatrix``; N' = N minus the videos that could not be decoded.
    """
    from msta.devices import world

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    scale = logit_scale_of(model).to(device)
    emb = class_emb.to(device, torch.float32)
    rank, size = world()
    n = len(dataset)
    mine = [i for b, start in enumerate(range(0, n, batch_size)) if b % size == rank
            for i in range(start, min(start + batch_size, n))]
    from msta.engine.loaders import worker_kwargs  # workers from a forkserver: never forked after decord

    loader = DataLoader(dataset if size == 1 else Subset(dataset, mine), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, **worker_kwargs(num_workers))
    chunks, labels, keep = [], [], []
    position = 0
    for batch in loader:
        video = _as_views(batch["video"]).to(device, torch.float32)
        b, v = video.shape[:2]
        if batch_views:
            out = model.encode_video(video.flatten(0, 1)).view(b, v, -1)
        else:
            out = torch.stack([model.encode_video(video[:, i]) for i in range(v)], dim=1)
        with torch.autocast(device.type, enabled=False):   # cosines in fp32: bf16 would round logits ~100 to 0.5
            chunks.append((scale * out.float() @ emb.t()).cpu())
        labels.append(batch["label"].long())
        # the dataset replaces an undecodable video with another one; such rows must not count
        keep.append(batch["index"].long() == torch.tensor(mine[position:position + b], dtype=torch.long))
        position += b
    model.train(was_training)
    part = (mine, torch.cat(chunks), torch.cat(labels), torch.cat(keep)) if chunks else None
    logits, label_t, keep_t = _gather_rows(part, size) if size > 1 else part[1:]
    items = dataset.items
    bad = [items[i].path for i in range(len(items)) if not keep_t[i]]
    if bad:
        _logger.warning("%d of %d videos could not be decoded and are left out: %s", len(bad), len(items),
                        ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    rows = keep_t.nonzero().flatten()
    return ScoreMatrix(logits[rows], label_t[rows], [items[i].path for i in rows.tolist()], list(classes), bad)


def _gather_rows(part, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every rank's (indices, logits, labels, keep) -> the three tensors in dataset order, on every rank."""
    import torch.distributed as dist

    parts = [None] * size
    dist.all_gather_object(parts, part)
    parts = [p for p in parts if p is not None]
    index = torch.tensor([i for p in parts for i in p[0]], dtype=torch.long)
    order = index.argsort()
    return tuple(torch.cat([p[k] for p in parts])[order] for k in (1, 2, 3))
