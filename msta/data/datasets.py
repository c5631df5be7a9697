"""Map-style video datasets over (path, label) or (path, captions) items, and their construction from a `DataCfg`.

A sample is {"video": (T, C, H, W) float (training) or (V, T, C, H, W) float (evaluation, V = clips x crops,
clip-major), "label": int, "index": int}, CLIP-normalised; a caption sample (`CaptionDataset`) has "text": str
instead of "label". Every random choice of a sample is drawn from a generator seeded by (seed, epoch, index), so a
resumed run (same seed, `set_epoch`) sees the same frames and the same augmentation whatever the number of workers.
Bad videos are logged, counted across workers and replaced by another item chosen deterministically from (seed,
epoch, index, attempt); a video listed on several lines (one per caption) is decoded, and counted, as one video.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import ConfigError, DataCfg, ViewsCfg
from .annotations import VideoItem, check_labels, read_class_table, read_video_list
from .bad_videos import BadVideoTracker
from .captions import CaptionedVideo, group_by_video, hold_out_videos, read_caption_list
from .decoding import VideoDecodeError, open_video
from .sampling import sample_indices, sample_views
from .splits import few_shot, hold_out
from .transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, EvalTransform, TrainTransform

__all__ = ["sample_seed", "VideoDataset", "CaptionDataset", "DataSplits", "build_video_dataset", "build_datasets",
           "check_root"]

_logger = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, index: int, attempt: int = 0) -> int:
    """A 63-bit seed that depends on every argument (numpy SeedSequence hashing; stable across runs/platforms)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(attempt)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class VideoDataset(Dataset):
    """Decodes, samples and transforms videos listed as (relative path, label) items.

    Args:
        items: the videos (anything with a `path`, relative to `root`; several items may share a video).
        root: data root.
        num_frames: frames per clip (T).
        transform: `TrainTransform` (train=True) or `EvalTransform`; called as transform(clip_uint8, generator).
            Its `short_side` attribute, if any, is the size decoders resize to while decoding.
        train: random sampling and one view, or deterministic `num_clips` views.
        sampling: "segment" (TSN) or "dense". stride: frame step for dense sampling.
        num_clips: temporal test views (train=False only).
        backend: "decord" or "pyav". resize_on_decode: let the decoder resize to `transform.short_side`.
        seed: base seed; per-sample randomness comes from (seed, epoch, index).
        min_frames: videos with fewer frames are bad ("too_short"); shorter-than-clip videos with at least this
            many frames are sampled with repeated frames.
        max_bad_fraction: stop with a report once more of the videos are bad.
        max_attempts: replacement videos tried for one index before giving up.
    """

    def __init__(self, items: Sequence[VideoItem], root: str | os.PathLike, *, num_frames: int,
                 transform: Callable[[torch.Tensor, Optional[torch.Generator]], torch.Tensor], train: bool,
                 sampling: str = "segment", stride: int = 2, num_clips: int = 1, backend: str = "decord",
                 resize_on_decode: bool = True, seed: int = 0, min_frames: int = 1, max_bad_fraction: float = 0.05,
                 max_attempts: int = 20):
        if not items:
            raise ValueError(f"empty video list for a dataset rooted at {root}; check the list file and data.root")
        self.items, self.root = list(items), Path(root)
        self.num_frames, self.transform, self.train = num_frames, transform, train
        self.sampling, self.stride, self.num_clips = sampling, stride, (1 if train else num_clips)
        self.backend, self.seed, self.min_frames = backend, seed, max(1, min_frames)
        self.short_side = getattr(transform, "short_side", None) if resize_on_decode else None
        self.max_attempts = max_attempts
        # Shared so that set_epoch in the main process reaches persistent DataLoader workers too.
        self._epoch = mp.Value("q", 0, lock=False)
        # bad-video bookkeeping is per distinct video: one bad file listed with 20 captions is one bad video
        paths = [it.path for it in self.items]
        slots = {p: k for k, p in enumerate(dict.fromkeys(paths))}
        self.video_slot = [slots[p] for p in paths]  # item index -> tracker slot
        self.tracker = BadVideoTracker(list(slots), max_bad_fraction)
        self._native_hw: dict[int, tuple[int, int]] = {}  # per process: saves decord a probe on later epochs

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (in the main process, before iterating) so augmentation changes per epoch."""
        self._epoch.value = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    @property
    def bad_count(self) -> int:
        """Distinct bad videos met so far by the main process and all workers."""
        return self.tracker.count

    def _load(self, index: int, generator: torch.Generator) -> torch.Tensor:
        slot = self.video_slot[index]
        reader = open_video(self.root / self.items[index].path, backend=self.backend, short_side=self.short_side,
                            native_hw=self._native_hw.get(slot))
        self._native_hw[slot] = (reader.info.height, reader.info.width)
        n = len(reader)
        if n < self.min_frames:
            raise VideoDecodeError(self.items[index].path, "too_short", f"{n} frames < min_frames={self.min_frames}")
        if self.train:
            idx = sample_indices(n, self.num_frames, sampling=self.sampling, train=True, stride=self.stride,
                                 generator=generator)
            return self.transform(reader.get_frames(idx).permute(0, 3, 1, 2), generator)
        clips = sample_views(n, self.num_frames, self.num_clips, sampling=self.sampling, stride=self.stride)
        frames = reader.get_frames([i for c in clips for i in c]).permute(0, 3, 1, 2)  # one decode for all clips
        views = [self.transform(frames[k * self.num_frames:(k + 1) * self.num_frames], generator)
                 for k in range(self.num_clips)]  # each (crops, T, C, H, W)
        return torch.cat(views)  # (clips * crops, T, C, H, W), clip-major

    def _sample(self, index: int, video: torch.Tensor, generator: torch.Generator) -> dict:
        """The sample of item `index` around its decoded `video` (subclasses add their own targets)."""
        return {"video": video, "label": self.items[index].label, "index": index}

    def __getitem__(self, index: int) -> dict:
        current = index
        for attempt in range(self.max_attempts):
            if not self.tracker.is_bad(self.video_slot[current]):
                g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index, attempt))
                try:
                    return self._sample(current, self._load(current, g), g)
                except VideoDecodeError as e:
                    self.tracker.mark(self.video_slot[current], e.reason, e.detail)
            # Deterministic replacement: the same (seed, epoch, index, attempt) always picks the same video.
            r = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index, 1000 + attempt))
            current = int(torch.randint(len(self.items), (), generator=r))
        raise RuntimeError(f"no good video found for index {index} after {self.max_attempts} attempts:\n"
                           f"{self.tracker.report()}")


class CaptionDataset(VideoDataset):
    """Videos with captions (loss.kind infonce): a sample is {"video", "text": str, "index"}.

    Training uses one item per caption-list line (a video with 20 captions is 20 items, each decoded afresh);
    evaluation uses one item per video, whose `captions` are the retrieval targets. An item with several captions
    gives one of them, drawn from the sample's generator in training and the first one in evaluation.

    Args:
        items: `CaptionedVideo`s (path relative to `root`, at least one caption each).
        **kwargs: as `VideoDataset`.
    """

    def __init__(self, items: Sequence[CaptionedVideo], root: str | os.PathLike, **kwargs):
        super().__init__(items, root, **kwargs)
        empty = [it.path for it in self.items if not it.captions]
        if empty:
            raise ValueError(f"videos without a caption: {empty[:5]}")

    @property
    def captions(self) -> list[tuple[str, ...]]:
        """Each item's captions, in item order."""
        return [it.captions for it in self.items]

    def _sample(self, index: int, video: torch.Tensor, generator: torch.Generator) -> dict:
        captions = self.items[index].captions
        pick = int(torch.randint(len(captions), (), generator=generator)) if self.train and len(captions) > 1 else 0
        return {"video": video, "text": captions[pick], "index": index}


@dataclass
class DataSplits:
    """What `build_datasets` returns; `val` is None when nothing is held out and no val list is given."""
    train: Optional[VideoDataset]
    val: Optional[VideoDataset]
    test: Optional[VideoDataset]


def build_video_dataset(items: Sequence[VideoItem] | Sequence[CaptionedVideo], cfg: DataCfg, *, train: bool,
                        num_frames: int, image_size: Optional[int] = None, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                        std: Sequence[float] = OPENAI_CLIP_STD, views: Optional[ViewsCfg] = None,
                        seed: Optional[int] = None, dataset_cls: type[VideoDataset] = VideoDataset,
                        source: str = "the evaluation lists") -> VideoDataset:
    """One dataset over `items` with the transforms, sampler, backend and bad-video policy of `cfg`.

    The listed videos are checked against `cfg.root` first (`check_root`: a mistyped data.root is named at once).

    Args:
        image_size: the model's input size (default cfg.input_size).
        views: test views (default cfg.views); ignored for training.
        seed: augmentation seed (default cfg.seed).
        dataset_cls: `VideoDataset` for `VideoItem`s, `CaptionDataset` for `CaptionedVideo`s.
        source: the list the items come from, for messages.

    Raises:
        ConfigError: all or most of the videos do not exist under `cfg.root`.
    """
    if items:
        check_root(cfg.root, [it.path for it in items], source, cfg.max_bad_fraction)
    size = image_size or cfg.input_size
    views = views or cfg.views
    if train:
        transform = TrainTransform(size, flip=cfg.flip, color_jitter=cfg.color_jitter, grayscale=cfg.grayscale,
                                   mean=mean, std=std)
    else:
        transform = EvalTransform(size, crops=views.crops, mean=mean, std=std, resize=cfg.eval_resize)
    return dataset_cls(items, cfg.root, num_frames=num_frames, transform=transform, train=train,
                        sampling=cfg.sampling, stride=cfg.stride, num_clips=views.clips, backend=cfg.backend,
                        seed=cfg.seed if seed is None else seed, min_frames=cfg.min_frames,
                        max_bad_fraction=cfg.max_bad_fraction)


def check_root(root: str | os.PathLike, paths: Sequence[str], list_path: str | os.PathLike,
               max_bad_fraction: float = 0.0) -> int:
    """Checks that the listed videos exist under `root` (one stat per distinct video) before any decoding.

    A mistyped `data.root` otherwise reads as "1 of 12 videos are bad" only after the first bad-video report.

    Args:
        root: the data root. paths: the list's video paths, relative to `root`. list_path: the list, for messages.
        max_bad_fraction: the share of bad videos the run tolerates (`data.max_bad_fraction`).

    Returns:
        The number of distinct listed videos that are missing (the bad-video accounting deals with them).

    Raises:
        ConfigError: every video is missing, or more than half of them and more than `max_bad_fraction`: the
            message says that data.root is probably wrong and names it and the first missing path.
    """
    root = Path(root)
    distinct = list(dict.fromkeys(paths))
    missing = [p for p in distinct if not os.path.exists(root / p)]
    if not missing:
        return 0
    share = len(missing) / len(distinct)
    what = (f"{len(missing)} of the {len(distinct)} videos listed in {list_path} do not exist under "
            f"data.root={root} (first: {root / missing[0]})")
    if not root.is_dir():
        raise ConfigError(f"data.root={root} is not a folder, so none of the videos of {list_path} can be found "
                          f"(first: {root / missing[0]}); set data.root to the folder the list's paths are relative "
                          "to")
    if len(missing) == len(distinct) or (share > 0.5 and share > max_bad_fraction):
        raise ConfigError(f"{what}; data.root is probably wrong: it must be the folder the list's paths are "
                          f"relative to (the list has e.g. {distinct[0]!r})")
    _logger.warning("%s; they will be counted as bad videos", what)
    return len(missing)


def _read_labelled(path: str, cfg: DataCfg, num_classes: Optional[int]) -> list[VideoItem]:
    """A label list, checked against the class table before any decoding (data.root: `build_video_dataset`)."""
    items = read_video_list(path)
    if num_classes is not None:
        check_labels(items, num_classes, path, cfg.class_table)
    return items


def build_datasets(cfg: DataCfg, *, image_size: Optional[int] = None, num_frames: int = 8,
                   mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD,
                   captions: bool = False) -> DataSplits:
    """Train / model-selection / test datasets from the lists in `cfg`.

    With `captions` (loss.kind infonce) the lists are caption lists and the datasets `CaptionDataset`s, see
    `_caption_splits`; otherwise they are label lists:

    - train: `cfg.train_list`; with `cfg.shots > 0`, K per class drawn with `cfg.seed`.
    - val: `cfg.val_list` if set; else, when `cfg.select_on == "val"` and `cfg.val_fraction > 0`, a seeded
      hold-out of the training videos (for few-shot, of the videos not drawn as shots, so the K shots stay intact).
      One centre view per video. With `select_on == "test"` and no val list, val is None (select on test).
    - test: `cfg.test_list` with `cfg.views` views.

    Every list is checked before anything is decoded: with `cfg.class_table` set, every label must be a class id
    of the table (`AnnotationError` naming the list, line and value), and the listed videos must mostly exist
    under `cfg.root` (`ConfigError` naming data.root and the first missing path, see `check_root`).
    """
    if captions:
        return _caption_splits(cfg, num_frames=num_frames, image_size=image_size, mean=mean, std=std)
    train = val = test = None
    num_classes = len(read_class_table(cfg.class_table)) if cfg.class_table else None
    val_items = _read_labelled(cfg.val_list, cfg, num_classes) if cfg.val_list else None
    if cfg.train_list:
        items = _read_labelled(cfg.train_list, cfg, num_classes)
        if cfg.shots > 0:
            shots = few_shot(items, cfg.shots, cfg.seed)
            rest = sorted(set(items) - set(shots), key=lambda it: it.path)
            if val_items is None and cfg.select_on == "val" and cfg.val_fraction > 0 and rest:
                _, val_items = hold_out(rest, cfg.val_fraction, cfg.seed)
            items = shots
        elif val_items is None and cfg.select_on == "val" and cfg.val_fraction > 0:
            items, val_items = hold_out(items, cfg.val_fraction, cfg.seed)
        train = build_video_dataset(items, cfg, train=True, num_frames=num_frames, image_size=image_size,
                                    mean=mean, std=std, source=cfg.train_list)
        _logger.info("train: %d videos from %s%s", len(items), cfg.train_list,
                     f" ({cfg.shots} shots/class, seed {cfg.seed})" if cfg.shots else "")
    if val_items:
        val = build_video_dataset(val_items, cfg, train=False, num_frames=num_frames, image_size=image_size,
                                  mean=mean, std=std, views=ViewsCfg(clips=1, crops=1),
                                  source=cfg.val_list or cfg.train_list)
    if cfg.test_list:
        test = build_video_dataset(_read_labelled(cfg.test_list, cfg, num_classes), cfg, train=False,
                                   num_frames=num_frames, image_size=image_size, mean=mean, std=std,
                                   source=cfg.test_list)
    return DataSplits(train, val, test)


def _caption_splits(cfg: DataCfg, **build) -> DataSplits:
    """`build_datasets` for caption lists (`msta.data.captions`).

    - train: one item per `cfg.train_list` line.
    - val: `cfg.val_list`, else (select_on "val", val_fraction > 0) whole videos held out from the training list
      with `cfg.seed`, all captions of a video on the same side; one item per video, one centre view.
    - test: `cfg.test_list`, one item per video, `cfg.views` views.

    Raises:
        ConfigError: data.shots > 0 (K videos per class needs classes).
    """
    if cfg.shots > 0:
        raise ConfigError(f"data.shots={cfg.shots} draws K videos per class, and caption lists have no classes; set "
                          "data.shots=0 for loss.kind=infonce")
    train = val = test = None
    val_items = read_caption_list(cfg.val_list) if cfg.val_list else None
    if cfg.train_list:
        items = read_caption_list(cfg.train_list)
        if val_items is None and cfg.select_on == "val" and cfg.val_fraction > 0:
            items, val_items = hold_out_videos(items, cfg.val_fraction, cfg.seed)
        train = build_video_dataset([CaptionedVideo(it.path, (it.caption,)) for it in items], cfg, train=True,
                                    dataset_cls=CaptionDataset, source=cfg.train_list, **build)
        _logger.info("train: %d captions of %d videos from %s", len(items), len(train.tracker.paths), cfg.train_list)
    if val_items:
        val = build_video_dataset(group_by_video(val_items), cfg, train=False, views=ViewsCfg(clips=1, crops=1),
                                  dataset_cls=CaptionDataset, source=cfg.val_list or cfg.train_list, **build)
    if cfg.test_list:
        test = build_video_dataset(group_by_video(read_caption_list(cfg.test_list)), cfg, train=False,
                                   dataset_cls=CaptionDataset, source=cfg.test_list, **build)
    return DataSplits(train, val, test)

