"""Writing mp4 files with PyAV (H.264), for the synthetic dataset, test fixtures and benchmarks.

The bytes are a pure function of the frames and the arguments. With x264's defaults they were not: encoding the
same 4-frame 32x32 clip again in one process gave another file now and then (PyAV 18.1, x264 core 165: 1 to 3 in
500, more often on a loaded machine; the first frame's QP differed, i.e. rate control). Measured over 3000 encodes
of two such clips, the output was identical every time once x264's macroblock-tree rate control (`mbtree`, which
propagates costs over the lookahead) was off, and varied with it on, even with one thread and explicit
timestamps. So libx264 runs without mbtree, with one thread, and frames carry explicit pts in a 1/fps time base.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["write_mp4"]


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8, codec: str = "libx264", crf: int = 18) -> Path:
    """Encodes frames into an mp4 file.

    Args:
        path: output file; parent folders are created.
        frames: (T, H, W, 3) uint8 RGB; H and W must be even (yuv420p).
        fps: frame rate written into the stream.
        codec: PyAV encoder name ("libx264" for H.264, "mpeg4" also works with decord).
        crf: H.264 quality (lower is closer to the input); ignored by other codecs.

    Returns:
        The path written; the same frames and arguments always give the same bytes.
    """
    import av  # PyAV is a runtime dependency, but keep `import msta.data` light

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4 expects (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_mp4 needs even frame sizes for yuv420p, got {h}x{w}; pad or resize the frames")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # one thread: nothing in the output may depend on scheduling
        if codec in ("libx264", "h264"):
            # mbtree=0: with it, the same frames gave different bytes from run to run (module docstring)
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        time_base = Fraction(1, fps)
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = i, time_base  # no guessed timestamps
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path
