"""Synthetic videos of coloured shapes: vectorised rendering, seeded datasets written as mp4, captioned frames.

Two tasks, both procedurally generated from a seed:
- motion: the class is how the object moves (`moving_left`, `moving_right`, `moving_up`, `moving_down`, and
  optionally `growing`, `shrinking`). Shape, colour and position are random, and every trajectory is centred on a
  random midpoint, so a class and its time reversal show the same *set* of frames: no single frame, and no
  order-free pooling of frames, tells `moving_left` from `moving_right`. Only temporal modelling can.
- appearance: the class is colour + shape (`red_square`, ...); motion and position are random nuisances, so a
  single frame suffices and an image CLIP recognises the classes zero-shot.

`write_synthetic_dataset(captions=True)` also writes caption lists (`msta.data.captions`) for video-text training,
worded by `msta.data.synthetic_captions`, which also draws captioned single frames for pretraining a tiny image-text
CLIP on the same visual world (its names are still importable from here).
Everything is a pure function of its generator; rendering works on whole batches of frames with numpy (signed
distance functions, anti-aliased edges so that sub-pixel motion is visible).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .mp4 import write_mp4

__all__ = [
    "COLOURS", "SHAPES", "MOTIONS", "TASKS", "DEFAULT_COLOURS", "DEFAULT_SHAPES", "DEFAULT_MOTIONS",
    "SyntheticDataset", "as_rng", "render_shapes", "task_classes", "sample_clips", "synthetic_prompts",
    "write_synthetic_dataset",
]
# moved to synthetic_captions; still importable from here (module __getattr__ at the end)
_CAPTION_NAMES = ("clip_captions", "sample_captioned_frames", "caption_compatibility", "_POS_PHRASE", "_SIZE_WORDS",
                  "_HPOS", "_VPOS", "_MOTION_PHRASES")

_logger = logging.getLogger(__name__)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 70), "blue": (50, 90, 245), "yellow": (240, 220, 40),
    "purple": (170, 60, 220), "cyan": (40, 220, 230), "white": (245, 245, 245), "orange": (245, 140, 30),
}
SHAPES = ("square", "circle", "triangle", "diamond", "cross")
MOTIONS = ("moving_left", "moving_right", "moving_up", "moving_down", "growing", "shrinking")
TASKS = ("motion", "appearance")
DEFAULT_COLOURS = ("red", "green", "blue", "yellow")
DEFAULT_SHAPES = ("square", "circle", "triangle")
DEFAULT_MOTIONS = MOTIONS[:4]

_VELOCITY = {"moving_left": (-1, 0), "moving_right": (1, 0), "moving_up": (0, -1), "moving_down": (0, 1)}
_RADIUS = (0.22, 0.32)                # object radius range, as a fraction of the frame size (smaller shapes left
                                      # a 32 px CLIP unable to tell a triangle from a square within minutes)
_Rng = Union[np.random.Generator, int, None, Any]


def as_rng(generator: _Rng) -> np.random.Generator:
    """A numpy Generator from a numpy Generator (returned as is), an int seed, None (seed 0) or a torch.Generator.

    A torch.Generator is advanced by one draw, so consecutive calls with it give different, reproducible streams.
    """
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None or isinstance(generator, (int, np.integer)):
        return np.random.default_rng(0 if generator is None else int(generator))
    import torch  # only reached with a torch.Generator, so the module itself stays torch-free

    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


# ----------------------------------------------------------------------------------------------------------------
# rendering


def _sdf(kind: int, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) to shape `SHAPES[kind]` of radius r; areas roughly match the circle's."""
    ax, ay = np.abs(dx), np.abs(dy)
    name = SHAPES[kind]
    if name == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if name == "square":
        return np.maximum(ax, ay) - 0.886 * r
    if name == "triangle":  # apex up (y grows downwards); circumradius 1.3 r, inradius 0.65 r
        return np.maximum(dy, 0.866 * ax - 0.5 * dy) - 0.65 * r
    if name == "diamond":
        return (ax + ay - 1.2533 * r) * 0.7071
    arm, half = 1.15 * r, 0.38 * r  # cross: union of two bars
    return np.minimum(np.maximum(ax - arm, ay - half), np.maximum(ax - half, ay - arm))


def render_shapes(shape: np.ndarray, colour: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, *,
                  size: int, background: np.ndarray, noise_std: float = 0.0,
                  rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Draws one shape per frame, for a whole batch of frames at once.

    Args:
        shape: (N,) int indices into SHAPES.
        colour: (N, 3) RGB in [0, 255].
        cx, cy: (N,) object centres in pixels (x to the right, y downwards; pixel k spans [k, k + 1)).
        radius: (N,) object radii in pixels.
        size: frame height = width.
        background: (N, 3) RGB background levels in [0, 255].
        noise_std: std of additive Gaussian pixel noise; needs `rng` (numpy generator) when > 0.

    Returns:
        (N, size, size, 3) uint8 frames.
    """
    shape = np.asarray(shape)
    n = shape.shape[0]
    if noise_std > 0 and rng is None:
        raise ValueError("render_shapes: noise_std > 0 needs an rng")
    out = np.empty((n, size, size, 3), np.uint8)
    grid = np.arange(size, dtype=np.float32) + 0.5
    step = max(1, 2**20 // (size * size))  # frames per chunk: a few MB of float32 stays in cache, no page faults
    for a in range(0, n, step):
        b = min(n, a + step)
        dx = grid[None, None, :] - np.asarray(cx[a:b], np.float32)[:, None, None]   # (n, 1, W)
        dy = grid[None, :, None] - np.asarray(cy[a:b], np.float32)[:, None, None]   # (n, H, 1)
        r = np.asarray(radius[a:b], np.float32)[:, None, None]
        dist = np.empty((b - a, size, size), np.float32)
        for kind in np.unique(shape[a:b]):  # a loop over the few shape kinds; each call is vectorised over frames
            sel = shape[a:b] == kind
            dist[sel] = _sdf(int(kind), dx[sel], dy[sel], r[sel])
        # pixel coverage from the distance: anti-aliased edges make sub-pixel displacements visible
        alpha = np.clip(0.5 - dist, 0.0, 1.0, out=dist)[..., None]
        bg = np.asarray(background[a:b], np.float32)[:, None, None, :]
        img = bg + alpha * (np.asarray(colour[a:b], np.float32)[:, None, None, :] - bg)
        if noise_std > 0:  # luminance noise, shared by the channels (a third of the random numbers)
            img += (rng.standard_normal((b - a, size, size, 1), dtype=np.float32) * noise_std)
        out[a:b] = np.clip(img, 0, 255, out=img) + 0.5  # + 0.5 then truncation by the cast = rounding
    return out


def _backgrounds(rng: np.random.Generator, n: int) -> np.ndarray:  # unsaturated: every object colour stands out
    return rng.uniform(25, 75, (n, 1)) + rng.uniform(-6, 6, (n, 3))     # (n, 3) dark, slightly tinted greys


# ----------------------------------------------------------------------------------------------------------------
# clips


def task_classes(task: str, *, colours: Sequence[str] = DEFAULT_COLOURS, shapes: Sequence[str] = DEFAULT_SHAPES,
                 motions: Sequence[str] = DEFAULT_MOTIONS) -> list[str]:
    """The raw labels of a task, in class-id order: motions, or `<colour>_<shape>` (colour-major)."""
    if task == "motion":
        bad = [m for m in motions if m not in MOTIONS]
        if bad:
            raise ValueError(f"unknown motion classes {bad}; available: {', '.join(MOTIONS)}")
        return list(motions)
    if task == "appearance":
        bad = [c for c in colours if c not in COLOURS] + [s for s in shapes if s not in SHAPES]
        if bad:
            raise ValueError(f"unknown colours/shapes {bad}; colours: {', '.join(COLOURS)}; "
                             f"shapes: {', '.join(SHAPES)}")
        return [f"{c}_{s}" for c in colours for s in shapes]
    raise ValueError(f"unknown synthetic task {task!r}; available: {', '.join(TASKS)}")


def _trajectories(rng: np.random.Generator, motion: np.ndarray, t: int, size: int) -> tuple[np.ndarray, ...]:
    """Centres and radii (each (N, T)) for motions given as indices into MOTIONS (-1 = static).

    Trajectories are symmetric around a random midpoint, so reversing time maps one direction onto its opposite
    with the same distribution of frames.
    """
    n = motion.shape[0]
    tau = (np.arange(t, dtype=np.float64) - (t - 1) / 2) / max(t - 1, 1)         # (T,) in [-0.5, 0.5]
    lo, hi = _RADIUS[0] * size, _RADIUS[1] * size
    radius = rng.uniform(0.2 * size, 0.25 * size, n)                             # as large as fits the travel
    travel = rng.uniform(0.3, 0.4, n) * size                                     # path length over the clip
    vel = np.array([_VELOCITY.get(MOTIONS[m] if m >= 0 else "", (0, 0)) for m in motion], np.float64)
    vel *= travel[:, None]
    margin = radius + 1.0
    half = np.abs(vel) / 2
    mid = rng.uniform(margin[:, None] + half, size - margin[:, None] - half)     # (N, 2) keeps the path inside
    cx = mid[:, :1] + vel[:, :1] * tau
    cy = mid[:, 1:] + vel[:, 1:] * tau
    rad = np.repeat(radius[:, None], t, axis=1)
    scaling = np.isin(motion, [MOTIONS.index("growing"), MOTIONS.index("shrinking")])
    if scaling.any():
        r0, r1 = rng.uniform(lo, lo * 1.15, n), rng.uniform(hi * 0.9, hi, n)
        sign = np.where(motion == MOTIONS.index("growing"), 1.0, -1.0)[:, None]
        scaled = (r0 + r1)[:, None] / 2 + sign * (r1 - r0)[:, None] * tau
        centre = rng.uniform(r1 + 1, size - r1 - 1, (2, n))
        rad = np.where(scaling[:, None], scaled, rad)
        cx = np.where(scaling[:, None], centre[0][:, None], cx)
        cy = np.where(scaling[:, None], centre[1][:, None], cy)
    return cx, cy, rad


def sample_clips(task: str, num_per_class: int, generator: _Rng, *, classes: Optional[Sequence[str]] = None,
                 num_frames: int = 8, size: int = 32, noise_std: float = 3.0, colours: Sequence[str] = DEFAULT_COLOURS,
                 shapes: Sequence[str] = DEFAULT_SHAPES, with_attributes: bool = False):
    """Draws a class-balanced set of clips of one task.

    Args:
        task: "motion" or "appearance".
        num_per_class: clips per class.
        generator: numpy Generator, int seed or torch.Generator.
        classes: raw labels (default: all of `task_classes(task)` with the given colours and shapes).
        num_frames, size: T and the frame side (even, for H.264). noise_std: pixel noise std (0 = plain).
        colours, shapes: the vocabulary that appearance classes are built from and motion clips draw from.
        with_attributes: also return what each clip shows (for `clip_captions`); draws nothing more, so the
            clips are the same either way.

    Returns:
        videos (N, T, size, size, 3) uint8 and labels (N,) int64 (indices into `classes`), class-major order; with
        `with_attributes` also a dict of N-long lists: colour and shape names, motion (a MOTIONS name or "still").
    """
    rng = as_rng(generator)
    classes = list(classes) if classes is not None else task_classes(task, colours=colours, shapes=shapes)
    labels = np.repeat(np.arange(len(classes)), num_per_class)
    n = labels.shape[0]
    if task == "motion":
        task_classes("motion", motions=classes)
        motion = np.array([MOTIONS.index(classes[k]) for k in labels])
        shape = rng.choice([SHAPES.index(s) for s in shapes], n)
        colour = rng.choice([COLOURS[c] for c in colours], n).astype(np.float64)
    elif task == "appearance":
        task_classes("appearance", colours=[c.split("_")[0] for c in classes],
                     shapes=[c.split("_")[1] for c in classes])
        shape = np.array([SHAPES.index(classes[k].split("_")[1]) for k in labels])
        colour = np.array([COLOURS[classes[k].split("_")[0]] for k in labels], np.float64)
        motion = rng.integers(-1, len(MOTIONS), n)  # any motion, or none, as a nuisance
    else:
        raise ValueError(f"unknown synthetic task {task!r}; available: {', '.join(TASKS)}")
    # read back from the drawn values (not drawn separately), so asking for attributes leaves the stream as it is
    by_rgb = {rgb: name for name, rgb in COLOURS.items()}
    attrs = {"colour": [by_rgb[tuple(int(x) for x in row)] for row in colour],
             "shape": [SHAPES[k] for k in shape], "motion": [MOTIONS[m] if m >= 0 else "still" for m in motion]}
    colour = colour + rng.uniform(-12, 12, colour.shape)  # small shade jitter around the named colour
    cx, cy, rad = _trajectories(rng, motion, num_frames, size)
    bg = np.repeat(_backgrounds(rng, n), num_frames, axis=0)
    frames = render_shapes(np.repeat(shape, num_frames), np.repeat(colour, num_frames, axis=0), cx.ravel(),
                           cy.ravel(), rad.ravel(), size=size, background=bg, noise_std=noise_std, rng=rng)
    videos = frames.reshape(n, num_frames, size, size, 3)
    return (videos, labels.astype(np.int64), attrs) if with_attributes else (videos, labels.astype(np.int64))


# ----------------------------------------------------------------------------------------------------------------
# prompts and datasets on disk

_DIRECTION_WORDS = {  # class -> (where it starts, where it ends, adverb)
    "moving_left": ("on the right", "on the left", "leftwards"),
    "moving_right": ("on the left", "on the right", "rightwards"),
    "moving_up": ("at the bottom", "at the top", "upwards"),
    "moving_down": ("at the top", "at the bottom", "downwards"),
}


def synthetic_prompts(task: str, classes: Optional[Sequence[str]] = None) -> dict[str, dict[str, Any]]:
    """Readable names and 2 spatial + 2 temporal descriptions per class, from templates.

    Descriptions reuse the words of the pretraining captions (colours, shapes, "on the left", "small") so that the
    tiny CLIP's frozen text encoder gives them meaningful embeddings.

    Returns:
        raw_label -> {"name": str, "spatial": [2 str], "temporal": [2 str]} (the prompts-file `classes` mapping).
    """
    classes = list(classes) if classes is not None else task_classes(task)
    out: dict[str, dict[str, Any]] = {}
    for raw in classes:
        if task == "motion" and raw in _DIRECTION_WORDS:
            start, end, adverb = _DIRECTION_WORDS[raw]
            out[raw] = {"name": f"a shape {raw.replace('_', ' ')}",
                        "spatial": [f"a coloured shape {start} in the first frames and {end} in the last frames",
                                    f"a shape {start}, then in the centre, then {end}"],
                        "temporal": [f"the shape moves from {start.split()[-1]} to {end.split()[-1]} over time",
                                     f"an object sliding {adverb} across the frame"]}
        elif task == "motion":
            small, large = ("small", "large") if raw == "growing" else ("large", "small")
            out[raw] = {"name": f"a {raw} shape",
                        "spatial": [f"a {small} coloured shape in the first frames, a {large} one in the last",
                                    f"a {small} shape, then a {large} shape, in the same place"],
                        "temporal": [f"the shape becomes {'bigger' if raw == 'growing' else 'smaller'} over time",
                                     f"an object {'expanding' if raw == 'growing' else 'contracting'} steadily"]}
        else:
            colour, shape = raw.split("_")
            out[raw] = {"name": f"a {colour} {shape}",
                        "spatial": [f"a {colour} {shape} on a dark grey background",
                                    f"one {colour} coloured {shape} somewhere in the frame"],
                        "temporal": [f"a {colour} {shape} that moves around or stays still",
                                     f"a {colour} {shape} changing its position or size over time"]}
    return out


@dataclass(frozen=True)
class SyntheticDataset:
    """Where `write_synthetic_dataset` put things (the paths a DataCfg needs)."""
    name: str                     # dataset key: prompts file stem
    root: Path                    # video root; list paths are relative to it
    class_table: Path             # `id,name` CSV, name = raw label
    lists: dict[str, Path]        # split -> `relative/path.mp4 <label>` list
    prompts: Path                 # <prompts_dir>/<name>.yaml
    classes: tuple[str, ...]      # raw labels in id order
    caption_lists: dict[str, Path] = field(default_factory=dict)  # split -> `path<TAB>caption` list (captions=True)


def write_synthetic_dataset(out_dir: str | Path, task: str, *, splits: Optional[dict[str, int]] = None, seed: int = 0,
                            classes: Optional[Sequence[str]] = None, num_frames: int = 16, size: int = 32,
                            fps: int = 8, noise_std: float = 3.0, name: Optional[str] = None,
                            prompts_dir: Optional[str | Path] = None, progress: bool = True,
                            captions: bool = False) -> SyntheticDataset:
    """Generates a seeded synthetic video dataset as real H.264 mp4 files, with lists, class table and prompts.

    Layout: `<out_dir>/videos/<raw_label>/<split>_<i>.mp4`, `<out_dir>/<split>.txt`, `<out_dir>/classes.csv`,
    `<prompts_dir>/<name>.yaml` (prompts_dir defaults to `<out_dir>/prompts`), and with `captions` also
    `<out_dir>/<split>_captions.txt` (two `clip_captions` lines per video). Each split has its own random stream
    derived from (seed, task, split), so adding a split does not change the others; `captions` changes no video.

    Args:
        out_dir: output folder (created). task: "motion" or "appearance". seed: base seed.
        splits: split name -> videos per class (default {"train": 16, "test": 16}).
        classes: raw labels (default: the task's default classes). name: dataset key (default `synthetic_<task>`).
        num_frames, size, fps, noise_std: video length, frame side (even), frame rate, pixel noise.
        prompts_dir: where to write the prompts file. progress: show a tqdm bar.
        captions: also write caption lists (for loss.kind=infonce).
    """
    from tqdm.auto import tqdm

    from msta.data.captions import CaptionItem, write_caption_list
    from msta.data.synthetic_captions import clip_captions
    from msta.text.prompts import write_prompts_file  # text helpers; imported here to keep data imports light

    out_dir = Path(out_dir)
    classes = list(classes) if classes is not None else task_classes(task)
    splits = dict(splits) if splits is not None else {"train": 16, "test": 16}
    name = name or f"synthetic_{task}"
    (out_dir / "classes.csv").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.csv").write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes)))
    lists, caption_lists = {}, {}
    total = sum(splits.values()) * len(classes)
    with tqdm(total=total, desc=f"writing {name} videos", unit="video", disable=not progress) as bar:
        for split, per_class in splits.items():
            rng = np.random.default_rng([seed, TASKS.index(task), *split.encode()])
            videos, labels, attrs = sample_clips(task, per_class, rng, classes=classes, num_frames=num_frames,
                                                 size=size, noise_std=noise_std, with_attributes=True)
            lines, pairs = [], []
            for i, (video, label) in enumerate(zip(videos, labels)):
                rel = f"{classes[label]}/{split}_{i:05d}.mp4"
                write_mp4(out_dir / "videos" / rel, video, fps=fps)
                lines.append(f"{rel} {label}\n")
                words = clip_captions(attrs["colour"][i], attrs["shape"][i], attrs["motion"][i])
                pairs += [CaptionItem(rel, c) for c in words]
                bar.update(1)
            lists[split] = out_dir / f"{split}.txt"
            lists[split].write_text("".join(lines))
            if captions:
                caption_lists[split] = write_caption_list(out_dir / f"{split}_captions.txt", pairs)
    prompts = write_prompts_file(Path(prompts_dir or out_dir / "prompts") / f"{name}.yaml", name,
                                 synthetic_prompts(task, classes),
                                 source=f"msta.data.synthetic templates ({task} task)")
    _logger.info("wrote %d %s videos (%d classes, %s) to %s", total, name, len(classes), splits, out_dir)
    return SyntheticDataset(name=name, root=out_dir / "videos", class_table=out_dir / "classes.csv", lists=lists,
                            prompts=prompts, classes=tuple(classes), caption_lists=caption_lists)


def __getattr__(name: str) -> Any:
    """The caption names that moved to `msta.data.synthetic_captions` (imported lazily: it imports this module)."""
    if name in _CAPTION_NAMES:
        from msta.data import synthetic_captions

        return getattr(synthetic_captions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
