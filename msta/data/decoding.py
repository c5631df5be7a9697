"""Video decoding: decord (default) and PyAV backends behind one small reader interface.

Both backends read only the frames asked for and can resize while decoding (the scaler runs inside the decoder, so
no full-resolution RGB frame is ever materialised in Python). decord and PyAV are imported lazily, on the first
`open_video` call, so `import msta.data` stays light.

Example:
    reader = open_video("clip.mp4", backend="decord", short_side=256)
    frames = reader.get_frames([0, 8, 16])   # (3, H, W, 3) uint8 torch tensor, short side 256
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np
import torch

__all__ = [
    "BACKENDS", "VideoDecodeError", "VideoInfo", "VideoReader", "DecordReader", "PyAVReader", "open_video",
    "resized_hw",
]

_logger = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video could not be read. `reason` is one of "missing", "empty", "undecodable", "too_short"."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts of one video at its native resolution."""
    num_frames: int
    fps: float
    height: int
    width: int


class VideoReader(Protocol):
    """What the datasets need from a backend."""
    info: VideoInfo

    def __len__(self) -> int: ...

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Returns (N, H, W, 3) uint8 frames in the order of `indices` (repeats allowed)."""
        ...


def resized_hw(height: int, width: int, short_side: Optional[int]) -> tuple[int, int]:
    """Decode size that brings the short side down to `short_side`, keeping the aspect ratio (rounded, >= 1).

    Only downscales: a video whose short side is already <= `short_side` keeps its size, because scaling up in the
    decoder costs more than it saves (measured with decord on 320x240 input); the transforms upscale instead.
    `None` leaves the size unchanged.
    """
    if not short_side or min(height, width) <= short_side:
        return height, width
    scale = short_side / min(height, width)
    if height <= width:
        return short_side, max(1, int(round(width * scale)))
    return max(1, int(round(height * scale))), short_side


def _probe_hw(path: Path) -> Optional[tuple[int, int]]:
    """Native (height, width) from the stream header via PyAV (no decoding), or None if PyAV cannot tell."""
    try:
        import av
        with av.open(str(path)) as container:
            cc = container.streams.video[0].codec_context
            return (cc.height, cc.width) if cc.height and cc.width else None
    except Exception:  # the decord path reports the real error when it opens the file
        return None


def _check_file(path: Path) -> None:
    # These two are the commonest failures in real archives; naming them saves a trip to the decoder's message.
    if not path.is_file():
        raise VideoDecodeError(path, "missing", "no such file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty", "zero-byte file")


def _check_indices(path: Path, indices: Sequence[int], num_frames: int) -> list[int]:
    idx = [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:5]} out of range for a video of {num_frames} frames")
    return idx


class DecordReader:
    """decord VideoReader; resizes while decoding when `short_side` is given.

    decord's width/height must both be set to resize (one -1 keeps the native size on that axis), so the native
    size is probed first (PyAV header read, else decoding frame 0); pass `native_hw` (e.g. cached from an earlier
    read of the same file) to skip the probe.
    """

    def __init__(self, path: str | os.PathLike, *, short_side: Optional[int] = None,
                 native_hw: Optional[tuple[int, int]] = None):
        try:
            import decord
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the decord video backend needs decord: `pip install decord` "
                              "(or set data.backend: pyav to use PyAV)") from e
        self.path, self._short_side = Path(path), short_side
        _check_file(self.path)
        try:
            reader = None
            if native_hw is None:
                native_hw = _probe_hw(self.path)
            if native_hw is None:  # PyAV missing or failed: decode frame 0 to learn the size
                reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
                if len(reader) == 0:
                    raise VideoDecodeError(self.path, "too_short", "0 frames")
                native_hw = tuple(reader[0].shape[:2])
            h, w = resized_hw(native_hw[0], native_hw[1], short_side)
            if (h, w) != tuple(native_hw):
                reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1, width=w, height=h)
            elif reader is None:
                reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
            self._reader = reader
            self.info = VideoInfo(len(reader), float(reader.get_avg_fps() or 0.0), native_hw[0], native_hw[1])
        except VideoDecodeError:
            raise
        except Exception as e:  # decord raises DECORDError/RuntimeError with the ffmpeg message
            raise VideoDecodeError(self.path, "undecodable", f"{type(e).__name__}: {str(e)[:200]}") from e

    def __len__(self) -> int:
        return self.info.num_frames

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        idx = _check_indices(self.path, indices, len(self))
        try:
            # get_batch decodes each distinct frame once and seeks between far-apart ones.
            uniq = sorted(set(idx))
            batch = self._reader.get_batch(uniq).asnumpy()
        except Exception as e:
            if "DECORDArrayCopyFromTo" in str(e):
                # decord 0.6 mis-sizes its output buffer for some frame widths (e.g. 16 and 48 px); the file is
                # fine, so read it with PyAV instead of calling it bad.
                _logger.debug("decord cannot copy frames of %s (width quirk); falling back to PyAV", self.path)
                return PyAVReader(self.path, short_side=self._short_side).get_frames(idx)
            raise VideoDecodeError(self.path, "undecodable", f"{type(e).__name__}: {str(e)[:200]}") from e
        pos = {f: k for k, f in enumerate(uniq)}
        return torch.from_numpy(np.ascontiguousarray(batch[[pos[i] for i in idx]]))


class PyAVReader:
    """PyAV (FFmpeg) reader: decodes sequentially up to the last requested frame, converting only those.

    Seeking by frame index is unreliable across containers, so frames are counted from the start; the cost grows
    with the last index asked for, which is why decord is the default.
    """

    def __init__(self, path: str | os.PathLike, *, short_side: Optional[int] = None,
                 native_hw: Optional[tuple[int, int]] = None):
        try:
            import av
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the pyav video backend needs PyAV: `pip install av` "
                              "(or set data.backend: decord)") from e
        self._av = av
        self.path = Path(path)
        self.short_side = short_side
        _check_file(self.path)
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoDecodeError(self.path, "undecodable", "no video stream")
                stream = container.streams.video[0]
                n = int(stream.frames or 0)
                fps = float(stream.average_rate or 0.0)
                hw = (stream.codec_context.height, stream.codec_context.width)
                if n <= 0:  # some containers (webm, mkv) do not store a frame count: count by demuxing
                    n = sum(1 for p in container.demux(stream) if p.size > 0)
        except VideoDecodeError:
            raise
        except Exception as e:
            raise VideoDecodeError(self.path, "undecodable", f"{type(e).__name__}: {str(e)[:200]}") from e
        self.info = VideoInfo(n, fps, hw[0], hw[1])
        self._out_hw = resized_hw(hw[0], hw[1], short_side)

    def __len__(self) -> int:
        return self.info.num_frames

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        idx = _check_indices(self.path, indices, len(self))
        wanted, last = set(idx), max(idx)
        out_h, out_w = self._out_hw
        got: dict[int, np.ndarray] = {}
        try:
            with self._av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for k, frame in enumerate(container.decode(stream)):
                    if k in wanted:
                        got[k] = frame.to_ndarray(format="rgb24", width=out_w, height=out_h)
                    if k >= last:
                        break
        except Exception as e:
            raise VideoDecodeError(self.path, "undecodable", f"{type(e).__name__}: {str(e)[:200]}") from e
        if len(got) < len(wanted):
            # The header promised more frames than the stream holds: a truncated file.
            raise VideoDecodeError(self.path, "undecodable",
                                   f"decoded {len(got)} of {len(wanted)} requested frames; file truncated?")
        return torch.from_numpy(np.stack([got[i] for i in idx]))


def open_video(path: str | os.PathLike, *, backend: str = "decord", short_side: Optional[int] = None,
               native_hw: Optional[tuple[int, int]] = None) -> VideoReader:
    """Opens a video with the chosen backend.

    Args:
        path: video file.
        backend: "decord" (default, fast random access) or "pyav".
        short_side: downscale while decoding so that the short side has this many pixels (None, or a video
            already that small: native size).
        native_hw: the video's native (height, width) if already known; saves decord a probe.

    Raises:
        VideoDecodeError: missing, zero-byte or undecodable file (`.reason` says which).
        ValueError: unknown backend.
    """
    if backend == "decord":
        return DecordReader(path, short_side=short_side, native_hw=native_hw)
    if backend == "pyav":
        return PyAVReader(path, short_side=short_side, native_hw=native_hw)
    raise ValueError(f"unknown video backend {backend!r}; use one of {BACKENDS} (config key data.backend)")
