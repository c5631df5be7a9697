"""What the web page does, without the web page: models per checkpoint, classification of one video with the frames
the model saw, search of an index with thumbnails. Plain Python and numpy in, plain Python and numpy out, so the
page (``msta.app.ui``) is only layout and this module is tested without a browser.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["FROZEN", "Backend", "Classified"]

_logger = logging.getLogger(__name__)

FROZEN = "frozen CLIP (no adapters)"
THUMB_SIDE = 128   # thumbnails' short side, decoded at that size


@dataclass
class Classified:
    """One video's classification: ranked (label, probability) best first, and the frames the model sampled."""
    ranked: list[tuple[str, float]]
    frames: list[np.ndarray]            # (H, W, 3) uint8, the first clip's frames in time order


def _labels(text: str) -> list[str]:
    return [n.strip() for n in text.replace("\n", ",").split(",") if n.strip()]


class Backend:
    """Loads models and indexes on first use and keeps them.

    Args:
        checkpoints: adapters files offered in the checkpoint menu (``FROZEN`` is always offered too).
        cfg: experiment YAML that models are built with (model, frames, views); None: each checkpoint's own.
        indexes: index files offered in the search tab.
        device: where models run (default: a GPU when present).
    """

    def __init__(self, checkpoints: Sequence[str] = (), cfg: Optional[str] = None, indexes: Sequence[str] = (),
                 device: Optional[str] = None):
        self.checkpoints = [str(c) for c in checkpoints]
        self.cfg, self.indexes, self.device = cfg, [str(i) for i in indexes], device
        self._models: dict[str, object] = {}
        self._indexes: dict[str, object] = {}
        self._lock = threading.Lock()   # the page may call from several worker threads

    @property
    def choices(self) -> list[str]:
        """The checkpoint menu: the given checkpoints, then frozen CLIP."""
        return [*self.checkpoints, FROZEN]

    def model(self, choice: str):
        """The ``IndexModel`` of a menu entry (a checkpoint path, or ``FROZEN``)."""
        from msta.index import load_index_model

        choice = choice or self.choices[0]
        with self._lock:
            if choice not in self._models:
                ckpt = None if choice == FROZEN else choice
                self._models[choice] = load_index_model(ckpt, self.cfg, device=self.device)
            return self._models[choice]

    def index(self, path: str):
        from msta.index import VideoIndex

        with self._lock:
            if path not in self._indexes:
                self._indexes[path] = VideoIndex(path, device=self.device)
            return self._indexes[path]

    def classify(self, choice: str, video: str, labels_text: str) -> Classified:
        """Ranks ``labels_text`` (comma- or line-separated class names) for the video file ``video``.

        Raises:
            msta.errors.UsageError: no video, no labels, or a video that cannot be read (the reason).
        """
        from msta.errors import UsageError

        labels = _labels(labels_text or "")
        if not video:
            raise UsageError("choose a video first (upload one, or type the path of one on this machine)")
        if not labels:
            raise UsageError("type one or more class names, separated by commas")
        from msta.data.decoding import VideoDecodeError

        model = self.model(choice)
        try:
            probs = model.video_model.classify([Path(video)], labels=labels)[0]        # (C,)
            frames = self.sampled_frames(model, video)
        except VideoDecodeError as e:
            raise UsageError(f"cannot read {video}: {e.reason}" + (f" ({e.detail})" if e.detail else "")) from e
        order = probs.argsort(descending=True).tolist()
        return Classified([(labels[i], float(probs[i])) for i in order], frames)

    @staticmethod
    def sampled_frames(model, video: str) -> list[np.ndarray]:
        """The frames of the first test clip, as decoded (before crop and normalisation)."""
        from msta.data.decoding import open_video
        from msta.data.sampling import sample_views

        cfg = model.cfg
        reader = open_video(video, backend=cfg.data.backend, short_side=max(model.video_model._image_size, 160))
        clip = sample_views(len(reader), cfg.model.num_frames, 1, sampling=cfg.data.sampling,
                            stride=cfg.data.stride)[0]
        return [f for f in reader.get_frames(clip).numpy()]

    def search(self, index_path: str, query: str, topk: int = 8) -> list[tuple[np.ndarray, str]]:
        """(thumbnail (H, W, 3) uint8, caption ``"#rank score path"``) of the ``topk`` best videos for ``query``.

        Raises:
            msta.errors.UsageError: no index or an empty query; msta.index.IndexFileError: not an index.
        """
        from msta.errors import UsageError

        if not index_path:
            raise UsageError("choose an index (build one with `msta index DIR --out INDEX`)")
        if not (query or "").strip():
            raise UsageError("type what to look for, e.g. \"a dog catching a frisbee\"")
        hits = self.index(index_path).search(query.strip(), topk=int(topk))
        return [(thumbnail(h.path), f"#{h.rank}  {h.score:.3f}  {os.path.basename(h.path)}") for h in hits]


def thumbnail(path: str) -> np.ndarray:
    """The middle frame of a video at short side ``THUMB_SIDE`` (a grey square when it cannot be read)."""
    from msta.data.decoding import open_video

    try:
        reader = open_video(path, backend="pyav", short_side=THUMB_SIDE)
        return reader.get_frames([len(reader) // 2])[0].numpy()
    except Exception as e:  # noqa: BLE001 - a vanished or damaged file still gets its place in the results
        _logger.warning("no thumbnail for %s: %s", path, e)
        return np.full((THUMB_SIDE, THUMB_SIDE, 3), 128, np.uint8)
