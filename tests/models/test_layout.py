"""Token layouts (issue 15.3): the temporal adapters read the joint sequence in its real order.

The references build the ``(B, C, T, H, W)`` volume with explicit loops over the documented token index
(``1 + n*T + t`` for ViCLIP, row ``b*T + t`` token ``1 + n`` frame-wise) and run ``nn.Conv3d`` on it.
"""
import pytest
import torch
from torch import nn

from msta.models.adapters import MstaVideoBranch, StAdapter, temporal_conv_btnc
from msta.models.layout import FRAMES, JOINT

B, T, H, W = 2, 4, 2, 3  # a 2x3 patch grid, 4 frames
N = H * W


def _documented_index(layout):
    """Yields (b, t, i, j, row, pos): where patch (i, j) of frame t of clip b sits in the token rows, with loops."""
    for b in range(B):
        for t in range(T):
            for i in range(H):
                for j in range(W):
                    n = i * W + j
                    row, pos = (b, 1 + n * T + t) if layout is JOINT else (b * T + t, 1 + n)
                    yield b, t, i, j, row, pos


def _volume(tokens, layout):
    """(rows, 1 + P, C) tokens -> (B, C, T, H, W) by the documented index."""
    c = tokens.shape[-1]
    vol = torch.zeros(B, c, T, H, W, dtype=tokens.dtype)
    for b, t, i, j, row, pos in _documented_index(layout):
        vol[b, :, t, i, j] = tokens[row, pos]
    return vol


def _tokens_from_volume(vol, layout, cls):
    """(B, C, T, H, W) -> (rows, 1 + P, C) with ``cls`` (rows, 1, C) in front, by the documented index."""
    c = vol.shape[1]
    rows, length = (B, 1 + N * T) if layout is JOINT else (B * T, 1 + N)
    out = torch.zeros(rows, length, c, dtype=vol.dtype)
    out[:, :1] = cls
    for b, t, i, j, row, pos in _documented_index(layout):
        out[row, pos] = vol[b, :, t, i, j]
    return out


def _random_tokens(layout, c, seed=0):
    rows, length = (B, 1 + N * T) if layout is JOINT else (B * T, 1 + N)
    return torch.randn(rows, length, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("layout", [JOINT, FRAMES], ids=["joint", "frames"])
def test_patches_round_trip_by_the_documented_index(layout):
    x = _random_tokens(layout, 5)
    p = layout.patches(x, T)  # (B, T, N, C)
    assert p.shape == (B, T, N, 5)
    vol = _volume(x, layout)
    torch.testing.assert_close(p, vol.permute(0, 2, 3, 4, 1).reshape(B, T, N, 5))
    torch.testing.assert_close(layout.unpatch(p), x[:, 1:])


@pytest.mark.parametrize("layout", [JOINT, FRAMES], ids=["joint", "frames"])
def test_msta_temporal_conv_equals_conv3d_over_bcthw(layout):
    r, d = 4, 8
    branch = MstaVideoBranch(d, r, temporal=True, kernel=3, own_mid=True).double()
    for p in branch.parameters():
        nn.init.normal_(p, std=0.3)
    x = _random_tokens(layout, d, seed=1)
    got = branch(x, T, layout=layout)
    h = branch.mid(branch.down(x))
    spatial = branch.up(h)
    conv = branch.temporal(_volume(h, layout))  # nn.Conv3d over (B, r, T, H, W)
    expected = spatial + _tokens_from_volume(conv, layout, torch.zeros(x.shape[0], 1, d, dtype=x.dtype))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("layout", [JOINT, FRAMES], ids=["joint", "frames"])
def test_st_adapter_equals_conv3d_over_bcthw(layout):
    d, w = 8, 6
    st = StAdapter(d, w, kernel=3).double()
    for p in st.parameters():
        nn.init.normal_(p, std=0.3)
    x = _random_tokens(layout, d, seed=2)
    got = st(x, T, layout)
    vol = st.conv(_volume(st.fc1(x), layout))  # (B, w, T, H, W)
    delta = st.fc2(_tokens_from_volume(vol, layout, torch.zeros(x.shape[0], 1, w, dtype=x.dtype)))
    expected = torch.cat([x[:, :1], x[:, 1:] + delta[:, 1:]], dim=1)
    torch.testing.assert_close(got, expected)


def test_the_two_layouts_differ():
    """Reading joint tokens as if frame-wise would mix patches and frames: the layouts are not interchangeable."""
    conv = nn.Conv3d(3, 3, (3, 1, 1), padding=(1, 0, 0), groups=3).double()
    x = _random_tokens(JOINT, 3)
    right = JOINT.unpatch(temporal_conv_btnc(conv, JOINT.patches(x, T)))
    wrong = x[:, 1:].reshape(B, T, N, 3)  # time-major reading of a patch-major sequence
    assert not torch.allclose(right, conv(wrong.permute(0, 3, 1, 2).unsqueeze(-1)).squeeze(-1).permute(0, 2, 3, 1)
                              .reshape(B, N * T, 3))
