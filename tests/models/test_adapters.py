"""Adapter modules on their own: exact gradients (gradcheck, float64), gradient-scale trick, ST identity at init."""
import pytest
import torch
from torch import nn

from msta.models.adapters import GradScale, MstaLayer, MstaTextBranch, MstaVideoBranch, StAdapter, grad_scale

T = 3  # frames


def _frames(width: int, clips: int = 1, patches: int = 2) -> torch.Tensor:
    return torch.randn(clips * T, 1 + patches, width, dtype=torch.float64, requires_grad=True)


def test_gradscale_is_identity_forward_and_scales_backward():
    x = torch.randn(5, requires_grad=True)
    y = grad_scale(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 0.25))
    assert GradScale.apply(x, 1.0) is not x


def test_gradcheck_text_branch():
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).double()
    branch = MstaTextBranch(8, 4).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: branch(inp, shared), (x,), fast_mode=True)
    own = MstaTextBranch(8, 4, own_mid=True).double()
    assert torch.autograd.gradcheck(lambda inp: own(inp), (x,), fast_mode=True)


def test_gradcheck_video_branch():
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).double()
    branch = MstaVideoBranch(8, 4, temporal=True, kernel=3).double()
    assert torch.autograd.gradcheck(lambda inp: branch(inp, T, shared), (_frames(8),), fast_mode=True)


def test_gradcheck_st_adapter():
    torch.manual_seed(0)
    st = StAdapter(8, 4, kernel=3).double()
    nn.init.normal_(st.conv.weight)  # zero at init; perturb so the check exercises every path
    nn.init.normal_(st.conv.bias)
    assert torch.autograd.gradcheck(lambda inp: st(inp, T), (_frames(8),), fast_mode=True)


@pytest.mark.parametrize("modality", ["text", "visual"])
def test_gradcheck_msta_layer_unit_scale(modality):
    torch.manual_seed(0)
    layer = MstaLayer(4, 1.0, text_width=8, vision_width=8).double()
    norm = nn.LayerNorm(8).double()
    fn = (lambda inp: layer.forward_text(inp, norm)) if modality == "text" else \
        (lambda inp: layer.forward_visual(inp, norm, T))
    assert torch.autograd.gradcheck(fn, (_frames(8),), fast_mode=True)


def test_msta_scale_trick_unscaled_parameter_gradients():
    torch.manual_seed(0)
    s = 0.005
    layer = MstaLayer(4, s, text_width=8, vision_width=8).double()
    norm = nn.LayerNorm(8).double()
    x = _frames(8)
    g = torch.randn(x.shape, dtype=torch.float64)
    out = layer.forward_visual(x, norm, T)
    (out * g).sum().backward()
    scaled = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    assert len(scaled) == 8  # shared + visual down / up / temporal
    x_grad = x.grad.clone()
    layer.zero_grad()
    x.grad = None
    ref = layer.visual(norm(x), T, layer.shared)
    torch.testing.assert_close(out, s * ref)  # forward: lambda * A(ln(x))
    (ref * g).sum().backward()
    for n, p in layer.named_parameters():
        if n in scaled:
            torch.testing.assert_close(scaled[n], p.grad)  # parameters: gradient of the unscaled A
    torch.testing.assert_close(x_grad, s * x.grad)  # input: the true gradient of lambda * A


def test_msta_init_and_shapes():
    layer = MstaLayer(16, 0.005, text_width=32, vision_width=64)
    assert layer.visual.temporal.weight.shape == (64, 1, 3, 1, 1)  # grouped by r: 3 weights per output channel
    for m in layer.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            assert torch.count_nonzero(m.bias) == 0 and m.weight.std() > 0
    only_text = MstaLayer(16, 0.005, text_width=32)
    assert only_text.visual is None and only_text.shared is not None
    with pytest.raises(ValueError, match="must divide the vision width"):
        MstaLayer(24, 0.005, vision_width=64)


def test_st_adapter_identity_at_init_cls_untouched_out_of_place():
    st = StAdapter(8, 4)
    x = torch.randn(2 * T, 5, 8)
    x_before = x.clone()
    assert torch.equal(st(x, T), x)
    nn.init.normal_(st.conv.weight)
    y = st(x, T)
    assert torch.equal(x, x_before)  # input not modified in place
    assert torch.equal(y[:, 0], x[:, 0]) and not torch.equal(y[:, 1:], x[:, 1:])
    with pytest.raises(ValueError, match="num_frames"):
        st(torch.randn(5, 5, 8), T)
