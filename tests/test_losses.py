"""Loss properties: known values, symmetry, invariances, gradients, and that L_CC pulls towards its targets."""
import math

import pytest
import torch
import torch.nn.functional as F

from msta.losses import (LossOutput, classification_logits, classification_loss, consistency_loss,
                         description_targets, infonce_loss, reference_distillation_loss, total_loss)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, g, dtype=torch.float64):
    return torch.randn(*shape, generator=g, dtype=dtype)


def test_ce_equals_log_num_classes_for_equal_logits():
    g = _gen()
    video = _randn(4, 8, g=g)
    class_emb = _randn(1, 8, g=g).expand(5, 8)           # every class identical -> all logits equal
    labels = torch.tensor([0, 1, 2, 4])
    loss = classification_loss(video, class_emb, labels, 100.0)
    assert loss.item() == pytest.approx(math.log(5), abs=1e-9)


def test_ce_matches_naive_formula_and_normalises_inside():
    g = _gen(1)
    video, class_emb = _randn(6, 16, g=g), _randn(10, 16, g=g)
    labels = torch.randint(0, 10, (6,), generator=g)
    scale = 37.0
    cos = torch.stack([torch.stack([F.cosine_similarity(v, c, dim=0) for c in class_emb]) for v in video])
    expected = torch.stack([-torch.log_softmax(scale * cos[i], 0)[labels[i]] for i in range(6)]).mean()
    got = classification_loss(video * 3.0, class_emb * 0.1, labels, scale)    # scale-free in the embeddings
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_ce_near_zero_for_separated_classes_at_high_scale():
    emb = torch.eye(4, dtype=torch.float64)
    loss = classification_loss(emb, emb, torch.arange(4), 100.0)
    assert loss.item() < 1e-10


def test_logit_scale_tensor_receives_gradient():
    g = _gen(2)
    scale = torch.tensor(10.0, requires_grad=True)
    loss = classification_loss(_randn(3, 8, g=g, dtype=torch.float32), _randn(5, 8, g=g, dtype=torch.float32),
                               torch.tensor([0, 1, 2]), scale)
    loss.backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)
    # DeepSpeed needs logit_scale reshaped to (1,): it must still act as a scalar
    one_d = classification_logits(torch.ones(2, 3), torch.ones(4, 3), torch.tensor([10.0]))
    assert one_d.shape == (2, 4) and torch.allclose(one_d, torch.full((2, 4), 10.0))


def test_infonce_symmetric_and_matches_two_sided_ce():
    g = _gen(3)
    v, t = _randn(7, 12, g=g), _randn(7, 12, g=g)
    a, b = infonce_loss(v, t, 20.0), infonce_loss(t, v, 20.0)
    torch.testing.assert_close(a, b)
    target = torch.arange(7)
    logits = 20.0 * F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).t()
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    torch.testing.assert_close(a, expected, rtol=1e-5, atol=1e-6)


def test_infonce_log_batch_for_equal_logits():
    v = torch.ones(6, 4, dtype=torch.float64)
    assert infonce_loss(v, v, 100.0).item() == pytest.approx(math.log(6), abs=1e-9)


def test_infonce_rows_of_equal_shards_average_to_the_full_loss_and_gradient():
    g = _gen(11)
    v = _randn(6, 5, g=g).requires_grad_()
    t = _randn(6, 5, g=g).requires_grad_()
    scale = torch.tensor(30.0, dtype=torch.float64, requires_grad=True)
    full = infonce_loss(v, t, scale)
    full_grads = torch.autograd.grad(full, (v, t, scale))
    parts = [infonce_loss(v, t, scale, rows=slice(r * 2, r * 2 + 2)) for r in range(3)]
    mean = sum(parts) / 3
    torch.testing.assert_close(mean, full)
    for got, want in zip(torch.autograd.grad(mean, (v, t, scale)), full_grads):
        torch.testing.assert_close(got, want)
    assert len({round(p.item(), 6) for p in parts}) == 3          # the shards are different losses
    with pytest.raises(ValueError, match="select no pair"):
        infonce_loss(v, t, scale, rows=slice(6, 8))


def _gather_worker(rank: int, world: int, port: int) -> None:
    """One of 2 gloo processes: the Objective's gathered InfoNCE on this rank's half equals one process with both."""
    import os
    from types import SimpleNamespace

    import torch.distributed as dist

    from msta.config import LossCfg
    from msta.engine.objective import Objective

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = _gen(5)
        x_video, x_text = _randn(8, 6, g=g), _randn(8, 6, g=g)
        w_video, w_text = _randn(6, 4, g=g), _randn(6, 4, g=g)
        scale = torch.tensor(20.0, dtype=torch.float64)

        def loss_of(negatives: str, rows: slice, params):
            wv, wt, s = params
            out = SimpleNamespace(video_emb=x_video[rows] @ wv, class_emb=x_text[rows] @ wt, logit_scale=s)
            return Objective(LossCfg(kind="infonce", negatives=negatives), None)._infonce(out)

        def leaves():
            return [p.clone().requires_grad_() for p in (w_video, w_text, scale)]

        mine = slice(rank * 4, rank * 4 + 4)
        params = leaves()
        loss = loss_of("global", mine, params)
        loss.backward()
        grads = [p.grad.clone() for p in params]
        for gr in grads:                      # what the engine's gradient averaging over ranks does
            dist.all_reduce(gr)
            gr /= world
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world

        one = leaves()   # not initialised in one process: gather is the identity, the loss is the full batch's
        dist.destroy_process_group()
        full = infonce_loss(x_video @ one[0], x_text @ one[1], one[2])
        full.backward()
        torch.testing.assert_close(mean_loss, full.detach())
        for got, ref in zip(grads, one):
            torch.testing.assert_close(got, ref.grad)
        local = loss_of("local", mine, leaves())
        assert abs(local.item() - loss.item()) > 1e-3      # local negatives are a different objective
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_gathered_infonce_in_two_gloo_processes_equals_one_process():
    import torch.multiprocessing as mp

    from msta.engine.distributed import free_port

    mp.spawn(_gather_worker, args=(2, free_port()), nprocs=2, join=True)


def test_consistency_zero_when_equal_and_four_when_opposite():
    g = _gen(4)
    w = _randn(5, 8, g=g)
    assert consistency_loss(w, w.clone(), 2.0 * w).item() == pytest.approx(0.0, abs=1e-6)
    assert consistency_loss(w, -w, -0.5 * w).item() == pytest.approx(4.0, abs=1e-6)
    # orthogonal targets give 1 each
    e = torch.eye(3, dtype=torch.float64)
    assert consistency_loss(e, e.roll(1, dims=1), e.roll(2, dims=1)).item() == pytest.approx(2.0, abs=1e-6)


def test_consistency_matches_per_class_formula():
    g = _gen(5)
    w, ds, dt = _randn(6, 8, g=g), _randn(6, 8, g=g), _randn(6, 8, g=g)
    expected = sum(2 - F.cosine_similarity(w[c], ds[c], dim=0) - F.cosine_similarity(w[c], dt[c], dim=0)
                   for c in range(6)) / 6
    torch.testing.assert_close(consistency_loss(w, ds, dt), expected, rtol=1e-5, atol=1e-6)


def test_description_targets_mean_of_normalised():
    g = _gen(6)
    desc = _randn(4, 3, 8, g=g)
    desc[:, 0] *= 50.0                                    # a long vector must not dominate the mean
    target = description_targets(desc)
    assert target.shape == (4, 8)
    for c in range(4):
        expected = sum(desc[c, n] / desc[c, n].norm() for n in range(3)) / 3
        torch.testing.assert_close(target[c], expected)


def test_gradients_finite_for_all_losses():
    g = _gen(7)
    video = _randn(4, 8, g=g, dtype=torch.float32).requires_grad_()
    class_emb = _randn(6, 8, g=g, dtype=torch.float32).requires_grad_()
    ds, dt = description_targets(_randn(6, 2, 8, g=g, dtype=torch.float32)), _randn(6, 8, g=g, dtype=torch.float32)
    out = total_loss(video, class_emb, torch.tensor([0, 1, 5, 3]), 100.0, spatial_target=ds, temporal_target=dt)
    out.total.backward()
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0
    assert torch.isfinite(class_emb.grad).all() and class_emb.grad.abs().sum() > 0
    text = _randn(4, 8, g=g, dtype=torch.float32).requires_grad_()
    infonce_loss(video, text, 100.0).backward()
    assert torch.isfinite(text.grad).all()


def test_total_loss_combines_terms():
    g = _gen(8)
    video, class_emb = _randn(4, 8, g=g), _randn(6, 8, g=g)
    ds, dt = _randn(6, 8, g=g), _randn(6, 8, g=g)
    labels = torch.tensor([0, 1, 2, 3])
    out = total_loss(video, class_emb, labels, 50.0, spatial_target=ds, temporal_target=dt, alpha=0.5)
    assert isinstance(out, LossOutput)
    torch.testing.assert_close(out.total, out.ce + 0.5 * out.cc)
    torch.testing.assert_close(out.ce, classification_loss(video, class_emb, labels, 50.0))
    torch.testing.assert_close(out.cc, consistency_loss(class_emb, ds, dt))
    off = total_loss(video, class_emb, labels, 50.0)
    assert off.cc.item() == 0.0 and torch.equal(off.total, off.ce)
    assert set(off.as_floats()) == {"loss", "loss_ce", "loss_cc"}


def test_consistency_pulls_class_embeddings_towards_targets():
    g = _gen(9)
    desc_s, desc_t = _randn(5, 2, 16, g=g), _randn(5, 2, 16, g=g)
    ds, dt = description_targets(desc_s), description_targets(desc_t)
    w = _randn(5, 16, g=g).requires_grad_()
    opt = torch.optim.SGD([w], lr=0.5)

    def cosines():
        with torch.no_grad():
            return F.cosine_similarity(w, ds, dim=-1), F.cosine_similarity(w, dt, dim=-1)

    before_s, before_t = cosines()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = consistency_loss(w, ds, dt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after_s, after_t = cosines()
    assert losses[-1] < losses[0]
    assert (after_s + after_t > before_s + before_t).all()        # every class moved towards its targets
    assert (after_s > before_s).float().mean() >= 0.8


@pytest.mark.parametrize("call", [
    lambda: classification_loss(torch.ones(2, 4), torch.ones(3, 5), torch.tensor([0, 1]), 1.0),
    lambda: classification_loss(torch.ones(2, 4), torch.ones(3, 4), torch.tensor([0, 1, 2]), 1.0),
    lambda: classification_loss(torch.ones(2, 4), torch.ones(3, 4), torch.tensor([0, 1]), 0.0),
    lambda: classification_loss(torch.ones(2, 4), torch.ones(3, 4), torch.tensor([0, 1]), torch.ones(2)),
    lambda: infonce_loss(torch.ones(2, 4), torch.ones(3, 4), 1.0),
    lambda: consistency_loss(torch.ones(3, 4), torch.ones(2, 4), torch.ones(3, 4)),
    lambda: description_targets(torch.ones(3, 4)),
    lambda: total_loss(torch.ones(2, 4), torch.ones(3, 4), torch.tensor([0, 1]), 1.0,
                       spatial_target=torch.ones(3, 4)),
])
def test_bad_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_reference_distillation_is_kl_of_frozen_to_adapted():
    g = _gen(21)
    video, refs = _randn(3, 8, g=g), _randn(5, 8, g=g)
    t_video, t_refs = _randn(3, 8, g=g), _randn(5, 8, g=g)
    loss = reference_distillation_loss(video, refs, t_video, t_refs, 20.0)
    p = torch.softmax(20.0 * F.normalize(t_video.double(), dim=-1) @ F.normalize(t_refs.double(), dim=-1).T, -1)
    q = torch.softmax(20.0 * F.normalize(video.double(), dim=-1) @ F.normalize(refs.double(), dim=-1).T, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert loss.item() > 0
    # zero when the adapted model answers as the frozen one, whatever the embeddings' norms
    same = reference_distillation_loss(3 * t_video, t_refs, t_video, 0.5 * t_refs, 20.0)
    assert abs(same.item()) < 1e-6


def test_reference_distillation_gradients_reach_both_student_towers():
    g = _gen(22)
    video = _randn(4, 8, g=g, dtype=torch.float32).requires_grad_()
    refs = _randn(6, 8, g=g, dtype=torch.float32).requires_grad_()
    reference_distillation_loss(video, refs, _randn(4, 8, g=g), _randn(6, 8, g=g), torch.tensor(15.0)).backward()
    assert video.grad.abs().sum() > 0 and refs.grad.abs().sum() > 0
    mixed = reference_distillation_loss(video.bfloat16(), refs.bfloat16(), _randn(4, 8, g=g).bfloat16(),
                                        _randn(6, 8, g=g).float(), 15.0)  # bf16 training, fp32 reference table
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    with pytest.raises(ValueError, match="student and teacher shapes differ"):
        reference_distillation_loss(video, refs, _randn(3, 8, g=g), _randn(6, 8, g=g), 15.0)


def test_loss_output_logs_rd_only_when_present():
    z = torch.zeros(())
    assert "loss_rd" not in LossOutput(z, z, z).as_floats()
    assert LossOutput(z + 1, z, z, rd=z + 0.5).as_floats()["loss_rd"] == 0.5
