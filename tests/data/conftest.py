"""Shared helpers for the data tests: small real mp4 files whose pixel values encode the frame index."""
from pathlib import Path

import numpy as np
import pytest

from msta.data.mp4 import write_mp4

STEP = 6  # gray level per frame index; H.264 keeps flat gray within ~2 levels, so round(mean / STEP) is the index


def gray_video(path: Path, num_frames: int, height: int = 48, width: int = 64) -> Path:
    """Frame i is uniformly gray with level i * STEP (num_frames <= 42)."""
    assert num_frames * STEP <= 255
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i] = i * STEP
    return write_mp4(path, frames)


def frame_ids(frames) -> list[int]:
    """(N, H, W, 3) or (N, 3, H, W) decoded frames -> the frame indices they encode."""
    return [int(round(float(f.float().mean()) / STEP)) for f in frames]


@pytest.fixture(scope="session")
def video40(tmp_path_factory) -> Path:
    return gray_video(tmp_path_factory.mktemp("videos") / "v40.mp4", 40)
