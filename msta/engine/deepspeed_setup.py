"""DeepSpeed: the lazy import, the ZeRO config built from the typed config, and `initialize` with its CPU pitfalls.

This is the only module that imports DeepSpeed (lazily, so `import msta` and `import msta.engine` stay light).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from msta.config import ConfigError, TrainCfg

__all__ = ["BatchPlan", "import_deepspeed", "plan_batch", "ds_config", "fix_scalar_params", "initialize_engine",
           "TupleOutput", "register_outside_params", "gathered_params"]

_logger = logging.getLogger(__name__)


def import_deepspeed():
    """Imports DeepSpeed, with the shared-memory comm op (a g++ JIT build, ~35 s) disabled: gloo does all comms."""
    try:
        import deepspeed
        import deepspeed.ops
    except ImportError as e:  # pragma: no cover - deepspeed is an install requirement
        raise ImportError("training needs DeepSpeed: `pip install deepspeed` (it runs on CPU too; "
                          "export DS_ACCELERATOR=cpu on a machine without GPU)") from e
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


@dataclass(frozen=True)
class BatchPlan:
    """How the global batch is made: `global_batch = micro_batch * grad_accum * world_size`."""
    global_batch: int
    micro_batch: int
    grad_accum: int
    world_size: int


def plan_batch(cfg: TrainCfg, world_size: int) -> BatchPlan:
    """Derives the gradient-accumulation steps from the global batch, the micro batch and the number of processes.

    Raises:
        ConfigError: the global batch is not a multiple of `micro_batch * world_size`; the message suggests values.
    """
    per_step = cfg.micro_batch * world_size
    if cfg.batch_size % per_step:
        fits = [m for m in range(1, cfg.batch_size + 1) if cfg.batch_size % (m * world_size) == 0]
        raise ConfigError(
            f"train.batch_size ({cfg.batch_size}) must equal train.micro_batch ({cfg.micro_batch}) x gradient "
            f"accumulation x world size ({world_size}); {cfg.batch_size} is not a multiple of "
            f"{cfg.micro_batch} x {world_size} = {per_step}. Use train.micro_batch in {fits or '[none]'} "
            f"or a train.batch_size multiple of {per_step}")
    return BatchPlan(global_batch=cfg.batch_size, micro_batch=cfg.micro_batch,
                     grad_accum=cfg.batch_size // per_step, world_size=world_size)


def ds_config(cfg: TrainCfg, grad_clip: float, plan: BatchPlan, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config dict: ZeRO stage, precision, batch sizes and clipping from the typed config.

    Raises:
        ConfigError: fp16 requested on CPU.
    """
    if cfg.precision == "fp16" and not on_gpu:
        raise ConfigError("train.precision 'fp16' needs a GPU; use 'bf16' or 'fp32' on CPU")
    return {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 10 ** 9,  # our own logger reports progress
        "wall_clock_breakdown": False,
    }


def fix_scalar_params(model: nn.Module) -> list[str]:
    """Reshapes 0-dim parameters (open_clip's `logit_scale`) to shape (1,).

    DeepSpeed's `_broadcast_model` views every parameter as bytes, which fails on 0-dim tensors (environment.md §4b).
    open_clip's `load_checkpoint` reshapes a (1,) `logit_scale` back, so checkpoints stay interchangeable.

    Returns:
        The names of the parameters reshaped.
    """
    fixed = []
    for name, p in list(model.named_parameters()):
        if p.ndim == 0:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, nn.Parameter(p.detach().reshape(1), requires_grad=p.requires_grad))
            fixed.append(name)
    return fixed


def initialize_engine(model: nn.Module, optimizer: torch.optim.Optimizer, config: dict[str, Any]):
    """`deepspeed.initialize` with the client optimiser; returns the engine (its `.optimizer` is the wrapped one)."""
    deepspeed = import_deepspeed()
    fixed = fix_scalar_params(model)
    if fixed:
        _logger.debug("reshaped 0-dim parameters to (1,) for DeepSpeed: %s", fixed)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


class TupleOutput(nn.Module):
    """Wraps a model whose forward returns a dataclass so that the engine sees a tuple of tensors.

    ZeRO-3 attaches its backward hooks to the tensors of a module's output and finds them only in tensors, tuples,
    lists and dicts; a dataclass output would leave the top module without a backward hook. `as_output` turns the
    tuple back into the dataclass.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs) -> tuple:
        out = self.model(*args, **kwargs)
        self._output_type = type(out)
        return tuple(getattr(out, f.name) for f in dataclasses.fields(out))

    def as_output(self, values: tuple):
        return self._output_type(*values)


def register_outside_params(model: nn.Module, run_forward: Callable[[], object]) -> list[str]:
    """ZeRO-3: registers parameters that a forward uses outside their owning module's `forward`.

    ZeRO-3 gathers a parameter only while its owner's forward (or backward) runs. Code that uses a module's
    parameters without calling it (e.g. `x @ clip.visual.proj`, `nn.MultiheadAttention` reading `out_proj.weight`)
    would see an empty partition in backward ("mat2 must be a matrix"). One forward with hooks finds the modules
    whose forward never runs (or returns a type ZeRO-3 cannot hook, such as a dataclass); their parameters are
    registered as external parameters of the nearest ancestor whose forward does run and returns tensors, so they
    are gathered around its forward and backward. Run before `deepspeed.initialize`.

    Args:
        model: the top module (the one the engine wraps; its forward must return tensors, tuples, lists or dicts).
        run_forward: runs one representative forward of `model` (a dummy batch is enough).

    Returns:
        "param -> owner" descriptions of the registrations.
    """
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    called: set[int] = set()  # modules whose forward ran and returned what ZeRO-3 can hook (not a dataclass)

    def record(mod, _args, out):
        if out is None or isinstance(out, (torch.Tensor, tuple, list, dict)):
            called.add(id(mod))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    done = []
    for name, module in modules.items():
        if module is model or id(module) in called or not list(module.parameters(recurse=False)):
            continue
        parent = name
        while parent and id(modules[parent]) not in called:
            parent = parent.rpartition(".")[0]
        owner = modules[parent] if parent else model
        for param_name, p in module.named_parameters(recurse=False):
            register_external_parameter(owner, p)
            done.append(f"{name}.{param_name} -> {parent or '<top>'}")
    return done


def gathered_params(params: list[nn.Parameter], zero_stage: int):
    """A context in which ZeRO-3 partitioned `params` are whole on every rank (a no-op for stages 0-2).

    Collective under ZeRO-3: every rank must enter it.
    """
    import contextlib

    if zero_stage < 3:
        return contextlib.nullcontext()
    return import_deepspeed().zero.GatheredParameters(params, modifier_rank=None)
