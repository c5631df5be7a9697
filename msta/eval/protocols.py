"""The four evaluation protocols (reference/peers.md §3), each writing a self-describing ``EvalRecord``.

- ``zeroshot``: every class of the target on each test split; the lists are pooled, scored once, and each split
  is a restriction of the pool (HMDB/UCF: rows; K600 draws of 160 classes: rows and columns). The half-class
  variant draws half the classes ``eval.half_class_draws`` times (seed d for draw d) and restricts the pooled
  matrix again. mean ± std over splits / draws.
- ``fewshot``: all-way evaluation of one K-shot checkpoint (K read from its embedded config); ``gather_fewshot``
  (in ``fewshot.py``) collects the K = 2, 4, 8, 16 records into one table and an accuracy-vs-K plot.
- ``base_to_novel``: per seed checkpoint, base and novel accuracy each with its own classifier, HM, and the
  generalised variant (one classifier over base + novel classes); averaged over the seeds.
- ``supervised``: multi-view top-1 / top-5 and mean class accuracy.
- ``retrieval`` (``retrieval_protocol.py``, re-exported here): text <-> video R@K / MdR / MnR on caption lists
  (MSR-VTT 1k-A), videos and captions embedded once; without adapters the zero-shot retrieval of frozen CLIP.

Splits come from ``eval.splits`` (test lists) and ``eval.class_tables`` (one table, or one per split), falling
back to ``data.test_list`` and ``data.class_table``. The model's class embeddings are computed once per class set,
and every video once per checkpoint (``evaluator``).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from msta.config import ConfigError, ExperimentCfg
from msta.data.annotations import VideoItem, read_class_table, read_video_list
from msta.eval import metrics as M
from msta.eval.evaluator import ClassBank, ScoreMatrix, score_dataset
from msta.eval.loading import LoadedCheckpoint
from msta.eval.outputs import table, write_outputs, write_plots
from msta.eval.report import EvalRecord, table_title
from msta.eval.retrieval_protocol import retrieval

__all__ = ["SplitSpec", "split_specs", "ScoredSplits", "score_splits", "half_class_draws", "zeroshot", "fewshot",
           "base_to_novel", "supervised", "retrieval"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSpec:
    """One evaluated split: a name, its `path label` list and the class table its labels index."""
    name: str
    list_file: str
    class_table: str


def split_specs(cfg: ExperimentCfg) -> list[SplitSpec]:
    """The splits of ``cfg`` (``eval.splits`` + ``eval.class_tables``, else ``data.test_list`` + ``data.class_table``).

    Raises:
        ConfigError: no list, no class table, or a number of tables that is neither 1 nor one per split.
    """
    lists = list(cfg.eval.splits) or ([cfg.data.test_list] if cfg.data.test_list else [])
    tables = list(cfg.eval.class_tables) or ([cfg.data.class_table] if cfg.data.class_table else [])
    if not lists:
        raise ConfigError("nothing to evaluate: set eval.splits (one test list per split) or data.test_list")
    if not tables:
        raise ConfigError("no class table: set data.class_table or eval.class_tables (`id,name` CSVs)")
    if len(tables) == 1:
        tables *= len(lists)
    if len(tables) != len(lists):
        raise ConfigError(f"eval.class_tables has {len(tables)} tables for {len(lists)} splits; give one table, "
                          "or one per entry of eval.splits")
    names = [Path(p).stem for p in lists]
    if len(set(names)) != len(names):  # e.g. two `test.txt` in different folders
        names = [f"split{i + 1}" for i in range(len(lists))]
    return [SplitSpec(n, lst, tab) for n, lst, tab in zip(names, lists, tables)]


@dataclass
class ScoredSplits:
    """The pooled scores and each split as a restriction of them.

    Attributes:
        pool: every distinct video of the splits against every class of their tables.
        splits: split name -> its ``ScoreMatrix`` (its own classes and videos).
        specs: the split specs, in order.
        names: raw label -> readable name (for plots).
        templates: the templates used.
    """
    pool: ScoreMatrix
    splits: dict[str, ScoreMatrix]
    specs: list[SplitSpec]
    names: dict[str, str]
    templates: list[str]

    @property
    def num_videos(self) -> int:
        return sum(len(m.paths) for m in self.splits.values())


def _image_size(model) -> int:
    size = model.image_size
    return size if isinstance(size, int) else int(size[0])


def score_splits(cfg: ExperimentCfg, model, specs: Sequence[SplitSpec], *, bank: Optional[ClassBank] = None,
                 batch_views: Optional[bool] = None) -> ScoredSplits:
    """Scores the union of the splits' videos against the union of their classes once, then restricts per split.

    Args:
        cfg: config (data: root, backend, sampling; text: prompts; eval: views, batch size).
        model: the ``VideoCLIP`` to evaluate.
        specs: the splits.
        bank: class-embedding cache (default a fresh one).
        batch_views: see ``score_dataset``; None: ``cfg.eval.batch_views``.
    """
    from msta.data.datasets import build_video_dataset
    from msta.text.prompts import prompts_from_config

    bank = bank or ClassBank(model)
    tables = {s.class_table: read_class_table(s.class_table) for s in specs}
    classes = list(dict.fromkeys(c for s in specs for c in tables[s.class_table]))   # ordered union
    pool: dict[str, str] = {}           # path -> raw label, the same in every list
    lists: dict[str, list[VideoItem]] = {}
    for s in specs:
        items = read_video_list(s.list_file)
        table_names = tables[s.class_table]
        for it in items:
            if it.label >= len(table_names):
                raise ConfigError(f"{s.list_file}: label {it.label} of {it.path} is outside {s.class_table} "
                                  f"({len(table_names)} classes); is it the table this list uses?")
            name = table_names[it.label]
            if pool.setdefault(it.path, name) != name:
                raise ConfigError(f"{it.path} is {pool[it.path]!r} in one list and {name!r} in {s.list_file}")
        lists[s.name] = items
    prompts = prompts_from_config(cfg.text, cfg.data.dataset, classes, need_descriptions=False)
    emb = bank(prompts.names, prompts.templates)
    col = {c: i for i, c in enumerate(classes)}
    items = [VideoItem(p, col[c]) for p, c in pool.items()]
    dataset = build_video_dataset(items, cfg.data, train=False, num_frames=cfg.model.num_frames,
                                  image_size=_image_size(model), mean=model.image_mean, std=model.image_std,
                                  views=cfg.eval.views)
    _logger.info("scoring %d videos (%d lists) x %d classes, %d x %d views", len(items), len(specs), len(classes),
                 cfg.eval.views.clips, cfg.eval.views.crops)
    matrix = score_dataset(model, dataset, emb, classes, batch_size=cfg.eval.batch_size,
                           num_workers=cfg.data.num_workers,
                           batch_views=cfg.eval.batch_views if batch_views is None else batch_views)
    splits = {s.name: matrix.restrict(tables[s.class_table], [it.path for it in lists[s.name]],
                                      [it.label for it in lists[s.name]]) for s in specs}
    return ScoredSplits(matrix, splits, list(specs), dict(zip(classes, prompts.names)), prompts.templates)


def half_class_draws(classes: Sequence[str], draws: int) -> list[list[str]]:
    """``draws`` draws of half the classes (floor(C / 2)); draw d uses seed d; each draw in table order."""
    out = []
    for d in range(draws):
        perm = torch.randperm(len(classes), generator=torch.Generator().manual_seed(d))[:len(classes) // 2]
        out.append([classes[i] for i in sorted(perm.tolist())])
    return out


def _record(cfg: ExperimentCfg, protocol: str, scored: ScoredSplits, checkpoint: str, **fields) -> EvalRecord:
    pool = cfg.eval.video_pool or (f"union of the {len(scored.specs)} lists under {cfg.data.root}: "
                                   f"{len(scored.pool.paths) + len(scored.pool.bad)} videos, "
                                   f"{len(scored.pool.classes)} classes")
    return EvalRecord(protocol=protocol, dataset=cfg.data.dataset, model_name=cfg.model.name,
                      pretrained=cfg.model.pretrained or "", checkpoint=checkpoint, num_frames=cfg.model.num_frames,
                      views={"clips": cfg.eval.views.clips, "crops": cfg.eval.views.crops},
                      templates=list(scored.templates), split_files=[s.list_file for s in scored.specs],
                      class_tables=list(dict.fromkeys(s.class_table for s in scored.specs)), video_pool=pool,
                      num_videos=scored.num_videos, num_bad_videos=len(scored.pool.bad), **fields)


def _summary(split_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """metric -> mean and std over the splits (``top1_mean``, ``top1_std``, ...)."""
    out = {}
    for key in dict.fromkeys(k for m in split_metrics.values() for k in m):
        mean, std = M.mean_std([m[key] for m in split_metrics.values() if key in m])
        out[f"{key}_mean"], out[f"{key}_std"] = mean, std
    return out


def _plots(scored: ScoredSplits, out_dir: Optional[Path]) -> None:
    if out_dir is None:
        return
    for name, m in scored.splits.items():
        write_plots(m, out_dir, name, [scored.names[c] for c in m.classes])


def _checkpoint_name(ckpt: Optional[LoadedCheckpoint]) -> str:
    return ckpt.path if ckpt is not None else ""


def zeroshot(cfg: ExperimentCfg, model, *, checkpoint: Optional[LoadedCheckpoint] = None,
             out_dir: Optional[str | Path] = None, bank: Optional[ClassBank] = None) -> EvalRecord:
    """Zero-shot evaluation of one target dataset over its splits (+ the half-class variant when configured).

    Returns:
        The record: ``metrics`` top1/top5 mean and std over splits (and ``half_top1_mean/std``), ``split_metrics``
        per split, ``extra["half_class"]`` the draws.
    """
    scored = score_splits(cfg, model, split_specs(cfg), bank=bank)
    split_metrics = {n: m.accuracy() for n, m in scored.splits.items()}
    metrics = _summary(split_metrics)
    extra: dict = {"split_videos": {n: len(m.paths) for n, m in scored.splits.items()},
                   "baseline": "frozen CLIP, no adapters" if checkpoint is None else ""}
    tables = {table_title("per split", split_metrics): table(split_metrics)}
    draws = cfg.eval.half_class_draws
    if draws > 0:
        if len({s.class_table for s in scored.specs}) > 1:
            _logger.warning("eval.half_class_draws ignored: the splits use different class tables")
        else:
            picks = half_class_draws(scored.splits[scored.specs[0].name].classes, draws)
            half = {f"draw {d}": scored.pool.restrict(p).accuracy((1,)) for d, p in enumerate(picks)}
            mean, std = M.mean_std([h["top1"] for h in half.values()])
            metrics.update(half_top1_mean=mean, half_top1_std=std)
            extra["half_class"] = {"draws": draws, "seeds": list(range(draws)), "classes": picks,
                                   "videos": "the pooled videos of all splits whose class is drawn",
                                   "top1": [h["top1"] for h in half.values()]}
            tables[f"half-class variant ({draws} draws of {len(picks[0])} classes, pooled videos; not comparable "
                   "to the all-class numbers)"] = table(half)
    record = _record(cfg, "zeroshot", scored, _checkpoint_name(checkpoint), metrics=metrics,
                     split_metrics=split_metrics, extra=extra)
    if out_dir is not None:
        write_outputs(record, out_dir, tables)
        _plots(scored, Path(out_dir))
    return record


def _start(checkpoint: Optional[LoadedCheckpoint]) -> str:
    """What a few-shot run started from (peers §3.2: "from CLIP" and "after K400 fine-tuning" differ by 5-8 pts).

    "CLIP" when ``model.init_adapters`` was empty, else "<DATASET>-finetuned" with the dataset read from the
    initial adapters' embedded config (the path alone when that file can no longer be read).
    """
    if checkpoint is None:
        return "frozen CLIP, no adapters"
    init = checkpoint.config.model.init_adapters
    if not init:
        return "CLIP (adapters trained from scratch)"
    from msta.engine.checkpoint import load_adapters

    try:
        dataset = load_adapters(init)["config"]["data"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        _logger.warning("model.init_adapters=%s of %s cannot be read (%s); the record names the path only", init,
                        checkpoint.path, e)
        return f"adapters initialised from {init}"
    return f"{dataset.upper()}-finetuned (adapters initialised from {init})"


def fewshot(cfg: ExperimentCfg, model, *, checkpoint: Optional[LoadedCheckpoint] = None,
            out_dir: Optional[str | Path] = None) -> EvalRecord:
    """All-way evaluation of one few-shot run; K and the draw seed come from the checkpoint's config."""
    scored = score_splits(cfg, model, split_specs(cfg))
    split_metrics = {n: m.accuracy() for n, m in scored.splits.items()}
    run = checkpoint.config if checkpoint is not None else cfg
    extra = {"shots": run.data.shots, "shots_seed": run.data.seed, "train_list": run.data.train_list,
             "selected_on": run.data.select_on, "start": _start(checkpoint),
             "init_adapters": run.model.init_adapters if checkpoint is not None else ""}
    record = _record(cfg, "fewshot", scored, _checkpoint_name(checkpoint), metrics=_summary(split_metrics),
                     split_metrics=split_metrics, extra=extra)
    if out_dir is not None:
        title = table_title(f"K = {extra['shots']} shots", split_metrics)
        write_outputs(record, out_dir, {title: table(split_metrics)})
        _plots(scored, Path(out_dir))
    return record


def supervised(cfg: ExperimentCfg, model, *, checkpoint: Optional[LoadedCheckpoint] = None,
               out_dir: Optional[str | Path] = None) -> EvalRecord:
    """Multi-view top-1 / top-5 and mean class accuracy on the test list(s)."""
    scored = score_splits(cfg, model, split_specs(cfg))
    split_metrics = {n: {**m.accuracy(), "mean_class": M.mean_class_accuracy(m.scores, m.labels)}
                     for n, m in scored.splits.items()}
    record = _record(cfg, "supervised", scored, _checkpoint_name(checkpoint), metrics=_summary(split_metrics),
                     split_metrics=split_metrics)
    if out_dir is not None:
        write_outputs(record, out_dir, {table_title("accuracy", split_metrics): table(split_metrics)})
        _plots(scored, Path(out_dir))
    return record


def base_to_novel(cfg: ExperimentCfg, model, checkpoints: Sequence[Optional[LoadedCheckpoint]], *,
                  out_dir: Optional[str | Path] = None) -> EvalRecord:
    """Base-to-novel over the seed checkpoints: ``eval.class_tables = [base, novel]``, ``eval.splits = [base
    list, novel list]`` (each with its own, 0-based labels).

    Per seed: base and novel top-1 each with its own classifier and their HM; generalised: one classifier over
    base + novel classes, top-1 on the base and on the novel videos and their HM. The model's weights are replaced
    by each checkpoint in turn (``load_adapter_state_dict``).

    Returns:
        The record: metrics ``base/novel/hm/gbase/gnovel/ghm`` ``_mean``/``_std`` over seeds, and ``hm`` = the HM of
        the mean base and mean novel accuracies (the ViFi-CLIP table convention).
    """
    specs = split_specs(cfg)
    if len(specs) != 2 or specs[0].class_table == specs[1].class_table:
        raise ConfigError("base-to-novel needs eval.splits = [base list, novel list] and eval.class_tables = "
                          "[base table, novel table]")
    base_spec, novel_spec = specs
    split_metrics, scored = {}, None
    for i, ckpt in enumerate(checkpoints):
        if ckpt is not None:
            model.load_adapter_state_dict(ckpt.state_dict)
        scored = score_splits(cfg, model, specs, bank=ClassBank(model))   # new weights: new class embeddings
        base, novel = scored.splits[base_spec.name], scored.splits[novel_spec.name]
        b, n = base.accuracy((1,))["top1"], novel.accuracy((1,))["top1"]
        joint = scored.pool  # every video against base + novel classes: the generalised classifier
        gb = joint.restrict(joint.classes, base.paths).accuracy((1,))["top1"]
        gn = joint.restrict(joint.classes, novel.paths).accuracy((1,))["top1"]
        seed = ckpt.config.data.seed if ckpt is not None else None
        name = f"seed {seed}" if seed is not None else "frozen CLIP"
        name = name if name not in split_metrics else f"{name} ({i + 1})"
        split_metrics[name] = {"base": b, "novel": n, "hm": M.harmonic_mean(b, n), "gbase": gb, "gnovel": gn,
                               "ghm": M.harmonic_mean(gb, gn)}
    metrics = _summary(split_metrics)
    metrics["hm"] = M.harmonic_mean(metrics["base_mean"], metrics["novel_mean"])
    metrics["ghm"] = M.harmonic_mean(metrics["gbase_mean"], metrics["gnovel_mean"])
    names = [c.path for c in checkpoints if c is not None]
    record = _record(cfg, "b2n", scored, ", ".join(names), metrics=metrics, split_metrics=split_metrics,
                     extra={"seeds": len(checkpoints), "checkpoints": names,
                            "base_classes": len(scored.splits[base_spec.name].classes),
                            "novel_classes": len(scored.splits[novel_spec.name].classes)})
    # videos are counted once per list, not once per seed
    record = dataclasses.replace(record, num_videos=scored.num_videos)
    if out_dir is not None:
        notes = [f"HM (table) = HM of the seed-mean base and novel: {metrics['hm']:.2f}; generalised: "
                 f"{metrics['ghm']:.2f}",
                 "base / novel: each with its own classifier (ViFi-CLIP protocol); gbase / gnovel: one classifier "
                 "over base + novel classes (generalised variant)"]
        write_outputs(record, out_dir, {"per seed (top-1, %)": table(split_metrics)}, notes)
        _plots(scored, Path(out_dir))
    return record
