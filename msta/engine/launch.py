"""From a validated config to a finished run: build the model, data, prompts, targets and engine, then train.

`train(cfg)` is what `scripts/train.py` calls, in every process of a launch (none, `torchrun` or `deepspeed`).
`dry_run(cfg)` builds the model only (no weights, no data) and reports its parameters.

Two kinds of runs (`loss.kind`): "classification" trains on label lists against class prompts (L_CE + alpha L_CC)
and selects best.pt by top-1; "infonce" trains on caption lists (`msta.data.captions`) with video <-> caption
InfoNCE, needs no class table, prompts or descriptions, and selects best.pt by the mean text->video / video->text
R@1 on the selection split.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import torch

from msta.config import ConfigError, ExperimentCfg, config_to_dict
from msta.engine import checkpoint as ckpt
from msta.engine.deepspeed_setup import (ds_config, fix_scalar_params, gathered_params, initialize_engine,
                                         plan_batch, register_outside_params, TupleOutput)
from msta.engine.descriptions import DescriptionTargets, compute_description_targets, default_cache_dir, weights_id
from msta.engine.distributed import DistInfo, all_reduce_sum, broadcast_object, cleanup_distributed, init_distributed
from msta.engine.evaluation import retrieval_selection, top1_selection
from msta.engine.loaders import TrainSampler, eval_loader, train_loader
from msta.engine.logging import MetricWriter, setup_logging
from msta.engine.objective import Objective
from msta.engine.optim import build_optimizer
from msta.engine.references import build_reference_bank
from msta.engine.run_dir import RunDir, RunDirError, open_run_dir
from msta.engine.schedule import WarmupCosine
from msta.engine.trainer import Trainer

__all__ = ["train", "dry_run"]

_logger = logging.getLogger(__name__)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dry_run(cfg: ExperimentCfg) -> list[str]:
    """Builds the model without weights (pretrained forced to None) and returns the report lines to print.

    Returns:
        ["trainable params: N / total: M (P%)", then one line per adapted block range].
    """
    from msta.models import build_model

    model = build_model(dataclasses.replace(cfg.model, pretrained=None))
    report = model.param_report()
    return [report.line()] + [f"  {b}" for b in report.blocks]


def _class_table(cfg: ExperimentCfg) -> list[str]:
    from msta.data.annotations import read_class_table

    if not cfg.data.class_table:
        raise ConfigError("data.class_table is empty; give the `id,name` CSV of the training classes")
    return read_class_table(cfg.data.class_table)


def _init_adapters(cfg: ExperimentCfg, model) -> None:
    """Starts the adapters from `model.init_adapters` (e.g. a K400 run's best.pt) instead of their fresh init.

    Raises:
        FileNotFoundError / ValueError: the file is missing, or its adapters do not fit this model; both name the key.
    """
    path = cfg.model.init_adapters
    if not path:
        return
    try:
        payload = ckpt.load_adapters(path)
        model.load_adapter_state_dict(payload["state_dict"])
    except FileNotFoundError as e:
        raise FileNotFoundError(f"model.init_adapters: {e}; give an adapters file (run/best.pt) or set "
                                "model.init_adapters='' to train from scratch") from None
    except ValueError as e:
        raise ValueError(f"model.init_adapters={path}: {e}") from None
    source = payload.get("config", {}).get("data", {}).get("dataset", "?")
    _logger.info("adapters initialised from %s (trained on %s, step %s) instead of from scratch", path, source,
                 payload.get("step"))


def _targets(cfg: ExperimentCfg, model, prompts, dist: DistInfo) -> Optional[DescriptionTargets]:
    """The L_CC targets, with the frozen teacher, before deepspeed.initialize (ZeRO-3 partitions after it)."""
    if cfg.loss.kind != "classification" or not cfg.loss.consistency or cfg.loss.alpha == 0:
        return None
    cache = default_cache_dir() if cfg.model.perf.cache_descriptions else None
    targets = compute_description_targets(model, prompts.spatial, prompts.temporal, model_name=cfg.model.name,
                                          weights=weights_id(cfg.model.pretrained, cfg.train.seed), cache_dir=cache,
                                          write_cache=dist.is_main)
    return targets.to(dist.device)


def _class_prompts(cfg: ExperimentCfg, model):
    """Sets the class prompts of a classification run and returns them; caption runs have none (None)."""
    from msta.text.prompts import prompts_from_config

    if cfg.loss.kind == "infonce":
        if cfg.loss.consistency and cfg.loss.alpha > 0:
            _logger.info("loss.consistency is ignored for loss.kind=infonce: L_CC needs class descriptions; "
                         "training with InfoNCE on the captions only")
        return None
    prompts = prompts_from_config(cfg.text, cfg.data.dataset, _class_table(cfg),
                                  need_descriptions=cfg.loss.consistency)
    model.set_class_prompts(prompts.render(), prompts.num_templates)
    return prompts


def _adapters_fn(cfg: ExperimentCfg, model, prompts):
    """Returns f(step, epoch, metrics) -> adapters-only payload; gathers ZeRO-3 partitions (collective).

    A caption run (prompts None) stores no class names or templates: whoever evaluates it names the classes.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    config = config_to_dict(cfg)

    def adapters(step: int, epoch: int, metrics: dict) -> dict:
        with gathered_params(trainable, cfg.train.zero_stage):
            state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.adapter_state_dict().items()}
        return ckpt.adapter_payload(state_dict=state, config=config, class_names=prompts.names if prompts else [],
                                    raw_labels=prompts.raw_labels if prompts else [],
                                    templates=prompts.templates if prompts else [], step=step, epoch=epoch,
                                    metrics=metrics)
    return adapters


def _bad_videos_fn(splits: dict):
    """Returns f() -> {split: distinct bad videos over all ranks} (a collective max over per-video flags)."""
    def count() -> dict[str, int]:
        out = {}
        for name, ds in splits.items():
            if ds is None:
                continue
            flags = torch.tensor([ds.tracker.is_bad(i) for i in range(len(ds.tracker.paths))], dtype=torch.float32)
            out[name] = int((all_reduce_sum(flags) > 0).sum())
        return out
    return count


def train(cfg: ExperimentCfg, *, resume: Optional[str] = None, local_rank: Optional[int] = None,
          overwrite: bool = False, allow_config_change: bool = False) -> dict:
    """Trains `cfg` in this process (one of the launch's processes) and returns the run's results.

    Args:
        cfg: the validated experiment config.
        resume: None (fresh run), "auto" (last complete checkpoint in train.out_dir, if any) or a checkpoint folder.
        local_rank: the `deepspeed` launcher's --local_rank, if given.
        overwrite: a fresh run into a folder holding an earlier run moves that run aside (never deletes it).
        allow_config_change: a resume may change keys that alter training (both configs kept, the diff logged).

    Raises:
        RunDirError: the run folder is locked by another run, holds an earlier run, or the config changed (on every
            rank, so that all processes of a launch stop together).
    """
    dist = init_distributed(local_rank)
    run_dir = Path(cfg.train.out_dir)
    opened: Optional[RunDir] = None
    try:
        setup_logging(dist.rank)
        outcome: tuple = ("ok", None)
        if dist.is_main:
            try:
                opened = open_run_dir(cfg, resume=resume, overwrite=overwrite,
                                      allow_config_change=allow_config_change)
                outcome = ("ok", str(opened.start) if opened.start else None)
            except RunDirError as e:
                outcome = ("refused", str(e))
        outcome = broadcast_object(outcome)  # the other ranks stop too when rank 0 was refused
        if outcome[0] != "ok":
            raise RunDirError(outcome[1])
        setup_logging(dist.rank, run_dir)
        for note in opened.notes if opened else []:
            _logger.info("%s", note)
        return _train(cfg, dist, run_dir, Path(outcome[1]) if outcome[1] else None)
    finally:
        if opened is not None:
            opened.release()
        cleanup_distributed()


def _train(cfg: ExperimentCfg, dist: DistInfo, run_dir: Path, start: Optional[Path]) -> dict:
    from msta.data.datasets import build_datasets
    from msta.models import build_model

    plan = plan_batch(cfg.train, dist.world_size)  # fail on a bad batch split before any heavy work
    captions = cfg.loss.kind == "infonce"
    if captions and dist.world_size > 1:
        if cfg.loss.negatives == "global":
            _logger.info("loss.kind=infonce: negatives gathered from all %d ranks (%d pairs per contrastive batch, "
                         "loss.negatives=global)", dist.world_size, plan.micro_batch * dist.world_size)
        else:
            _logger.info("loss.kind=infonce, loss.negatives=local: the negatives of each caption are the other "
                         "captions of its micro batch on its own rank (not gathered), so this %d-process run differs "
                         "from a 1-process run with the same global batch", dist.world_size)
    torch.manual_seed(cfg.train.seed)  # identical random init (frozen weights, adapters) on every rank
    model = build_model(cfg.model)
    _init_adapters(cfg, model)
    prompts = _class_prompts(cfg, model)
    model.to(dist.device)
    targets = _targets(cfg, model, prompts, dist)
    references = (build_reference_bank(model, cfg.loss.distill_texts, cfg.loss.distill_sample, cfg.train.seed)
                  if cfg.loss.distill > 0 else None)

    size = model.image_size if isinstance(model.image_size, int) else model.image_size[0]
    if size != cfg.data.input_size:
        _logger.warning("data.input_size=%d differs from the model's image size %d; using %d",
                        cfg.data.input_size, size, size)
    splits = build_datasets(cfg.data, image_size=size, num_frames=cfg.model.num_frames, mean=model.image_mean,
                            std=model.image_std, captions=captions)
    if splits.train is None:
        raise ConfigError("data.train_list is empty; give the training list")
    select_on = cfg.data.select_on
    if select_on == "val" and splits.val is None:
        _logger.warning("data.select_on=val but nothing is held out (data.val_list empty, data.val_fraction 0); "
                        "selecting the best checkpoint on the test split instead (reported in train_summary.json)")
        select_on = "test"
    select_set = splits.val if select_on == "val" else splits.test
    sampler = TrainSampler(len(splits.train), global_batch=plan.global_batch, rank=dist.rank,
                           world_size=dist.world_size, seed=cfg.data.seed)
    loader = train_loader(splits.train, sampler, plan.micro_batch, cfg.data.num_workers)
    select_loader = eval_loader(select_set, cfg.eval.batch_size, cfg.data.num_workers, rank=dist.rank,
                                world_size=dist.world_size)

    fix_scalar_params(model)
    wrapped = TupleOutput(model)
    if cfg.train.zero_stage == 3:
        dummy = torch.zeros(1, cfg.model.num_frames, 3, size, size, device=dist.device)
        # caption runs have no class prompts: a caption makes the dummy forward use the text tower as training will
        texts = model.tokenize(["a video"]).to(dist.device) if captions else None
        outside = register_outside_params(wrapped, lambda: wrapped(dummy, texts=texts))
        _logger.info("ZeRO-3: %d parameters used outside their module's forward: %s", len(outside), "; ".join(outside))
    optimizer = build_optimizer(model, cfg.optim)
    engine = initialize_engine(wrapped, optimizer, ds_config(cfg.train, cfg.optim.grad_clip, plan,
                                                           on_gpu=dist.device.type == "cuda"))
    schedule = WarmupCosine.from_epochs(base_lr=cfg.optim.lr, min_lr=cfg.optim.min_lr, epochs=cfg.optim.epochs,
                                        warmup_epochs=cfg.optim.warmup_epochs,
                                        steps_per_epoch=sampler.steps_per_epoch)
    total = schedule.total_steps if cfg.train.max_steps <= 0 else min(cfg.train.max_steps, schedule.total_steps)
    writer = MetricWriter(run_dir, enabled=dist.is_main)
    trainer = Trainer(engine=engine, objective=Objective(cfg.loss, targets, model.tokenize, references), loader=loader,
                      sampler=sampler, select_loader=select_loader, select_on=select_on, plan=plan,
                      schedule=schedule, total_steps=total, cfg=cfg.train, dist=dist,
                      dtype=_DTYPES[cfg.train.precision], run_dir=run_dir, adapters=_adapters_fn(cfg, model, prompts),
                      writer=writer, bad_videos=_bad_videos_fn({"train": splits.train, select_on: select_set}),
                      selection=retrieval_selection(model.tokenize) if captions else top1_selection())
    if start is not None:
        trainer.resume(start)
    try:
        return trainer.fit()
    finally:
        writer.close()
