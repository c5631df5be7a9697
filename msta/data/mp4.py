"""Writing mp4 files with PyAV (H.264), for the synthetic dataset, test fixtures and benchmarks."""
from __future__ import annotations

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
        The path written.
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
        if codec in ("libx264", "h264"):
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path
