"""Adapter modules: MSTA (multi-modal spatio-temporal, CVPR 2025) and ST-Adapter (NeurIPS 2022).

Pure ``nn.Module`` code on token tensors; nothing here knows a backbone or reads a config. Visual tokens arrive in
the backbone's :class:`~msta.models.layout.TokenLayout` (frame-wise ``(B*T, 1 + N, D)`` for open_clip, joint
``(B, 1 + N*T, D)`` for ViCLIP; CLS first) and the temporal parts read the patches as ``(B, T, N, C)`` through it.

MSTA layer j (DESIGN §2): ``x_next = block(x) + lambda * A(ln_1(x))`` with ``A = up(shared(down(.)))``. The
gradient-scale pair makes the forward contribution ``lambda * A`` while the adapter parameters receive the gradient
of the unscaled ``A``, so lambda = 0.005 does not slow learning (MMA's trick).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from msta.config import ConfigError
from msta.models.layout import FRAMES, TokenLayout

__all__ = [
    "GradScale", "grad_scale", "LinearReLU", "MstaTextBranch", "MstaVideoBranch", "MstaLayer", "StAdapter",
    "temporal_conv_on_patches", "temporal_conv_shifted", "temporal_conv_btnc",
]


class GradScale(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)  # a view, not the input itself: autograd needs a distinct output

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        return grad * ctx.scale, None


def grad_scale(x: Tensor, scale: float) -> Tensor:
    """Returns ``x`` unchanged; its gradient is multiplied by ``scale`` on the way back."""
    return GradScale.apply(x, scale)


class LinearReLU(nn.Linear):
    """``relu(Linear(x))``: the down and shared projections of MSTA (the ReLU has no parameters)."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.relu(super().forward(x))


def _kaiming_(module: nn.Module) -> None:
    """MSTA init (MMA code): kaiming_normal_(fan_out, relu) weights, zero biases, for every Linear and Conv3d."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_frames(frames: int, num_frames: int) -> None:
    if frames % num_frames:
        raise ValueError(f"batch of {frames} frames is not divisible by num_frames={num_frames}; "
                         "pass frames as (B*T, L, D) with the T frames of each clip contiguous")


def temporal_conv_on_patches(conv: nn.Conv3d, patches: Tensor, num_frames: int) -> Tensor:
    """Applies a ``(k, 1, 1)`` Conv3d over time to frame-wise patch tokens (reference path: the conv module itself).

    The kernel is 1x1 in space, so every patch position is independent; regrouping the N patches as an (N, 1)
    "grid" is therefore exactly the (H, W) convolution without assuming a square grid.

    Args:
        conv: Conv3d with kernel (k, 1, 1) and padding (k // 2, 0, 0).
        patches: (B*T, N, C_in) patch tokens, frames of a clip contiguous.
        num_frames: T.

    Returns:
        (B*T, N, C_out).
    """
    _check_frames(patches.shape[0], num_frames)
    x = rearrange(patches, "(b t) n c -> b c t n 1", t=num_frames)
    x = conv(x)
    return rearrange(x, "b c t n 1 -> (b t) n c")


def temporal_conv_btnc(conv: nn.Conv3d, patches: Tensor) -> Tensor:
    """Applies a ``(k, 1, 1)`` Conv3d over time to ``(B, T, N, C_in)`` patches (any layout's, see TokenLayout).

    The N patches are the conv's (N, 1) "grid" (the kernel is 1x1 in space, so this is exactly the conv over
    ``(B, C, T, H, W)`` with H * W = N, without assuming a square grid).

    Returns:
        (B, T, N, C_out).
    """
    y = conv(patches.permute(0, 3, 1, 2).unsqueeze(-1))  # (B, C_in, T, N, 1) -> (B, C_out, T, N, 1)
    return y.squeeze(-1).permute(0, 2, 3, 1)


def temporal_conv_shifted(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """The ``(k, 1, 1)`` grouped Conv3d over time as time-shifted per-channel multiply-adds, from its own weights.

    Exactly the convolution (zero padding ``k // 2``, groups = C_in, C_out a multiple of C_in) on the token
    layout, so no (B, C, T, N) copies are made and oneDNN's slow depthwise 3-D kernels are avoided: the
    ST-Adapter's depthwise conv (C_out = C_in) measured about 1.8x faster this way at T = 8 (forward + backward). Output channel
    ``c * m + j`` reads input channel ``c`` (PyTorch's grouped-conv channel order), so one broadcast product of
    (..., C_in, 1) by (C_in, m) produces all C_out channels of a tap.

    Args:
        conv: Conv3d(C_in, m * C_in, (k, 1, 1), padding=(k // 2, 0, 0), groups=C_in), stride 1, no dilation.
        x: (B, T, N, C_in) tokens grouped by clip (any strides).

    Returns:
        (B, T, N, C_out), contiguous.
    """
    b, t, n, c = x.shape
    k, pad = conv.kernel_size[0], conv.padding[0]
    w = conv.weight.view(c, conv.out_channels // c, k)  # (C_in, m, k)
    xe = x.unsqueeze(-1)  # (B, T, N, C_in, 1)
    bias = conv.bias.view(c, -1) if conv.bias is not None else torch.zeros_like(w[..., 0])
    out = torch.addcmul(bias, xe, w[..., pad])  # centre tap, every frame: (B, T, N, C_in, m)
    for i in range(k):
        d = i - pad  # tap i reads frame t + d
        lo, hi = max(0, -d), min(t, t - d)
        if i != pad and lo < hi:
            out[:, lo:hi].addcmul_(xe[:, lo + d:hi + d], w[..., i])
    return out.view(b, t, n, -1)


class MstaTextBranch(nn.Module):
    """Text side of an MSTA layer without the shared projection: ``down`` (D -> r, ReLU) and ``up`` (r -> D)."""

    def __init__(self, width: int, dim: int, own_mid: bool = False):
        """Args: width: text width D; dim: bottleneck r; own_mid: a private Linear(r, r)+ReLU (no sharing)."""
        super().__init__()
        self.down = LinearReLU(width, dim)
        self.mid = LinearReLU(dim, dim) if own_mid else None
        self.up = nn.Linear(dim, width)

    def forward(self, x: Tensor, shared: Optional[nn.Module] = None) -> Tensor:
        """(N, L, D) normalised tokens -> (N, L, D) unscaled adapter output ``up(shared(down(x)))``."""
        h = self.down(x)
        h = self.mid(h) if self.mid is not None else shared(h)
        return self.up(h)


class MstaVideoBranch(nn.Module):
    """Visual side of an MSTA layer: ``down``, spatial ``up`` and the temporal Conv3d up-projection.

    The temporal conv is grouped (groups = r), so at ViT-B/16 with r = 128 it adds 768*3 + 768 = 3,072 parameters
    per layer, the figure that reproduces the authors' 1.744 M count (msta-paper §3.3). It reads the bottleneck
    of the patch tokens; the per-frame CLS tokens get the spatial path only, unless ``temporal_cls``: then the
    conv also runs over each clip's sequence of CLS tokens. With a frame-wise CLIP (one CLS per frame, averaged
    over time at the end) that is the one temporal path that reaches the pooled embedding directly, including
    from the last block, whose patch tokens the embedding never reads.
    """

    def __init__(self, width: int, dim: int, temporal: bool = True, kernel: int = 3, own_mid: bool = False,
                 temporal_cls: bool = False):
        """Args: width: vision width D; dim: bottleneck r; temporal: add the Conv3d path; kernel: its size over T;
        temporal_cls: run the temporal conv over the per-frame CLS tokens too."""
        super().__init__()
        if temporal and width % dim:
            raise ConfigError(f"the temporal Conv3d is grouped by the bottleneck (groups=r), so r={dim} must divide "
                             f"the vision width {width}; set model.msta.dim to a divisor of {width} "
                             "or model.msta.temporal=false")
        self.down = LinearReLU(width, dim)
        self.mid = LinearReLU(dim, dim) if own_mid else None
        self.up = nn.Linear(dim, width)
        self.temporal = (nn.Conv3d(dim, width, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=dim)
                         if temporal else None)
        self.temporal_cls = temporal_cls

    def forward(self, x: Tensor, num_frames: int, shared: Optional[nn.Module] = None,
                layout: TokenLayout = FRAMES) -> Tensor:
        """(rows, 1+P, D) normalised tokens in ``layout`` -> the same shape, unscaled adapter output."""
        h = self.down(x)
        h = self.mid(h) if self.mid is not None else shared(h)
        out = self.up(h)
        if self.temporal is None:
            return out
        # the Conv3d itself: for this grouped r -> D expansion it measured as fast as temporal_conv_shifted at
        # T = 8 and faster at T = 2 (whose per-tap broadcast reductions cost more in the backward)
        if self.temporal_cls:  # every token position, CLS included, is one (k, 1, 1) conv over time
            if not layout.per_frame_cls:
                raise ConfigError("model.msta.temporal_cls needs one CLS token per frame; this backbone has one per "
                                 "clip (joint attention): set model.msta.temporal_cls=false")
            return out + temporal_conv_on_patches(self.temporal, h, num_frames)
        t_out = layout.unpatch(temporal_conv_btnc(self.temporal, layout.patches(h, num_frames)))
        return torch.cat([out[:, :1], out[:, 1:] + t_out], dim=1)


class MstaLayer(nn.Module):
    """All MSTA parameters of one layer index: the shared projection and the text and/or visual branch.

    Registering the shared projection here, once, and letting both branches borrow it at call time keeps a single
    owner for it in the module tree (ZeRO-3 and state dicts expect each parameter to be registered once).
    """

    def __init__(self, dim: int, scale: float, text_width: Optional[int] = None,
                 vision_width: Optional[int] = None, shared: bool = True, temporal: bool = True,
                 kernel: int = 3, temporal_cls: bool = False):
        """Args:
            dim: bottleneck r.
            scale: lambda, the forward scale of the adapter output.
            text_width: text width, or None when this layer index has no text adapter.
            vision_width: vision width, or None when it has no visual adapter.
            shared: one Linear(r, r)+ReLU used by both branches; False gives each branch a private one.
            temporal: add the temporal Conv3d up-projection on the visual side.
            kernel: temporal kernel size (odd).
            temporal_cls: the temporal conv also runs over the per-frame CLS tokens.
        """
        super().__init__()
        if text_width is None and vision_width is None:
            raise ValueError("an MSTA layer needs a text_width, a vision_width or both")
        self.scale = scale
        self.shared = LinearReLU(dim, dim) if shared else None
        self.text = MstaTextBranch(text_width, dim, own_mid=not shared) if text_width else None
        self.visual = (MstaVideoBranch(vision_width, dim, temporal, kernel, own_mid=not shared,
                                       temporal_cls=temporal_cls) if vision_width else None)
        _kaiming_(self)

    def _scaled(self, x: Tensor, norm: Callable[[Tensor], Tensor], branch: Callable[[Tensor], Tensor],
                normed: Optional[Tensor]) -> Tensor:
        # grad x s on the way into the adapter, x 1/s on the way out: parameters see the unscaled gradient.
        # A frozen norm's backward is linear, so scaling the gradient after it (on a given norm(x)) is the same.
        y = norm(grad_scale(x, self.scale)) if normed is None else grad_scale(normed, self.scale)
        y = branch(y) * self.scale
        return grad_scale(y, 1.0 / self.scale)

    def forward_text(self, x: Tensor, norm: Callable[[Tensor], Tensor], normed: Optional[Tensor] = None) -> Tensor:
        """lambda * A_t(norm(x)): (N, L, D) block input -> (N, L, D) term added to the block output.

        ``normed``: ``norm(x)`` when the caller already has it (the norm must be frozen), to skip recomputing it.
        """
        return self._scaled(x, norm, lambda y: self.text(y, self.shared), normed)

    def forward_visual(self, x: Tensor, norm: Callable[[Tensor], Tensor], num_frames: int,
                       normed: Optional[Tensor] = None, layout: TokenLayout = FRAMES) -> Tensor:
        """lambda * A_v(norm(x)): (rows, 1+P, D) block input in ``layout`` -> the term added to the block output.

        ``normed``: ``norm(x)`` when the caller already has it (the norm must be frozen), to skip recomputing it.
        """
        return self._scaled(x, norm, lambda y: self.visual(y, num_frames, self.shared, layout), normed)


class StAdapter(nn.Module):
    """ST-Adapter (Pan et al. 2022, official code): fc1 -> depthwise temporal Conv3d -> fc2, no activation.

    Residual on patch tokens only; the CLS token passes through. The conv's weight and bias and fc2's bias start
    at zero, so the adapter is the identity at init and the adapted model equals frozen CLIP at step 0.
    """

    def __init__(self, width: int, hidden: int, kernel: int = 3):
        """Args: width: token width D; hidden: bottleneck w; kernel: temporal kernel size (odd)."""
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.conv = nn.Conv3d(hidden, hidden, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=hidden)
        self.fc2 = nn.Linear(hidden, width)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor, num_frames: int, layout: TokenLayout = FRAMES) -> Tensor:
        """(rows, 1+P, D) tokens in ``layout`` -> the same shape, out of place."""
        # fc1 on all tokens, then drop CLS: F.linear on the strided patch slice would run as a slow batched matmul
        h = layout.patches(self.fc1(x), num_frames)  # (B, T, N, w) view
        delta = layout.unpatch(self.fc2(temporal_conv_shifted(self.conv, h)))
        return torch.cat([x[:, :1], x[:, 1:] + delta], dim=1)
