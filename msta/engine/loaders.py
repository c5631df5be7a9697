"""Data order for training and evaluation: deterministic, sharded across ranks, resumable mid-epoch.

The training order of epoch e is a permutation drawn from (seed, e) and is the same whatever the number of
processes: optimiser step k always consumes positions [k*B, (k+1)*B) of it (B the global batch), rank r taking
positions r, r + W, r + 2W, ... and cutting them into micro batches. So a 2-process run and a 1-process run with the
same global batch see the same clips in every step, and a resumed run continues with exactly the clips an
uninterrupted run would have seen (the datasets draw augmentation from (seed, epoch, index) too).

Worker processes never fork the training process. Forking after decord, OpenMP or any other threaded library has
run in the parent copies locks that other threads held at that moment, and a worker can block on one forever (seen
as a DataLoader that hangs mid-epoch with both workers stuck in the queue feeder). So every loader with workers uses
`worker_context()`: the "forkserver" start method (a clean server process, started once, that has imported torch and
msta's data modules but never decoded a video, forks the workers) where the platform has it, "spawn" elsewhere; and
the workers are persistent, so that this start cost is paid once per loader instead of once per epoch (the datasets
keep their epoch and bad-video counts in shared memory, which reaches persistent workers). Measured on the 2-core
CI machine under load: the forkserver's start ~5 s once per process, then ~0.6 s per loader; steady-state
throughput equal to fork (tests/engine/test_loaders_workers.py).
"""
from __future__ import annotations

import logging
import multiprocessing
import sys
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["TrainSampler", "EvalSampler", "train_loader", "eval_loader", "worker_context", "worker_kwargs",
           "FORKSERVER_PRELOAD"]

# imported once by the forkserver so that each worker starts as a fork of a process that has them (nothing
# threaded has run there: importing does not decode)
FORKSERVER_PRELOAD = ["torch", "msta.data.datasets", "msta.data.captions"]


class TrainSampler(Sampler[int]):
    """This rank's indices of one epoch, from the step `start_step` on.

    Args:
        num_items: dataset size.
        global_batch: B = micro batch x accumulation x world size.
        rank, world_size: this process in the data-parallel group.
        seed: order seed (combined with the epoch).
    """

    def __init__(self, num_items: int, *, global_batch: int, rank: int, world_size: int, seed: int):
        if num_items < global_batch:
            raise ValueError(f"the training set has {num_items} items (videos, or caption lines with loss.kind "
                             "infonce), fewer than one global batch "
                             f"(train.batch_size={global_batch}); lower train.batch_size or add data")
        self.num_items, self.global_batch = num_items, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch; the last incomplete global batch is dropped."""
        return self.num_items // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def epoch_order(self, epoch: int) -> list[int]:
        """The global order of `epoch` (all ranks), cut to whole global batches."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=g)[:self.steps_per_epoch * self.global_batch].tolist()

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_order(self.epoch)[self.rank::self.world_size]
        return iter(mine[self.start_step * (self.global_batch // self.world_size):])

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * (self.global_batch // self.world_size)


class EvalSampler(Sampler[int]):
    """Every item once over all ranks, padded so that all ranks run the same number of batches.

    Equal batch counts matter under ZeRO-3, where each forward is a collective. Padding repeats index 0;
    `valid_mask` tells which of this rank's positions count.
    """

    def __init__(self, num_items: int, *, rank: int, world_size: int):
        self.num_items, self.rank, self.world_size = num_items, rank, world_size
        self.per_rank = -(-num_items // world_size)

    def positions(self) -> list[int]:
        return [self.rank + j * self.world_size for j in range(self.per_rank)]

    def __iter__(self) -> Iterator[int]:
        return iter([p if p < self.num_items else 0 for p in self.positions()])

    def __len__(self) -> int:
        return self.per_rank

    def valid_mask(self) -> torch.Tensor:
        return torch.tensor([p < self.num_items for p in self.positions()])


def worker_context() -> multiprocessing.context.BaseContext:
    """The start method of DataLoader workers: "forkserver" (Linux, and the preload set), else "spawn"."""
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(FORKSERVER_PRELOAD)  # read only when the server starts (once per process)
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_init(log_file: Optional[str], worker_id: int) -> None:
    """A fresh worker has no log handlers: its warnings (bad videos) go to stderr and the run's train.log."""
    root = logging.getLogger("msta")
    for h in list(root.handlers):
        root.removeHandler(h)
    root.propagate = False
    root.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter(f"%(asctime)s %(levelname).1s %(name)s [worker {worker_id}]: %(message)s",
                                         "%H:%M:%S"))
        root.addHandler(h)


def worker_kwargs(num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for `num_workers` workers that cannot deadlock on fork (module docstring).

    Every DataLoader of msta with workers takes these: `DataLoader(ds, ..., num_workers=n, **worker_kwargs(n))`.
    """
    if num_workers <= 0:
        return {}
    log_file = next((h.baseFilename for h in logging.getLogger("msta").handlers
                     if isinstance(h, logging.FileHandler)), None)
    import functools

    return {"multiprocessing_context": worker_context(), "persistent_workers": True,
            "worker_init_fn": functools.partial(_worker_init, log_file)}


def _loader(dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int, seed: int,
            drop_last: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(seed),
                      **worker_kwargs(num_workers))


def train_loader(dataset: Dataset, sampler: TrainSampler, micro_batch: int, num_workers: int) -> DataLoader:
    """Micro batches of this rank's share of the epoch order."""
    return _loader(dataset, sampler, micro_batch, num_workers, sampler.seed, drop_last=True)


def eval_loader(dataset: Optional[Dataset], batch_size: int, num_workers: int, *, rank: int,
                world_size: int) -> Optional[DataLoader]:
    """A loader over this rank's shard of `dataset` (None passes through)."""
    if dataset is None:
        return None
    return _loader(dataset, EvalSampler(len(dataset), rank=rank, world_size=world_size), batch_size, num_workers,
                   0, drop_last=False)
