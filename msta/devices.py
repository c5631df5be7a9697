"""Where evaluation and inference run: the device, the autocast precision, and the processes under ``torchrun``.

The same rule as the trainer (``msta.engine.distributed``): CUDA when present (``cuda:LOCAL_RANK`` under a
launcher) unless ``DS_ACCELERATOR=cpu``; ``--device`` (or ``device=`` in ``msta.load``) chooses explicitly. On a
GPU the model runs under ``torch.autocast`` in the training precision (``train.precision`` bf16 / fp16; fp32 runs
without autocast); on the CPU always in fp32. The weights stay fp32. Model code never decides the device: callers
move the model (``build_eval_model(..., device=)``) and the inputs follow the model's parameters.

Nothing here imports DeepSpeed: evaluation processes join a plain ``torch.distributed`` group (gloo on CPU, NCCL on
GPU) from the variables ``torchrun`` sets.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from msta.errors import UsageError

__all__ = ["DEVICE_HELP", "add_device_argument", "select_device", "autocast_dtype", "autocast", "eval_processes",
           "world"]

_logger = logging.getLogger(__name__)

_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


DEVICE_HELP = ("where to run: auto (default: CUDA when present, cuda:LOCAL_RANK under torchrun), cpu, cuda or cuda:N; "
               "on a GPU under autocast in the config's train.precision, on the CPU in fp32")


def add_device_argument(parser) -> None:
    """``--device`` with the same meaning in every command that evaluates or predicts."""
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def select_device(requested: Optional[str | torch.device] = None) -> torch.device:
    """The device to evaluate on.

    Args:
        requested: None or "auto" (CUDA when available and ``DS_ACCELERATOR`` is not "cpu", else the CPU), "cpu",
            "cuda" (``cuda:LOCAL_RANK``) or "cuda:N".

    Raises:
        UsageError: an unknown device, or CUDA asked for where there is none.
    """
    text = str(requested).strip().lower() if requested is not None else "auto"
    if text == "auto":
        on_cpu = os.environ.get("DS_ACCELERATOR", "").lower() == "cpu" or not torch.cuda.is_available()
        return torch.device("cpu") if on_cpu else torch.device("cuda", _local_rank())
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {requested}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise UsageError(f"--device {requested}: msta evaluates on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no GPU is visible (CUDA_VISIBLE_DEVICES, driver)")
        raise UsageError(f"--device {requested}: CUDA is not available ({why}); use --device cpu, or leave "
                         "--device out to take the GPU when there is one")
    index = _local_rank() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {requested}: there are {torch.cuda.device_count()} GPUs (cuda:0 .. "
                         f"cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def autocast_dtype(device: torch.device | str, precision: str = "fp32") -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device``: None (plain fp32) on the CPU and for "fp32".

    A GPU without bf16 support runs a bf16 run's evaluation in fp16 (logged).
    """
    if precision not in _PRECISIONS:
        raise UsageError(f"precision {precision!r}: use fp32, bf16 or fp16")
    device = torch.device(device)
    if device.type != "cuda":
        return None
    dtype = _PRECISIONS[precision]
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        _logger.warning("this GPU has no bf16; evaluating in fp16 instead")
        return torch.float16
    return dtype


def autocast(device: torch.device | str, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, dtype)``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def world() -> tuple[int, int]:
    """(rank, world size) of the evaluation processes; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def eval_processes(requested: Optional[str] = None) -> Iterator[torch.device]:
    """Picks the device and, under ``torchrun`` (``WORLD_SIZE`` > 1), joins the processes for sharded evaluation.

    Every rank scores its share of the videos (``msta.eval.evaluator.score_dataset``) and gets the gathered
    scores; only rank 0 writes outputs. The process group is left again on exit.

    Yields:
        This process's device.
    """
    device = select_device(requested)
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    joined = False
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        joined = True
        _logger.info("evaluation process %d of %d on %s", dist.get_rank(), size, device)
    try:
        yield device
    finally:
        if joined:
            dist.barrier()
            dist.destroy_process_group()
