"""The speed paths compute exactly what the modules they replace compute (within float rounding), values and grads.

- ``attention.self_attention`` / open_clip ``block_forward`` / ``AdaptedBlock`` vs nn.MultiheadAttention and open_clip's
  ResidualAttentionBlock (causal mask, LayerScale, train and eval mode);
- ``adapters.temporal_conv_shifted`` vs the Conv3d it reads its weights from;
- the MSTA / ST-Adapter forwards vs their reference formulas on ``temporal_conv_on_patches``.
"""
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from msta.models.adapters import MstaLayer, StAdapter, temporal_conv_on_patches, temporal_conv_shifted
from msta.models.attention import self_attention
from msta.models.backbones.open_clip import block_forward
from msta.models.injection import AdaptedBlock, InjectionContext

TOL = dict(atol=1e-5, rtol=1e-5)


def _causal(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf")).triu_(1)  # open_clip's build_causal_mask


def _grads(fn, inputs, params):
    """Output and d(sum(out * g))/d(inputs + params) for a fixed random g."""
    for t in list(inputs) + list(params):
        t.grad = None
    out = fn(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    (out * g).sum().backward()
    return out.detach(), [t.grad.clone() for t in list(inputs) + list(params)]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_self_attention_equals_multihead_attention(masked, training):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(32, 4, batch_first=True).train(training)
    x = torch.randn(3, 7, 32, requires_grad=True)
    mask = _causal(7) if masked else None
    ref = _grads(lambda t: attn(t, t, t, need_weights=False, attn_mask=mask)[0], [x], attn.parameters())
    got = _grads(lambda t: self_attention(attn, t, mask), [x], attn.parameters())
    torch.testing.assert_close(got[0], ref[0], **TOL)
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, **TOL)
    if masked:  # the mask really acts: token 0 sees only itself
        torch.testing.assert_close(got[0][:, 0], self_attention(attn, x[:, :1].detach())[:, 0], **TOL)


def test_self_attention_per_head_3d_mask():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(2, 5, 16)
    mask = torch.randn(2 * 2, 5, 5)  # (N * H, L, L) additive
    with torch.no_grad():
        ref = attn.train()(x, x, x, need_weights=False, attn_mask=mask)[0]
        torch.testing.assert_close(self_attention(attn, x, mask), ref, **TOL)


def _block(ls: bool) -> ResidualAttentionBlock:
    torch.manual_seed(1)
    blk = ResidualAttentionBlock(32, 4, ls_init_value=0.5 if ls else None)
    if ls:  # distinct per-channel scales, so that a swapped ls_1 / ls_2 would show
        for p in (blk.ls_1.gamma, blk.ls_2.gamma):
            p.data.uniform_(0.2, 1.5)
    return blk


@pytest.mark.parametrize("ls", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_block_forward_and_adapted_block_equal_open_clip_block(ls, masked):
    blk = _block(ls)
    x = torch.randn(3, 6, 32, requires_grad=True)
    mask = _causal(6) if masked else None
    ref = _grads(lambda t: blk(t, attn_mask=mask), [x], [])
    for fn in (lambda t: block_forward(blk, t, mask),
               lambda t: AdaptedBlock(blk, "text", InjectionContext())(t, None, None, mask)):
        got = _grads(fn, [x], [])
        torch.testing.assert_close(got[0], ref[0], **TOL)
        torch.testing.assert_close(got[1][0], ref[1][0], **TOL)


def test_block_forward_eval_no_grad_is_open_clip_itself():
    blk = _block(True).eval()
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        assert torch.equal(block_forward(blk, x, _causal(6)), blk(x, attn_mask=_causal(6)))


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("frames", [1, 2, 4])
@pytest.mark.parametrize("mult", [1, 3])  # 1: ST-Adapter's depthwise conv; 3: MSTA's grouped up-projection
def test_temporal_conv_shifted_equals_conv3d(kernel, frames, mult):
    torch.manual_seed(0)
    c = 4
    conv = nn.Conv3d(c, c * mult, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=c).double()
    nn.init.normal_(conv.bias)
    x = torch.randn(2 * frames, 1 + 5, c, dtype=torch.float64, requires_grad=True)  # (B*T, 1+N, C)
    ref = _grads(lambda t: temporal_conv_on_patches(conv, t[:, 1:], frames), [x], conv.parameters())
    # strided (B, T, N, C) view of the patch tokens, as the adapters pass it
    got = _grads(lambda t: temporal_conv_shifted(conv, t.view(2, frames, 6, c)[:, :, 1:]).view(2 * frames, 5, -1),
                 [x], conv.parameters())
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b)


def test_msta_video_branch_equals_conv3d_formula():
    torch.manual_seed(0)
    layer = MstaLayer(4, 0.005, vision_width=12).double()
    branch, frames = layer.visual, 3
    x = torch.randn(2 * frames, 1 + 5, 12, dtype=torch.float64, requires_grad=True)

    def reference(t):
        h = layer.shared(branch.down(t))
        out = branch.up(h)
        t_out = temporal_conv_on_patches(branch.temporal, h[:, 1:], frames)
        return torch.cat([out[:, :1], out[:, 1:] + t_out], dim=1)

    ref = _grads(reference, [x], layer.parameters())
    got = _grads(lambda t: branch(t, frames, layer.shared), [x], layer.parameters())
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b)


def test_st_adapter_equals_conv3d_formula():
    torch.manual_seed(0)
    st, frames = StAdapter(12, 4).double(), 3
    for p in (st.conv.weight, st.conv.bias, st.fc2.bias):
        nn.init.normal_(p)
    x = torch.randn(2 * frames, 1 + 5, 12, dtype=torch.float64, requires_grad=True)

    def reference(t):
        delta = st.fc2(temporal_conv_on_patches(st.conv, st.fc1(t[:, 1:]), frames))
        return torch.cat([t[:, :1], t[:, 1:] + delta], dim=1)

    ref = _grads(reference, [x], st.parameters())
    got = _grads(lambda t: st(t, frames), [x], st.parameters())
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("modality", ["text", "visual"])
def test_msta_given_normed_input_equals_norm_inside(modality):
    torch.manual_seed(0)
    layer = MstaLayer(4, 0.005, text_width=12, vision_width=12).double()
    norm = nn.LayerNorm(12).double().requires_grad_(False)  # frozen, as the block's ln_1
    x = torch.randn(2 * 3, 6, 12, dtype=torch.float64, requires_grad=True)
    if modality == "text":
        fns = (lambda t: layer.forward_text(t, norm), lambda t: layer.forward_text(t, norm, normed=norm(t)))
    else:
        fns = (lambda t: layer.forward_visual(t, norm, 3),
               lambda t: layer.forward_visual(t, norm, 3, normed=norm(t)))
    ref, got = (_grads(fn, [x], layer.parameters()) for fn in fns)
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b)
