"""Data order (world-size invariant, resumable) and the DeepSpeed set-up helpers (batch plan, config, 0-dim params)."""
import pytest
import torch
from torch import nn

from msta.config import ConfigError, TrainCfg
from msta.engine.deepspeed_setup import ds_config, fix_scalar_params, plan_batch
from msta.engine.loaders import EvalSampler, TrainSampler


def _global_steps(n, batch, world, micro, epoch=0, start=0):
    """Per optimiser step, the set of indices all ranks consume."""
    per_rank = []
    for r in range(world):
        s = TrainSampler(n, global_batch=batch, rank=r, world_size=world, seed=3)
        s.set_epoch(epoch, start)
        per_rank.append(list(s))
        assert len(s) == len(per_rank[-1])
    share = batch // world
    steps = len(per_rank[0]) // share
    return [sorted(i for r in range(world) for i in per_rank[r][k * share:(k + 1) * share]) for k in range(steps)]


def test_same_global_batches_for_any_world_size():
    one = _global_steps(23, 6, 1, 3)
    assert len(one) == 3
    assert _global_steps(23, 6, 2, 3) == one == _global_steps(23, 6, 3, 1)
    assert _global_steps(23, 6, 1, 3, epoch=1) != one  # a new order each epoch


def test_resume_mid_epoch_continues_the_order():
    full = _global_steps(23, 6, 2, 3, epoch=2)
    assert _global_steps(23, 6, 2, 3, epoch=2, start=1) == full[1:]


def test_too_small_dataset():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TrainSampler(4, global_batch=6, rank=0, world_size=1, seed=0)


def test_eval_sampler_covers_each_item_once_with_equal_lengths():
    samplers = [EvalSampler(7, rank=r, world_size=3) for r in range(3)]
    assert {len(s) for s in samplers} == {3}
    seen = [i for s in samplers for i, ok in zip(s, s.valid_mask()) if ok]
    assert sorted(seen) == list(range(7))


def test_batch_plan():
    plan = plan_batch(TrainCfg(batch_size=32, micro_batch=8), world_size=2)
    assert (plan.grad_accum, plan.global_batch) == (2, 32)
    with pytest.raises(ConfigError, match=r"train\.batch_size \(32\).*train\.micro_batch \(8\).*world size \(3\)"):
        plan_batch(TrainCfg(batch_size=32, micro_batch=8), world_size=3)


def test_ds_config():
    cfg = ds_config(TrainCfg(batch_size=8, micro_batch=2, zero_stage=3, precision="bf16"), 1.0,
                    plan_batch(TrainCfg(batch_size=8, micro_batch=2), 2), on_gpu=False)
    assert cfg["train_batch_size"] == 8 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    with pytest.raises(ConfigError, match="fp16' needs a GPU"):
        ds_config(TrainCfg(precision="fp16"), 1.0, plan_batch(TrainCfg(), 1), on_gpu=False)


def test_fix_scalar_params():
    m = nn.Module()
    m.sub = nn.Module()
    m.sub.logit_scale = nn.Parameter(torch.tensor(4.6), requires_grad=False)
    assert fix_scalar_params(m) == ["sub.logit_scale"]
    assert m.sub.logit_scale.shape == (1,) and not m.sub.logit_scale.requires_grad
    assert fix_scalar_params(m) == []


def test_import_msta_engine_does_not_import_deepspeed():
    import subprocess
    import sys
    code = "import sys, msta, msta.engine, msta.engine.launch; assert 'deepspeed' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
