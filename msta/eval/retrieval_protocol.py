"""The text <-> video retrieval protocol (MSR-VTT 1k-A and any caption list): embed once, rank both ways, write.

Each test caption list (``eval.splits``, else ``data.test_list``; `path<TAB>caption` lines, ``msta.data.captions``)
is one split. Every video is embedded once, with its ``eval.views`` views' L2-normalised embeddings averaged and
normalised again (the retrieval counterpart of the classification protocols' summed view softmax), and every
caption once through the adapted text branch; the similarity is the cosine, captions x videos. The metrics are
``msta.eval.retrieval.retrieval_metrics``: text -> video and video -> text R@1/5/10, MdR and MnR, ties counted
against the correct item. With ``eval.dual_softmax > 0`` a dual-softmax re-scored row is added, labelled as such
(it uses the statistics of all test queries at once).

Without adapters (no ``--ckpt``) this is the zero-shot retrieval of the frozen CLIP. Under several evaluation
processes every rank embeds its share of the batches and gets all embeddings back; rank 0 writes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from msta.config import ConfigError, ExperimentCfg
from msta.eval import metrics as M
from msta.eval.loading import LoadedCheckpoint
from msta.eval.outputs import table, write_outputs
from msta.eval.report import EvalRecord
from msta.eval.retrieval import retrieval_metrics

__all__ = ["RetrievalEmbeddings", "embed_videos", "embed_texts", "embed_captioned_videos", "retrieval"]

_logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("t2v_r1", "t2v_r5", "t2v_r10", "t2v_medr", "t2v_meanr", "v2t_r1", "v2t_r5", "v2t_r10", "v2t_medr",
                  "v2t_meanr", "mean_r1", "rsum")


@dataclass
class RetrievalEmbeddings:
    """Embeddings of one captioned test set, bad videos and their captions left out.

    Attributes:
        video_emb: (N, E) float32 L2-normalised video embeddings (views averaged).
        text_emb: (Q, E) float32 L2-normalised caption embeddings.
        caption_video: (Q,) int64, the row of ``video_emb`` each caption describes.
        paths: N video paths (the rows).
        bad: paths of videos that could not be decoded (left out, with their captions).
    """
    video_emb: Tensor
    text_emb: Tensor
    caption_video: Tensor
    paths: list[str]
    bad: list[str] = field(default_factory=list)

    def similarity(self) -> Tensor:
        """(Q, N) cosine similarities, captions x videos."""
        return self.text_emb @ self.video_emb.t()


def _world() -> tuple[int, int]:
    from msta.devices import world

    return world()


def _gather(part, size: int):
    """Every rank's (positions, rows) -> the rows in position order, on every rank."""
    import torch.distributed as dist

    parts = [None] * size
    dist.all_gather_object(parts, part)
    index = torch.tensor([i for p in parts for i in p[0]], dtype=torch.long)
    rows = torch.cat([p[1] for p in parts if p[1].numel()])
    return rows[index.argsort()]


def _shard(n: int, batch: int) -> list[int]:
    rank, size = _world()
    return [i for b, start in enumerate(range(0, n, batch)) if b % size == rank
            for i in range(start, min(start + batch, n))]


@torch.no_grad()
def embed_videos(model, dataset, *, batch_size: int = 8, num_workers: int = 0, batch_views: bool = True,
                 device: Optional[torch.device] = None) -> tuple[Tensor, Tensor]:
    """Every video of ``dataset`` once, its views' normalised embeddings averaged (then normalised).

    Args:
        model: a ``VideoCLIP``.
        dataset: samples ``{"video": (V, T, C, H, W) or (T, C, H, W), "index"}`` (``CaptionDataset``).
        batch_size: videos per forward (each forward encodes batch_size * V clips with ``batch_views``).
        num_workers: DataLoader workers.
        batch_views: fold the V views into the batch (one ``encode_video``), else view by view.
        device: where to run (default: the model's).

    Returns:
        ((N, E) float32 embeddings in dataset order, (N,) bool: the row holds its own video, not a replacement).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    _, size = _world()
    mine = _shard(len(dataset), batch_size)
    from msta.engine.loaders import worker_kwargs  # workers from a forkserver: never forked after decord

    loader = DataLoader(dataset if size == 1 else Subset(dataset, mine), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, **worker_kwargs(num_workers))
    embs, ok, pos = [], [], 0
    for batch in loader:
        video = batch["video"].to(device, torch.float32)
        video = video.unsqueeze(1) if video.ndim == 5 else video                       # (B, V, T, C, H, W)
        b, v = video.shape[:2]
        if batch_views:
            out = model.encode_video(video.flatten(0, 1)).view(b, v, -1)
        else:
            out = torch.stack([model.encode_video(video[:, i]) for i in range(v)], dim=1)
        embs.append(F.normalize(F.normalize(out.float(), dim=-1).mean(1), dim=-1).cpu())
        # the dataset replaces an undecodable video with another one; that row is not this video
        ok.append(batch["index"].long() == torch.tensor(mine[pos:pos + b], dtype=torch.long))
        pos += b
    model.train(was_training)
    local = torch.cat([torch.cat(embs), torch.cat(ok).float()[:, None]], 1) if embs else torch.zeros(0, 0)
    rows = _gather((mine, local), size) if size > 1 else local
    return rows[:, :-1].contiguous(), rows[:, -1].bool()


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], *, batch_size: int = 256,
                device: Optional[torch.device] = None) -> Tensor:
    """(Q, E) float32 normalised embeddings of ``texts`` through the (adapted) text branch, in order."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    _, size = _world()
    mine = _shard(len(texts), batch_size)
    chunks = [model.encode_text(model.tokenize([texts[i] for i in mine[s:s + batch_size]]).to(device)).float().cpu()
              for s in range(0, len(mine), batch_size)]
    model.train(was_training)
    local = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return F.normalize(_gather((mine, local), size) if size > 1 else local, dim=-1)


def embed_captioned_videos(model, dataset, *, batch_size: int = 8, num_workers: int = 0, batch_views: bool = True,
                           text_batch: int = 256, device: Optional[torch.device] = None) -> RetrievalEmbeddings:
    """Embeds every video and every caption of a ``CaptionDataset`` (one item per video) once."""
    video_emb, ok = embed_videos(model, dataset, batch_size=batch_size, num_workers=num_workers,
                                 batch_views=batch_views, device=device)
    captions = dataset.captions
    texts = [c for caps in captions for c in caps]
    owner = torch.tensor([v for v, caps in enumerate(captions) for _ in caps], dtype=torch.long)
    text_emb = embed_texts(model, texts, batch_size=text_batch, device=device)
    paths = [it.path for it in dataset.items]
    bad = [p for p, good in zip(paths, ok.tolist()) if not good]
    if bad:
        _logger.warning("%d of %d videos could not be decoded and are left out with their captions: %s", len(bad),
                        len(paths), ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    keep = ok[owner]
    new_row = torch.cumsum(ok.long(), 0) - 1                                     # old video row -> new row
    return RetrievalEmbeddings(video_emb[ok], text_emb[keep], new_row[owner[keep]],
                               [p for p, good in zip(paths, ok.tolist()) if good], bad)


def _image_size(model) -> int:
    size = model.image_size
    return size if isinstance(size, int) else int(size[0])


def _caption_dataset(cfg: ExperimentCfg, model, list_file: str):
    from msta.data.captions import group_by_video, read_caption_list
    from msta.data.datasets import CaptionDataset, build_video_dataset

    videos = group_by_video(read_caption_list(list_file))
    return build_video_dataset(videos, cfg.data, train=False, num_frames=cfg.model.num_frames,
                               image_size=_image_size(model), mean=model.image_mean, std=model.image_std,
                               views=cfg.eval.views, dataset_cls=CaptionDataset)


def retrieval(cfg: ExperimentCfg, model, *, checkpoint: Optional[LoadedCheckpoint] = None,
              out_dir: Optional[str | Path] = None) -> EvalRecord:
    """Text <-> video retrieval on each caption list of ``cfg`` (``eval.splits`` or ``data.test_list``).

    Returns:
        The record: ``metrics`` = the split's ``t2v_*`` / ``v2t_*`` / ``mean_r1`` / ``rsum`` (with several splits,
        their mean and std as ``<key>_mean`` / ``<key>_std``), plus ``dsl_<key>`` for the dual-softmax row when
        ``eval.dual_softmax > 0``; ``split_metrics`` one row per split (and per split a "dual softmax" row).
    """
    lists = list(cfg.eval.splits) or ([cfg.data.test_list] if cfg.data.test_list else [])
    if not lists:
        raise ConfigError("nothing to evaluate: set data.test_list (a `path<TAB>caption` list, e.g. "
                          "data/msrvtt/lists/test_1k.txt from `prepare_data.py msrvtt`) or eval.splits")
    names = [Path(p).stem for p in lists]
    if len(set(names)) != len(names):
        names = [f"split{i + 1}" for i in range(len(lists))]
    scale = cfg.eval.dual_softmax
    dsl_label = f"dual softmax (scale {scale:g}, transductive)"
    split_metrics: dict[str, dict[str, float]] = {}
    plain: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    bad: list[str] = []
    for name, list_file in zip(names, lists):
        dataset = _caption_dataset(cfg, model, list_file)
        _logger.info("retrieval %s: embedding %d videos (%d x %d views) and %d captions", name, len(dataset),
                     cfg.eval.views.clips, cfg.eval.views.crops, sum(len(c) for c in dataset.captions))
        emb = embed_captioned_videos(model, dataset, batch_size=cfg.eval.batch_size,
                                     num_workers=cfg.data.num_workers, batch_views=cfg.eval.batch_views)
        sim = emb.similarity()
        plain[name] = split_metrics[name] = retrieval_metrics(sim, emb.caption_video)
        if scale > 0:
            split_metrics[f"{name}, {dsl_label}"] = retrieval_metrics(sim, emb.caption_video,
                                                                      dual_softmax_scale=scale)
        counts[name] = {"videos": len(emb.paths), "captions": int(emb.text_emb.shape[0])}
        bad += emb.bad
    if len(plain) == 1:
        metrics = dict(next(iter(plain.values())))
        if scale > 0:
            metrics.update({f"dsl_{k}": v for k, v in split_metrics[f"{names[0]}, {dsl_label}"].items()})
    else:
        metrics = {}
        for key in next(iter(plain.values())):
            metrics[f"{key}_mean"], metrics[f"{key}_std"] = M.mean_std([m[key] for m in plain.values()])
    record = EvalRecord(
        protocol="retrieval", dataset=cfg.data.dataset, model_name=cfg.model.name,
        pretrained=cfg.model.pretrained or "", checkpoint=checkpoint.path if checkpoint is not None else "",
        num_frames=cfg.model.num_frames, views={"clips": cfg.eval.views.clips, "crops": cfg.eval.views.crops},
        templates=[], split_files=lists, class_tables=[],
        video_pool=cfg.eval.video_pool or f"the videos of the caption lists under {cfg.data.root}",
        num_videos=sum(c["videos"] for c in counts.values()), num_bad_videos=len(bad), metrics=metrics,
        split_metrics=split_metrics,
        extra={"counts": counts, "similarity": "cosine of L2-normalised embeddings, captions x videos",
               "views": "each view's normalised embedding averaged, then normalised",
               "ties": "pessimistic: a wrong item scoring as high as the correct one ranks ahead of it",
               "v2t": "best-ranked of the video's captions", "dual_softmax": scale or None,
               "baseline": "frozen CLIP, no adapters" if checkpoint is None else ""})
    if out_dir is not None:
        notes = ["R@K in %, MdR / MnR = median / mean rank (1-based, lower is better); t2v = each caption a query "
                 "against all videos, v2t = each video against all captions (its best-ranked caption counts)",
                 "views: the views' normalised embeddings are averaged (not softmax-summed as for classification); "
                 "ties count against the correct item"]
        if scale > 0:
            notes.append(f"{dsl_label}: score x softmax(scale x score) over the queries, computed from all test "
                         "queries at once; not comparable with the plain rows")
        write_outputs(record, out_dir, {"text <-> video retrieval": table(split_metrics, METRIC_COLUMNS,
                                                                          summary=False)}, notes)
    return record
