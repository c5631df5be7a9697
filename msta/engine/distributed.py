"""Process-group set-up and rank helpers: one code path for a plain `python`, `torchrun` and the `deepspeed` launcher.

Every helper is an exact no-op (or the obvious single-process answer) when `torch.distributed` is not initialised, so
library code can call them unconditionally.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo", "launcher_env_defaults", "free_port", "init_distributed", "cleanup_distributed", "get_rank",
    "get_world_size", "is_main_process", "barrier", "all_reduce_sum", "all_gather_tensor", "all_gather_with_grad",
    "broadcast_object", "all_true",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, rank on the node, device and communication backend."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port that was free a moment ago on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_env_defaults(local_rank: int | None = None) -> dict[str, str]:
    """Fills in the variables a launcher would set, so a plain `python train.py` is a world of one.

    `torchrun` and `deepspeed` set RANK/WORLD_SIZE/MASTER_*; the `deepspeed` launcher also passes `--local_rank=N`,
    which is given here as `local_rank`. Without these DeepSpeed falls back to MPI discovery (environment.md §4a).

    Returns:
        The variables that were missing and have been set.
    """
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": str(local_rank or 0), "MASTER_ADDR": "127.0.0.1"}
    added = {}
    for key, value in defaults.items():
        if key not in os.environ:
            os.environ[key] = added[key] = value
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = added["MASTER_PORT"] = str(free_port())
    return added


def _pick_device(local_rank: int) -> tuple[torch.device, str]:
    on_cpu = os.environ.get("DS_ACCELERATOR", "").lower() == "cpu" or not torch.cuda.is_available()
    if on_cpu:
        return torch.device("cpu"), "gloo"
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank), "nccl"


def init_distributed(local_rank: int | None = None) -> DistInfo:
    """Initialises the default process group (gloo on CPU, NCCL on GPU) through DeepSpeed.

    Args:
        local_rank: the `--local_rank` argument of the `deepspeed` launcher, if any (LOCAL_RANK wins when set).

    Returns:
        This process's `DistInfo`.
    """
    from msta.engine.deepspeed_setup import import_deepspeed

    added = launcher_env_defaults(local_rank)
    if added:
        _logger.debug("no launcher environment; running as a single process (%s)", added)
    lr = int(os.environ["LOCAL_RANK"])
    device, backend = _pick_device(lr)
    deepspeed = import_deepspeed()
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=lr, device=device,
                    backend=backend)


def cleanup_distributed() -> None:
    """Barrier, then destroy the process group: without it ~1 run in 10 aborts at exit (environment.md §4d)."""
    if dist.is_initialized():
        dist.barrier()
        ds_comm = sys.modules.get("deepspeed.comm.comm")   # the module that holds DeepSpeed's backend (cdb)
        if ds_comm is not None and getattr(ds_comm, "cdb", None) is not None and ds_comm.cdb.is_initialized():
            # through DeepSpeed, which also drops its cached groups: a later run in this process (tests, notebooks)
            # would otherwise broadcast over the destroyed world group ("Group ... is not registered")
            ds_comm.destroy_process_group()
        else:
            dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks (a copy; `t` itself is unchanged)."""
    out = t.clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks along dim 0 of equally shaped tensors, without gradient."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the gradient of the gathered tensor over ranks and keeps this rank's slice.

    The sum is what makes a loss computed from the gathered rows differentiate like one process holding them all:
    rank r's rows are used by every rank's loss, so their gradient is the sum of all ranks' contributions.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        ctx.rows, ctx.rank = t.shape[0], dist.get_rank()
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks along dim 0 (rank-major) of equally shaped tensors, differentiable.

    Rank r's rows sit at [r * n, (r + 1) * n). The backward is a collective too (an all-reduce), so every rank must
    call backward on a graph that used the gathered tensor. `t` itself in a single process.
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return t
    return _AllGatherWithGrad.apply(t)


def broadcast_object(obj):
    """Rank 0's `obj` (any picklable value) on every rank; `obj` itself on a single process."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_true(flag: bool) -> bool:
    """True on every rank iff `flag` is True on every rank (a collective; the flag itself on a single process)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return bool(flag)
    t = torch.tensor([0.0 if flag else 1.0])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return bool(t.item() == 0)
