"""Warm-up + cosine schedule (a pure function of step) and the optimiser's parameter groups."""
import math

import pytest
import torch
from torch import nn

from msta.config import OptimCfg
from msta.engine.optim import build_optimizer, param_groups, set_lr
from msta.engine.schedule import WarmupCosine


def test_warmup_then_cosine_to_min():
    s = WarmupCosine(base_lr=1e-3, min_lr=1e-5, warmup_steps=5, total_steps=50)
    assert [s(i) for i in range(5)] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert s(5) == pytest.approx(1e-3)
    mid = 5 + 45 / 2
    assert s(int(mid)) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 22 / 45)))
    assert s(50) == pytest.approx(1e-5) and s(500) == pytest.approx(1e-5)
    decay = [s(i) for i in range(5, 51)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_schedule_is_pure_and_from_epochs():
    s = WarmupCosine.from_epochs(base_lr=1e-3, min_lr=1e-5, epochs=50, warmup_epochs=5, steps_per_epoch=4)
    assert (s.warmup_steps, s.total_steps) == (20, 200)
    assert [s(i) for i in (3, 150, 3)] == [s(3), s(150), s(3)]  # no hidden state
    assert WarmupCosine(base_lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=10)(0) == 1.0
    with pytest.raises(ValueError):
        WarmupCosine(base_lr=1.0, min_lr=2.0, warmup_steps=0, total_steps=10)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.adapter = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.conv = nn.Conv3d(4, 4, (3, 1, 1), groups=4)
        self.frozen.requires_grad_(False)


def test_groups_hold_only_trainable_params_and_no_decay_on_1d():
    net = _Net()
    groups = param_groups(net, 0.1)
    assert groups[0]["weight_decay"] == 0.1 and sorted(groups[0]["names"]) == ["adapter.weight", "conv.weight"]
    assert groups[1]["weight_decay"] == 0.0
    assert sorted(groups[1]["names"]) == ["adapter.bias", "conv.bias", "norm.bias", "norm.weight"]
    opt = build_optimizer(net, OptimCfg())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in net.parameters() if p.requires_grad}
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["lr"] == 1e-3
    set_lr(opt, 0.5)
    assert all(g["lr"] == 0.5 for g in opt.param_groups)


def test_no_trainable_params_is_an_error():
    net = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups(net, 0.0)
