"""Words for the synthetic visual world: captions of synthetic clips, and captioned single frames for CLIP pretraining.

`clip_captions` describes a clip of `msta.data.synthetic.sample_clips` in words ("a red square moving left");
`write_synthetic_dataset(captions=True)` writes them as caption lists. `sample_captioned_frames` draws single frames
with captions ("a red square on the left") for pretraining a tiny image-text CLIP, and `caption_compatibility` says
which captions truly describe which frames (the positives of its contrastive loss). Everything is a pure function of
its generator.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .synthetic import (_RADIUS, COLOURS, DEFAULT_COLOURS, DEFAULT_SHAPES, SHAPES, _backgrounds, _Rng, as_rng,
                        render_shapes)

__all__ = ["clip_captions", "sample_captioned_frames", "caption_compatibility"]

_HPOS, _VPOS = ("left", "centre", "right"), ("top", "middle", "bottom")
_POS_PHRASE = {  # (vertical, horizontal) third of the frame -> phrase
    (0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
    (1, 0): "on the left", (1, 1): "in the centre", (1, 2): "on the right",
    (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right",
}
_SIZE_WORDS = ("small", "", "large")  # radius thirds; the middle third is not named

_MOTION_PHRASES = {  # motion -> (short phrase, paraphrase)
    "moving_left": ("moving left", "sliding to the left"), "moving_right": ("moving right", "sliding to the right"),
    "moving_up": ("moving up", "rising towards the top"), "moving_down": ("moving down", "falling to the bottom"),
    "growing": ("growing", "getting bigger"), "shrinking": ("shrinking", "getting smaller"),
    "still": ("standing still", "that does not move"),
}


def clip_captions(colour: str, shape: str, motion: str) -> list[str]:
    """Two captions of a clip, e.g. ["a red square moving left", "a video of a red square sliding to the left"].

    Args:
        colour, shape: names from COLOURS and SHAPES. motion: a MOTIONS name or "still" (`sample_clips` attributes).
    """
    if motion not in _MOTION_PHRASES:
        raise ValueError(f"unknown motion {motion!r}; available: {', '.join(_MOTION_PHRASES)}")
    short, para = _MOTION_PHRASES[motion]
    return [f"a {colour} {shape} {short}", f"a video of a {colour} {shape} {para}"]



def sample_captioned_frames(n: int, generator: _Rng, *, size: int = 32, noise_std: float = 3.0,
                            colours: Sequence[str] = DEFAULT_COLOURS, shapes: Sequence[str] = DEFAULT_SHAPES,
                            with_attributes: bool = False):
    """Single frames of one shape each, with a caption of what the frame shows.

    Captions name the colour and the shape, and often the position ("a red square on the left") and the size
    ("a small blue circle"); some use the CLIP template wording ("a video of a red square.") that zero-shot
    prompts use.

    Args:
        n: number of frames. generator: numpy Generator, int seed or torch.Generator.
        size: frame height = width. noise_std: pixel noise std. colours, shapes: the vocabulary.
        with_attributes: also return the attributes (for `caption_compatibility`).

    Returns:
        images (n, 3, size, size) uint8, captions list of n strings, and with `with_attributes` a dict of (n,) int
        arrays: colour, shape, hpos, vpos, size (true values) and said_pos, said_size (0/1: named in the caption).
    """
    rng = as_rng(generator)
    shape = rng.choice([SHAPES.index(s) for s in shapes], n)
    cidx = rng.integers(0, len(colours), n)
    rgb = np.array([COLOURS[colours[k]] for k in cidx], np.float64) + rng.uniform(-12, 12, (n, 3))
    radius = rng.uniform(_RADIUS[0] * size, _RADIUS[1] * size, n)
    cx, cy = rng.uniform(radius + 1, size - radius - 1), rng.uniform(radius + 1, size - radius - 1)
    images = render_shapes(shape, rgb, cx, cy, radius, size=size, background=_backgrounds(rng, n),
                           noise_std=noise_std, rng=rng).transpose(0, 3, 1, 2)
    hpos = np.minimum((cx / size * 3).astype(int), 2)
    vpos = np.minimum((cy / size * 3).astype(int), 2)
    rsize = np.minimum(((radius / size - _RADIUS[0]) / (_RADIUS[1] - _RADIUS[0]) * 3).astype(int), 2)
    said_pos = rng.random(n) < 0.7
    said_size = (rng.random(n) < 0.5) & (rsize != 1)
    style = rng.integers(0, 4, n)
    captions = []
    for i in range(n):
        noun = " ".join(w for w in (_SIZE_WORDS[rsize[i]] if said_size[i] else "", colours[cidx[i]],
                                    SHAPES[shape[i]]) if w)
        pos = f" {_POS_PHRASE[(vpos[i], hpos[i])]}" if said_pos[i] else ""
        captions.append(("a {}{}", "a photo of a {}{}", "a video of a {}{}.", "a {}{}.")[style[i]].format(noun, pos))
    if not with_attributes:
        return images, captions
    attrs = {"colour": cidx, "shape": shape, "hpos": hpos, "vpos": vpos, "size": rsize,
             "said_pos": said_pos.astype(int), "said_size": said_size.astype(int)}
    return images, captions, attrs


def caption_compatibility(attrs: dict[str, np.ndarray]) -> np.ndarray:
    """(n, n) bool: caption j is a true description of image i (every attribute it names matches image i).

    Used as the positive set of the contrastive loss: "a red square" describes every red square in the batch,
    so treating those pairs as negatives (as plain InfoNCE does) would teach contradictions.
    """
    def same(key: str) -> np.ndarray:
        return attrs[key][:, None] == attrs[key][None, :]

    ok = same("colour") & same("shape")
    ok &= (attrs["said_pos"][None, :] == 0) | (same("hpos") & same("vpos"))
    ok &= (attrs["said_size"][None, :] == 0) | same("size")
    return ok
