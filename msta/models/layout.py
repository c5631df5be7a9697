"""Token layouts of a visual block's input: where the clips, frames and patches of a batch are in (rows, L, D).

The temporal parts of the adapters (MSTA's Conv3d, ST-Adapter's depthwise conv) need the patch tokens as
``(B, T, N, C)``; every backbone states its layout once and the adapters read it from here:

* :data:`FRAMES` (open_clip CLIP, frame-wise): ``(B*T, 1 + N, D)``, one row per frame, the T frames of a clip
  contiguous, each row with its own CLS token first.
* :data:`JOINT` (ViCLIP, joint space-time attention): ``(B, 1 + N*T, D)``, one row per clip, one CLS token first,
  then the patch tokens **patch-major, time-minor** (token ``1 + n*T + t`` is patch n of frame t).
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["TokenLayout", "FrameTokens", "JointTokens", "FRAMES", "JOINT"]


class TokenLayout:
    """Maps a block's tokens to ``(B, T, N, C)`` patches and back; token 0 of every row is a CLS token."""
    name = "abstract"
    per_frame_cls = False  # True: every frame has its own CLS token (a time series the temporal conv can read)

    def patches(self, x: Tensor, num_frames: int) -> Tensor:
        """(rows, 1 + P, C) tokens -> (B, T, N, C) view of their patch tokens (P = T * N per clip)."""
        raise NotImplementedError

    def unpatch(self, p: Tensor) -> Tensor:
        """(B, T, N, C) -> (rows, P, C) patch tokens in this layout's order (the inverse of :meth:`patches`)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FrameTokens(TokenLayout):
    """``(B*T, 1 + N, D)``: frames as rows, a clip's frames contiguous (open_clip's frame-wise towers)."""
    name = "frames"
    per_frame_cls = True

    def patches(self, x: Tensor, num_frames: int) -> Tensor:  # noqa: D102
        if x.shape[0] % num_frames:
            raise ValueError(f"batch of {x.shape[0]} frames is not divisible by num_frames={num_frames}; "
                             "pass frames as (B*T, L, D) with the T frames of each clip contiguous")
        return x[:, 1:].unflatten(0, (-1, num_frames))

    def unpatch(self, p: Tensor) -> Tensor:  # noqa: D102
        return p.flatten(0, 1)


class JointTokens(TokenLayout):
    """``(B, 1 + N*T, D)``: one row per clip, patch-major time-minor (ViCLIP's joint space-time sequence)."""
    name = "joint"

    def patches(self, x: Tensor, num_frames: int) -> Tensor:  # noqa: D102
        if (x.shape[1] - 1) % num_frames:
            raise ValueError(f"{x.shape[1] - 1} patch tokens per clip are not divisible by num_frames={num_frames}")
        return x[:, 1:].unflatten(1, (-1, num_frames)).transpose(1, 2)  # (B, N, T, C) -> (B, T, N, C)

    def unpatch(self, p: Tensor) -> Tensor:  # noqa: D102
        return p.transpose(1, 2).flatten(1, 2)  # (B, T, N, C) -> (B, N*T, C)


FRAMES = FrameTokens()
JOINT = JointTokens()
