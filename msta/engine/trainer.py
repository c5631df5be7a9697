"""The training loop: optimiser steps of `grad_accum` micro batches, periodic evaluation and checkpoints.

`Trainer` receives built objects (engine, data, objective, schedule, run folder); `msta.engine.launch` builds them
from a config. The loop in `fit` reads like the recipe; bookkeeping lives in the small methods below it.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader

from msta.config import TrainCfg
from msta.errors import UserError
from msta.engine import checkpoint as ckpt
from msta.engine.deepspeed_setup import BatchPlan
from msta.engine.distributed import DistInfo, all_reduce_sum, all_true, barrier
from msta.engine.evaluation import Selection, top1_selection
from msta.engine.loaders import TrainSampler
from msta.engine.logging import MetricWriter, Throughput, progress_bar, step_line
from msta.engine.objective import Objective, to_device
from msta.engine.optim import set_lr
from msta.engine.run_dir import RunDirError

__all__ = ["SUMMARY_FILE", "TrainState", "Trainer", "NonFiniteError"]

_logger = logging.getLogger(__name__)

SUMMARY_FILE = "train_summary.json"   # the run's training summary; evaluation records are results.json elsewhere


class NonFiniteError(UserError):
    """The learning rate, a loss or the gradient became inf/NaN: training stopped before saving anything of it."""


@dataclass
class TrainState:
    """What a resumed run needs besides the engine state (it travels in DeepSpeed's client_state)."""
    step: int = 0                  # optimiser steps done
    best_metric: float = -math.inf
    best_step: int = -1
    data_seed: int = 0
    world_size: int = 1


class Trainer:
    """Runs optimiser steps until `total_steps`, evaluating and checkpointing at epoch ends.

    Args:
        engine: the DeepSpeed engine wrapping the model.
        objective: computes the loss of a micro batch.
        loader: training micro batches; its sampler is `sampler`.
        sampler: the resumable training order.
        select_loader: the model-selection split (val or test), or None.
        select_on: "val" or "test" (reported in the results).
        plan: the batch plan (micro batch, accumulation, world size).
        schedule: learning rate as a function of the optimiser step.
        total_steps: optimiser steps of the run.
        cfg: eval/checkpoint/log cadence and keep_last.
        dist: this process.
        dtype: compute dtype of the engine (inputs are cast to it).
        run_dir: the run folder.
        adapters: returns the adapters-only payload for (step, epoch, metrics); collective under ZeRO-3.
        writer: metrics.jsonl + TensorBoard.
        bad_videos: returns {"train": n, "val": m} distinct bad videos so far (all ranks).
        selection: how the selection split is evaluated and which metric picks best/ (default: top-1).
    """

    def __init__(self, *, engine, objective: Objective, loader: DataLoader, sampler: TrainSampler,
                 select_loader: Optional[DataLoader], select_on: str, plan: BatchPlan,
                 schedule: Callable[[int], float], total_steps: int, cfg: TrainCfg, dist: DistInfo,
                 dtype: torch.dtype, run_dir: Path, adapters: Callable[[int, int, dict], dict], writer: MetricWriter,
                 bad_videos: Callable[[], dict[str, int]], selection: Optional[Selection] = None):
        self.engine, self.objective, self.loader, self.sampler = engine, objective, loader, sampler
        self.select_loader, self.select_on, self.plan = select_loader, select_on, plan
        self.schedule, self.total_steps, self.cfg, self.dist = schedule, total_steps, cfg, dist
        self.dtype, self.run_dir, self.adapters, self.writer = dtype, Path(run_dir), adapters, writer
        self.bad_videos = bad_videos
        self.selection = selection or top1_selection()
        self.state = TrainState(data_seed=sampler.seed, world_size=plan.world_size)
        self.steps_per_epoch = sampler.steps_per_epoch
        self.num_epochs = math.ceil(total_steps / self.steps_per_epoch)
        self.last_eval: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> dict:
        """Trains to `total_steps`; returns the summary written to `run_dir/train_summary.json` (SUMMARY_FILE)."""
        self.meter = Throughput(self.total_steps)
        self.bar = progress_bar(self.total_steps, self.state.step, enabled=self.dist.is_main)
        _logger.info("training %d steps (%d epochs of %d), global batch %d = %d micro x %d accumulation x %d ranks",
                     self.total_steps, self.num_epochs, self.steps_per_epoch, self.plan.global_batch,
                     self.plan.micro_batch, self.plan.grad_accum, self.plan.world_size)
        self.engine.train()
        for epoch in range(self.state.step // self.steps_per_epoch, self.num_epochs):
            for micro_batches in self._optimizer_steps(epoch):
                lr = self.schedule(self.state.step)
                if not math.isfinite(lr):
                    base = getattr(self.schedule, "base_lr", "?")
                    self._stop_non_finite(f"the learning rate is {lr} (optim.lr={base})")
                losses = self._train_step(micro_batches, lr)
                self._check_finite(losses, lr)
                self.state.step += 1
                self._after_step(epoch, losses, lr)
                if self.state.step >= self.total_steps:
                    break
            self._after_epoch(epoch + 1, last=self.state.step >= self.total_steps)
        self.bar.close()
        return self._finish()

    def _train_step(self, micro_batches: list[dict], lr: float) -> dict[str, float]:
        """Forward, backward and engine.step per micro batch; DeepSpeed steps the optimiser on the last one."""
        set_lr(self.engine.optimizer, lr)
        terms = []
        for batch in micro_batches:
            loss = self.objective(self.engine, to_device(batch, self.dist.device, self.dtype), self.state.step)
            self.engine.backward(loss.total)
            self.engine.step()
            terms.append(loss.as_floats())
        return self._global_mean(terms)

    def _check_finite(self, losses: dict[str, float], lr: float) -> None:
        """Stops at the first non-finite loss (the same on every rank: it is the all-reduced mean) or gradient norm
        (DeepSpeed's global norm, where its optimiser computes one; fp16 overflow steps are DeepSpeed's to skip)."""
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            terms = ", ".join(f"{k} {v}" for k, v in losses.items())
            self._stop_non_finite(f"the training loss is not finite ({terms}) at lr {lr:.3g}")
        norm = self.engine.get_global_grad_norm() if hasattr(self.engine, "get_global_grad_norm") else None
        if norm is not None and self.dtype != torch.float16 and not math.isfinite(float(norm)):
            self._stop_non_finite(f"the gradient norm is {float(norm)} at lr {lr:.3g}")

    def _stop_non_finite(self, what: str) -> None:
        last = ckpt.find_last_complete(self.run_dir) if self.dist.is_main else None
        kept = (f"the last good checkpoint is {last} (adapters in {self.run_dir / 'last'})" if last is not None
                else "no checkpoint had been written yet")
        raise NonFiniteError(
            f"step {self.state.step + 1}: {what}; training stopped and nothing of this step was saved; {kept}. "
            "Check optim.lr (and optim.warmup_epochs, optim.grad_clip), train.precision, and the data of this step; "
            "then continue with --resume auto (with --allow-config-change for a new optim.lr) or start again")

    def _check_adapters_finite(self, payload: dict) -> None:
        """Never writes an adapters file with inf/NaN weights (every rank holds the gathered state: same answer)."""
        bad = [k for k, v in payload["state_dict"].items() if not torch.isfinite(v).all()]
        if bad:
            self._stop_non_finite(f"{len(bad)} adapter tensors hold inf/NaN (e.g. {bad[0]})")

    def _global_mean(self, terms: list[dict[str, float]]) -> dict[str, float]:
        """Loss terms averaged over the micro batches of all ranks: the loss of the global batch."""
        names = list(terms[0])
        local = torch.tensor([[t[k] for k in names] for t in terms], dtype=torch.float64).mean(0)
        total = all_reduce_sum(local) / self.plan.world_size
        return dict(zip(names, total.tolist()))

    # ------------------------------------------------------------------------------------------------------------
    # bookkeeping

    def _optimizer_steps(self, epoch: int) -> Iterator[list[dict]]:
        """Groups of `grad_accum` micro batches of `epoch`, from the current step on (mid-epoch after a resume)."""
        start = self.state.step - epoch * self.steps_per_epoch
        self.sampler.set_epoch(epoch, start_step=start)
        self.loader.dataset.set_epoch(epoch)
        group: list[dict] = []
        for batch in self.loader:
            group.append(batch)
            if len(group) == self.plan.grad_accum:
                yield group
                group = []

    def _after_step(self, epoch: int, losses: dict[str, float], lr: float) -> None:
        step = self.state.step
        self.meter.update(self.plan.global_batch)
        self.bar.update(1)
        if step % self.cfg.log_every == 0 or step == self.total_steps or step == 1:
            clips_per_s = self.meter.rate()
            if self.dist.is_main:
                _logger.info(step_line(step, self.total_steps, epoch + 1, losses, lr, clips_per_s,
                                       self.meter.eta(step)))
            self.writer.write(step, "train", {**losses, "lr": lr, "clips_per_s": clips_per_s}, epoch=epoch + 1)

    def _due(self, epochs_done: int, every: int, last: bool) -> bool:
        return last or (every > 0 and epochs_done % every == 0)

    def _after_epoch(self, epochs_done: int, last: bool) -> None:
        if self.select_loader is not None and self._due(epochs_done, self.cfg.eval_every, last):
            self._evaluate(epochs_done)
        if self._due(epochs_done, self.cfg.ckpt_every, last):
            self.save_checkpoint(epochs_done)

    def _evaluate(self, epoch: int) -> None:
        metrics = self.selection.evaluate(self.engine, self.select_loader, device=self.dist.device, dtype=self.dtype)
        self.last_eval = metrics
        name, value = self.selection.metric, metrics[self.selection.metric]
        _logger.info("eval step %d epoch %d | %s %s", self.state.step, epoch, self.select_on,
                     self.selection.describe(metrics))
        self.writer.write(self.state.step, self.select_on, metrics, epoch=epoch)
        if value > self.state.best_metric:
            self.state.best_metric, self.state.best_step = value, self.state.step
            payload = self.adapters(self.state.step, epoch, self._metrics())  # collective under ZeRO-3
            self._check_adapters_finite(payload)
            if self.dist.is_main:
                ckpt.save_adapters_checked(payload, self.run_dir / "best")
                _logger.info("new best %s %s %.2f at step %d -> %s", self.select_on, name, value, self.state.step,
                             self.run_dir / "best")

    def _metrics(self) -> dict:
        name = self.selection.metric
        return {f"{self.select_on}_{name}": self.last_eval.get(name), "selected_on": self.select_on,
                "selection_metric": name, "best_step": self.state.best_step}

    # ------------------------------------------------------------------------------------------------------------
    # checkpoints

    def save_checkpoint(self, epoch: int) -> None:
        """Adapters (the last/ folder) plus the resumable engine state, both atomic; collective."""
        step = self.state.step
        payload = self.adapters(step, epoch, self._metrics())
        self._check_adapters_finite(payload)
        client_state = {"msta": asdict(self.state)}

        def write_engine_state(folder: Path) -> None:
            self.engine.save_checkpoint(str(folder), tag="state", client_state=client_state, save_latest=False,
                                        exclude_frozen_parameters=True)

        where = ckpt.save_checkpoint(self.run_dir, step, write_engine_state=write_engine_state,
                                     adapters=payload if self.dist.is_main else None,
                                     marker={"step": step, "epoch": epoch}, rank=self.dist.rank, barrier=barrier,
                                     keep_last=self.cfg.keep_last, all_ok=all_true)
        if self.dist.is_main:
            ckpt.save_adapters_checked(payload, self.run_dir / "last")
            _logger.info("checkpoint step %d -> %s", step, where)

    def resume(self, folder: Path) -> None:
        """Restores the engine (trainable weights, optimiser) and the loop state from a complete checkpoint.

        The engine state is DeepSpeed's own pickle: trusted because it is this run's (`msta.engine.run_dir` checked
        its files' sizes and CRCs); the RNG files are read as data.
        """
        try:
            _, client = self.engine.load_checkpoint(str(Path(folder) / "engine"), tag="state",
                                                    load_module_strict=False)
        except (OSError, EOFError, RuntimeError, ValueError, KeyError) as e:
            raise RunDirError(f"--resume: cannot load the engine state in {Path(folder) / 'engine'} "
                              f"({e.__class__.__name__}: {str(e)[:300]}); resume from an earlier checkpoint "
                              f"({[p.name for p in ckpt.list_complete(self.run_dir)]}) or start again with "
                              "--overwrite") from e
        if client is None or "msta" not in client:
            raise RunDirError(f"{folder} is not an msta checkpoint (no client_state['msta'])")
        saved = TrainState(**client["msta"])
        if saved.world_size != self.plan.world_size:
            _logger.warning("resuming a %d-process run with %d processes: same global batch and data order, "
                            "but floating-point sums may differ", saved.world_size, self.plan.world_size)
        self.state = TrainState(**{**asdict(saved), "world_size": self.plan.world_size})
        rng = Path(folder) / f"rng_rank{self.dist.rank}.pt"
        if rng.is_file():
            try:
                ckpt.set_rng_state(ckpt.load_rng_state(rng))
            except ValueError as e:
                raise RunDirError(str(e)) from None
        _logger.info("resumed from %s at step %d (best %s %s %.2f at step %d)", folder, self.state.step,
                     self.select_on, self.selection.metric, self.state.best_metric, self.state.best_step)

    def _finish(self) -> dict:
        bad = self.bad_videos()
        best = f"best_{self.select_on}_{self.selection.metric}"
        results = {"steps": self.state.step, "selected_on": self.select_on,
                   "selection_metric": self.selection.metric, "best_step": self.state.best_step,
                   best: None if self.state.best_step < 0 else self.state.best_metric,
                   f"last_{self.select_on}": self.last_eval, "bad_videos": bad,
                   "global_batch": self.plan.global_batch, "world_size": self.plan.world_size}
        if self.dist.is_main:
            (self.run_dir / SUMMARY_FILE).write_text(json.dumps(results, indent=2))
            _logger.info("done: %d steps; best %s %s %s at step %d; bad videos %s", self.state.step,
                         self.select_on, self.selection.metric, results[best], self.state.best_step, bad)
        barrier()
        return results
