"""Optimiser: AdamW over the trainable parameters only, without weight decay on biases and other 1-d tensors."""
from __future__ import annotations

import logging

import torch
from torch import nn

from msta.config import OptimCfg

__all__ = ["param_groups", "build_optimizer", "set_lr"]

_logger = logging.getLogger(__name__)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Splits the trainable parameters into a decayed group (matrices, conv kernels) and a non-decayed one.

    Biases, norm gains and any other tensor with fewer than 2 dimensions get no weight decay (nanoGPT/timm rule).
    Frozen parameters are left out, so they never reach the optimiser (nor its state).

    Args:
        model: the model; only parameters with `requires_grad` are used.
        weight_decay: decay of the first group.

    Returns:
        `[{"params": decay, "weight_decay": wd, "names": [...]}, {"params": no_decay, "weight_decay": 0.0, ...}]`,
        empty groups dropped.

    Raises:
        ValueError: the model has no trainable parameter.
    """
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2:
            decay.append(p), decay_names.append(name)
        else:
            no_decay.append(p), no_decay_names.append(name)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameter; check model.msta / model.st_adapter in the config")
    groups = [{"params": decay, "weight_decay": weight_decay, "names": decay_names},
              {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimCfg) -> torch.optim.AdamW:
    """`torch.optim.AdamW` with the paper's defaults (lr 1e-3, wd 1e-3, betas (0.9, 0.98)) on the trainable params.

    The learning rate is set by the schedule before every step (`set_lr`); `cfg.lr` is only the initial value.
    """
    groups = param_groups(model, cfg.weight_decay)
    for g in groups:
        _logger.info("optimiser group: %d tensors, %d params, weight decay %g",
                     len(g["params"]), sum(p.numel() for p in g["params"]), g["weight_decay"])
    # DeepSpeed copies the groups into its own partitions; the names would be passed to torch and are only for us.
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Sets the learning rate of every parameter group (works on DeepSpeed's wrapped optimisers too)."""
    for g in optimizer.param_groups:
        g["lr"] = lr
