import subprocess
import sys

import pytest

from msta.data.decoding import VideoDecodeError, open_video, resized_hw

from .conftest import frame_ids, gray_video


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("short_side", [None, 24])
def test_decoded_frames_are_the_frames_asked_for(video40, backend, short_side):
    reader = open_video(video40, backend=backend, short_side=short_side)
    assert len(reader) == 40 and reader.info.height == 48 and reader.info.width == 64
    idx = [0, 3, 3, 17, 39, 1, 25]  # unsorted, repeated
    frames = reader.get_frames(idx)
    expected_hw = (48, 64) if short_side is None else (24, 32)
    assert tuple(frames.shape) == (len(idx), *expected_hw, 3)
    assert frame_ids(frames) == idx


def test_resized_hw_keeps_aspect_and_only_downscales():
    assert resized_hw(240, 320, 120) == (120, 160)
    assert resized_hw(320, 240, 120) == (160, 120)
    assert resized_hw(240, 320, 256) == (240, 320)  # upscaling is left to the transforms
    assert resized_hw(240, 320, None) == (240, 320)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_files_raise_decode_errors_with_reasons(tmp_path, video40, backend):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 40)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video40.read_bytes()[: video40.stat().st_size // 2])
    cases = {tmp_path / "missing.mp4": "missing", empty: "empty", garbage: "undecodable", truncated: "undecodable"}
    for path, reason in cases.items():
        with pytest.raises(VideoDecodeError) as e:
            open_video(path, backend=backend).get_frames([0])
        assert e.value.reason == reason and str(path) in str(e.value)


def test_out_of_range_indices_name_the_file(video40):
    with pytest.raises(IndexError, match="v40.mp4"):
        open_video(video40).get_frames([40])


def test_unknown_backend():
    with pytest.raises(ValueError, match="data.backend"):
        open_video("x.mp4", backend="opencv")


def test_importing_the_package_does_not_import_decoders():
    code = ("import sys, msta, msta.data, msta.data.datasets, msta.data.preparers, msta.data.bench, "
            "msta.data.bad_videos; bad = [m for m in ('decord', 'av') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_odd_sizes_and_tiny_videos(tmp_path):
    path = gray_video(tmp_path / "one.mp4", 1, 32, 48)  # decord 0.6 cannot copy 48-wide frames: PyAV fallback
    for backend in ("decord", "pyav"):
        r = open_video(path, backend=backend)
        assert len(r) == 1 and frame_ids(r.get_frames([0, 0])) == [0, 0]
