"""Clip transforms on (T, C, H, W) uint8 tensors; one set of random parameters per clip, shared by all frames.

Every random choice is drawn from the `generator` argument, never from the global RNG, so a dataset seeded per
(seed, epoch, index) reproduces its augmentation exactly. The ops are torchvision.transforms.v2.functional calls,
which act on any leading dims, so a whole clip is transformed in one call.

Recipe (the peers' ViFi-CLIP / TSN pipeline):
- train: short side -> round(size * 256 / 224); multi-scale crop (scales 1, .875, .75, .66 of the short side,
  aspect distortion of at most one scale step, 13 fixed positions) resized to size x size; horizontal flip p=0.5
  (switchable; off for SSv2); colour jitter p=0.8 (brightness .4, contrast .4, saturation .2, hue .1, random
  order; hue as a YIQ chroma rotation, see adjust_hue_yiq); grayscale p=0.2; CLIP normalisation.
- test: 1 crop: short side -> round(size * 256 / 224), centre crop; 3 crops: short side -> size, three size x size
  crops along the long side (start, centre, end).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torchvision.transforms.v2 import functional as F

__all__ = [
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "MULTISCALE_SCALES", "resize_short_side", "normalize_clip",
    "multiscale_crop_box", "three_crop_boxes", "center_crop_box", "adjust_hue_yiq", "TrainTransform", "EvalTransform",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MULTISCALE_SCALES = (1.0, 0.875, 0.75, 0.66)

Box = tuple[int, int, int, int]  # (top, left, height, width)


def _check_clip(clip: torch.Tensor) -> None:
    if clip.ndim != 4 or clip.shape[1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"clip transforms expect (T, 3, H, W) uint8, got {tuple(clip.shape)} {clip.dtype}; "
                         "permute decoded (T, H, W, 3) frames with .permute(0, 3, 1, 2)")


def _rand(generator: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: Optional[torch.Generator]) -> int:
    return int(torch.randint(high, (), generator=generator))


def resize_short_side(clip: torch.Tensor, short_side: int) -> torch.Tensor:
    """(T, C, H, W) -> (T, C, H', W') with min(H', W') = short_side; a no-op when it already is."""
    if min(clip.shape[-2:]) == short_side:
        return clip
    return F.resize(clip, [short_side], antialias=True)


def normalize_clip(clip: torch.Tensor, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                   std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    """uint8 (..., C, H, W) in [0, 255] -> float32 (x / 255 - mean) / std."""
    return F.normalize(F.to_dtype(clip, torch.float32, scale=True), list(mean), list(std))


def adjust_hue_yiq(clip: torch.Tensor, hue_factor: float) -> torch.Tensor:
    """Hue shift by `hue_factor` turns (in [-0.5, 0.5]) as a rotation of the chroma plane in YIQ space.

    A linear 3x3 colour map, an order of magnitude faster than the RGB -> HSV -> RGB round trip of torchvision's
    adjust_hue on video-sized tensors; it keeps luma exactly and matches HSV hue rotation closely for augmentation.
    clip: float (..., 3, H, W) in [0, 1].
    """
    theta = 2 * math.pi * hue_factor
    cos, sin = math.cos(theta), math.sin(theta)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=torch.float64)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]], dtype=torch.float64)
    m = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(clip.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, clip).clamp_(0.0, 1.0)


def center_crop_box(height: int, width: int, size: int) -> Box:
    """The size x size box centred in an image (size is clamped to the image)."""
    ch, cw = min(size, height), min(size, width)
    return (height - ch) // 2, (width - cw) // 2, ch, cw


def three_crop_boxes(height: int, width: int, size: int) -> list[Box]:
    """Three size x size boxes along the long side: start, centre, end (left/centre/right or top/centre/bottom)."""
    ch, cw = min(size, height), min(size, width)
    if width >= height:
        lefts = [0, (width - cw) // 2, width - cw]
        top = (height - ch) // 2
        return [(top, x, ch, cw) for x in lefts]
    tops = [0, (height - ch) // 2, height - ch]
    left = (width - cw) // 2
    return [(y, left, ch, cw) for y in tops]


def multiscale_crop_box(height: int, width: int, size: int, *, scales: Sequence[float] = MULTISCALE_SCALES,
                        max_distort: int = 1, generator: Optional[torch.Generator] = None) -> Box:
    """TSN multi-scale crop: a box whose sides are two scales (at most `max_distort` steps apart) of the short side,
    at one of 13 fixed positions (4 corners, centre, 4 edge midpoints, 4 quarter points).

    Sides within 3 px of `size` snap to `size` so the final resize is a no-op there.
    """
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    sides = [size if abs(s - size) < 3 else s for s in sides]
    pairs = [(hi, wi) for hi in range(len(sides)) for wi in range(len(sides)) if abs(hi - wi) <= max_distort]
    hi, wi = pairs[_randint(len(pairs), generator)]
    ch, cw = min(sides[hi], height), min(sides[wi], width)
    ys, xs = (height - ch) / 4, (width - cw) / 4  # quarter steps of the free space
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    gy, gx = grid[_randint(len(grid), generator)]
    return int(round(gy * ys)), int(round(gx * xs)), ch, cw


class TrainTransform:
    """Training augmentation: (T, 3, H, W) uint8 -> (T, 3, size, size) float, CLIP-normalised.

    Args:
        size: output side (the model's image size).
        short_side: the short side frames are brought to before cropping (decoders can resize to it directly);
            default round(size * 256 / 224).
        scales: multi-scale crop scales relative to the short side.
        flip: horizontal flip with p=0.5 (False for SSv2, whose labels say left/right).
        color_jitter: probability of colour jitter. grayscale: probability of grayscale.
        mean, std: normalisation (default OpenAI CLIP).
    """

    def __init__(self, size: int, *, short_side: Optional[int] = None, scales: Sequence[float] = MULTISCALE_SCALES,
                 flip: bool = True, color_jitter: float = 0.8, grayscale: float = 0.2,
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
                 mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD):
        self.size = size
        self.short_side = short_side or int(round(size * 256 / 224))
        self.scales, self.flip = tuple(scales), flip
        self.color_jitter, self.grayscale, self.jitter = color_jitter, grayscale, jitter
        self.mean, self.std = tuple(mean), tuple(std)

    def _jitter(self, clip: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Brightness, contrast, saturation and hue in random order on float [0, 1] clips."""
        b, c, s, h = self.jitter
        factors = [1 + b * (2 * _rand(generator) - 1), 1 + c * (2 * _rand(generator) - 1),
                   1 + s * (2 * _rand(generator) - 1), h * (2 * _rand(generator) - 1)]
        ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, adjust_hue_yiq]
        for k in torch.randperm(4, generator=generator).tolist():
            clip = ops[k](clip, factors[k])
        return clip

    def __call__(self, clip: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """clip: (T, 3, H, W) uint8 -> (T, 3, size, size) float32."""
        _check_clip(clip)
        h, w = clip.shape[-2:]
        k = self.short_side / min(h, w)
        # The box is chosen on the short-side-resized frame, then mapped back so that one resize does both steps.
        top, left, ch, cw = multiscale_crop_box(int(round(h * k)), int(round(w * k)), self.size,
                                                scales=self.scales, generator=generator)
        top, left = min(h - 1, int(round(top / k))), min(w - 1, int(round(left / k)))
        ch, cw = max(1, min(h - top, int(round(ch / k)))), max(1, min(w - left, int(round(cw / k))))
        clip = F.resized_crop(clip, top, left, ch, cw, [self.size, self.size], antialias=True)
        clip = F.to_dtype(clip, torch.float32, scale=True)  # the colour ops are several times faster on floats
        # Draw every decision even when a switch is off, so toggling one does not shift the others' randomness.
        do_flip, do_jitter, do_gray = (_rand(generator) < 0.5), _rand(generator), _rand(generator)
        if self.flip and do_flip:
            clip = F.horizontal_flip(clip)
        if do_jitter < self.color_jitter:
            clip = self._jitter(clip, generator)
        if do_gray < self.grayscale:
            clip = F.rgb_to_grayscale(clip, num_output_channels=3)
        return F.normalize(clip, list(self.mean), list(self.std))


class EvalTransform:
    """Test views: (T, 3, H, W) uint8 -> (crops, T, 3, size, size) float, CLIP-normalised. Deterministic.

    Args:
        size: output side.
        crops: 1 (centre crop after resizing the short side to `short_side`) or 3 (three crops along the long side
            after resizing the short side to `size`).
        short_side: override the resize target (default round(size * 256 / 224) for 1 crop, size for 3).
        mean, std: normalisation (default OpenAI CLIP).
        resize: "crop" (the above) or "squash" (ViCLIP's evaluation: the whole frame resized to size x size,
            bicubic, aspect ratio not kept, no crop; with 3 crops the short side goes to `size`, bicubic, and the
            three crops are taken as above).
    """

    def __init__(self, size: int, *, crops: int = 1, short_side: Optional[int] = None,
                 mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD,
                 resize: str = "crop"):
        if crops not in (1, 3):
            raise ValueError(f"test crops must be 1 or 3, got {crops} (config key views.crops)")
        if resize not in ("crop", "squash"):
            raise ValueError(f"eval resize must be 'crop' or 'squash', got {resize!r} (config key data.eval_resize)")
        self.size, self.crops, self.resize = size, crops, resize
        self.short_side = short_side or (size if crops == 3 else int(round(size * 256 / 224)))
        if resize == "squash":
            # no short-side resize while decoding: the frame is resampled once, to size x size (or short side)
            self.short_side = None if crops == 1 else (short_side or size)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, clip: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """clip: (T, 3, H, W) uint8 -> (crops, T, 3, size, size) float32. `generator` is unused."""
        _check_clip(clip)
        if self.resize == "squash":
            bicubic = F.InterpolationMode.BICUBIC
            if self.crops == 1:
                out = F.resize(clip, [self.size, self.size], interpolation=bicubic, antialias=True)  # uint8 stays
                return normalize_clip(out[None], self.mean, self.std)
            h, w = clip.shape[-2:]
            if min(h, w) != self.short_side:
                scale = self.short_side / min(h, w)
                clip = F.resize(clip, [max(1, round(h * scale)), max(1, round(w * scale))], interpolation=bicubic,
                                antialias=True)
        else:
            clip = resize_short_side(clip, self.short_side)
        h, w = clip.shape[-2:]
        boxes = [center_crop_box(h, w, self.size)] if self.crops == 1 else three_crop_boxes(h, w, self.size)
        views = [F.resized_crop(clip, t, l, ch, cw, [self.size, self.size], antialias=True) if (ch, cw) != (
            self.size, self.size) else clip[..., t:t + ch, l:l + cw] for t, l, ch, cw in boxes]
        return normalize_clip(torch.stack(views), self.mean, self.std)
