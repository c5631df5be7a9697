"""Synthetic data: deterministic rendering, class-consistent motion and colour, decodable mp4 datasets."""
import hashlib

import numpy as np
import pytest

from msta.data.mp4 import write_mp4
from msta.data.synthetic import (COLOURS, MOTIONS, SHAPES, TASKS, as_rng, render_shapes, sample_clips,
                                 synthetic_prompts, task_classes, write_synthetic_dataset)
from msta.data.synthetic_captions import caption_compatibility, clip_captions, sample_captioned_frames


def _centroids(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) frames -> per-frame object centroid (T, 2) as (x, y), and object area (T,) in pixels.

    The background is an unsaturated grey, every object colour is saturated (or white, bright), so the object is
    where the channel spread or the brightness is large.
    """
    v = video.astype(np.float32)
    mask = ((v.max(-1) - v.min(-1)) > 80) | (v.min(-1) > 200)
    ys, xs = np.mgrid[:v.shape[1], :v.shape[2]]
    area = mask.sum((1, 2))
    cx = (mask * xs).sum((1, 2)) / np.maximum(area, 1)
    cy = (mask * ys).sum((1, 2)) / np.maximum(area, 1)
    return np.stack([cx, cy], 1), area


def _check_motion(video: np.ndarray, raw_label: str) -> None:
    c, area = _centroids(video)
    assert (area > 0).all(), "the object must be visible in every frame"
    dx, dy = c[-1] - c[0]
    da = area[-1] - area[0]
    expect = {"moving_left": dx < -4 and abs(dy) < 1.5, "moving_right": dx > 4 and abs(dy) < 1.5,
              "moving_up": dy < -4 and abs(dx) < 1.5, "moving_down": dy > 4 and abs(dx) < 1.5,
              "growing": da > 10 and abs(dx) + abs(dy) < 2, "shrinking": da < -10 and abs(dx) + abs(dy) < 2}
    assert expect[raw_label], (raw_label, dx, dy, da)


def test_render_shapes_places_each_shape_at_its_centre():
    n = len(SHAPES)
    frames = render_shapes(np.arange(n), np.tile([[230, 40, 40]], (n, 1)), np.full(n, 12.0), np.full(n, 20.0),
                           np.full(n, 5.0), size=32, background=np.full((n, 3), 50.0))
    assert frames.shape == (n, 32, 32, 3) and frames.dtype == np.uint8
    c, area = _centroids(frames)
    assert np.allclose(c[:, 0], 12.0, atol=0.6) and (area > 30).all()
    assert np.allclose(c[[0, 1, 3, 4], 1], 20.0, atol=0.6)  # the triangle's pixel centroid sits below its centre
    assert len({int(a) for a in area}) > 2, "shapes must differ"


def test_sample_clips_deterministic_and_seed_dependent():
    a, la = sample_clips("motion", 2, 7, num_frames=6, size=32)
    b, lb = sample_clips("motion", 2, 7, num_frames=6, size=32)
    c, _ = sample_clips("motion", 2, 8, num_frames=6, size=32)
    assert a.shape == (8, 6, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert np.bincount(la).tolist() == [2, 2, 2, 2]


def test_torch_generator_is_accepted_and_reproducible():
    torch = pytest.importorskip("torch")
    x, _ = sample_clips("appearance", 1, torch.Generator().manual_seed(3), num_frames=2)
    y, _ = sample_clips("appearance", 1, torch.Generator().manual_seed(3), num_frames=2)
    np.testing.assert_array_equal(x, y)
    assert as_rng(5).integers(100) == as_rng(5).integers(100)


@pytest.mark.parametrize("raw_label", MOTIONS)
def test_motion_clips_move_as_their_label_says(raw_label):
    videos, labels = sample_clips("motion", 6, 0, classes=[raw_label], num_frames=8, size=32, noise_std=0)
    for video in videos:
        _check_motion(video, raw_label)


def test_direction_and_its_reverse_share_the_frame_distribution():
    """No single frame reveals left vs right: mean object positions over many clips agree per frame index set."""
    videos, labels = sample_clips("motion", 200, 0, classes=["moving_left", "moving_right"], num_frames=8,
                                  noise_std=0)
    xs = np.stack([_centroids(v)[0][:, 0] for v in videos])  # (N, T)
    left, right = xs[labels == 0], xs[labels == 1]
    # the pooled positions (all frames) have the same distribution; only their order differs
    assert abs(left.mean() - right.mean()) < 0.5
    assert abs(np.percentile(left, 10) - np.percentile(right, 10)) < 1.0
    assert left[:, 0].mean() > left[:, -1].mean() + 5 and right[:, 0].mean() < right[:, -1].mean() - 5


def test_appearance_clips_show_their_colour():
    classes = task_classes("appearance")
    videos, labels = sample_clips("appearance", 2, 1, num_frames=4, noise_std=0)
    for video, label in zip(videos, labels):
        v = video.reshape(-1, 3).astype(np.float32)
        obj = v[(v.max(1) - v.min(1)) > 80].mean(0)
        colour = classes[label].split("_")[0]
        assert np.abs(obj - np.array(COLOURS[colour])).max() < 40, (classes[label], obj)


def test_captioned_frames_describe_the_frame():
    images, captions, attrs = sample_captioned_frames(64, 0, with_attributes=True)
    assert images.shape == (64, 3, 32, 32) and images.dtype == np.uint8 and len(captions) == 64
    colours, shapes = ("red", "green", "blue", "yellow"), ("square", "circle", "triangle")
    for i, cap in enumerate(captions):
        assert f"{colours[attrs['colour'][i]]} {SHAPES[attrs['shape'][i]]}" in cap, cap
    compat = caption_compatibility(attrs)
    assert compat.diagonal().all() and not compat.all()
    images2, captions2 = sample_captioned_frames(64, 0)
    np.testing.assert_array_equal(images, images2)
    assert captions == captions2


def test_prompts_have_two_spatial_and_two_temporal_descriptions():
    for task in ("motion", "appearance"):
        prompts = synthetic_prompts(task, task_classes(task, motions=MOTIONS) if task == "motion" else None)
        for entry in prompts.values():
            assert entry["name"] and len(entry["spatial"]) == 2 and len(entry["temporal"]) == 2
        assert len({e["name"] for e in prompts.values()}) == len(prompts)


def test_write_dataset_decodable_balanced_and_labelled(tmp_path):
    decord = pytest.importorskip("decord")
    ds = write_synthetic_dataset(tmp_path / "motion", "motion", splits={"train": 3, "test": 2}, seed=4,
                                 num_frames=8, size=32, noise_std=0, progress=False)
    assert ds.class_table.read_text().splitlines() == ["id,name"] + [f"{i},{c}" for i, c in enumerate(ds.classes)]
    for split, per_class in (("train", 3), ("test", 2)):
        lines = [ln.split() for ln in ds.lists[split].read_text().splitlines()]
        labels = [int(lab) for _, lab in lines]
        assert np.bincount(labels).tolist() == [per_class] * len(ds.classes)
        for rel, lab in lines:
            vr = decord.VideoReader(str(ds.root / rel))
            frames = vr.get_batch(list(range(len(vr)))).asnumpy()
            assert frames.shape == (8, 32, 32, 3)
            _check_motion(frames, ds.classes[int(lab)])  # survives H.264 compression
    from msta.text.prompts import read_prompts_file
    name, classes = read_prompts_file(ds.prompts)
    assert name == "synthetic_motion" and list(classes) == list(ds.classes)


def test_write_mp4_gives_the_same_bytes_every_time(tmp_path):
    """Issue 13 item 4: with x264's defaults (mbtree on) the same frames now and then gave another file.

    The rate varied from run to run (from 1 in 500 encodes to 1 in 3 while other jobs ran), so this loop does not
    catch the old encoder settings every time (measured: in 1 of 5 runs of it); what it pins is that, now, 12 clips
    rendered and encoded 30 times each give exactly one file per clip.
    """
    digests: dict[int, set] = {}
    for _ in range(30):  # re-render each time: the renderer's allocations are part of what varied the encodes
        videos, _ = sample_clips("appearance", 1, np.random.default_rng([2, 1, *b"test"]), num_frames=4)
        for k, video in enumerate(videos):
            digests.setdefault(k, set()).add(hashlib.sha1(write_mp4(tmp_path / "v.mp4", video).read_bytes()).digest())
    assert {k: len(d) for k, d in digests.items() if len(d) > 1} == {}


def test_caption_names_still_import_from_synthetic():
    from msta.data import synthetic, synthetic_captions

    assert synthetic.clip_captions is synthetic_captions.clip_captions
    assert synthetic._POS_PHRASE is synthetic_captions._POS_PHRASE
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        synthetic.nope


def test_write_dataset_is_deterministic(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", "appearance", splits={"test": 1}, seed=2, num_frames=4,
                                progress=False)
    b = write_synthetic_dataset(tmp_path / "b", "appearance", splits={"test": 1}, seed=2, num_frames=4,
                                progress=False)
    assert a.lists["test"].read_text() == b.lists["test"].read_text()
    for line in a.lists["test"].read_text().splitlines():  # every video, not only the first
        rel = line.split()[0]
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel


def test_clip_attributes_change_no_clip_and_describe_it():
    for task in TASKS:
        plain_videos, plain_labels = sample_clips(task, 3, 7, num_frames=8, noise_std=0)
        videos, labels, attrs = sample_clips(task, 3, 7, num_frames=8, noise_std=0, with_attributes=True)
        np.testing.assert_array_equal(videos, plain_videos)
        np.testing.assert_array_equal(labels, plain_labels)
        classes = task_classes(task)
        for video, label, colour, shape, motion in zip(videos, labels, attrs["colour"], attrs["shape"],
                                                       attrs["motion"]):
            assert colour in COLOURS and shape in SHAPES
            if task == "motion":
                assert motion == classes[label]
                _check_motion(video, motion)
            else:
                assert f"{colour}_{shape}" == classes[label] and (motion in MOTIONS or motion == "still")


def test_clip_captions():
    assert clip_captions("red", "square", "moving_left") == ["a red square moving left",
                                                             "a video of a red square sliding to the left"]
    assert all(len(clip_captions("red", "circle", m)) == 2 for m in (*MOTIONS, "still"))
    with pytest.raises(ValueError, match="unknown motion 'spinning'"):
        clip_captions("red", "circle", "spinning")


def test_write_dataset_with_captions_changes_no_video(tmp_path):
    from msta.data.captions import group_by_video, read_caption_list

    plain = write_synthetic_dataset(tmp_path / "a", "motion", splits={"train": 2}, seed=3, num_frames=4,
                                    progress=False)
    ds = write_synthetic_dataset(tmp_path / "b", "motion", splits={"train": 2}, seed=3, num_frames=4,
                                 progress=False, captions=True)
    assert plain.caption_lists == {} and set(ds.caption_lists) == {"train"}
    assert ds.lists["train"].read_text() == plain.lists["train"].read_text()
    videos = group_by_video(read_caption_list(ds.caption_lists["train"]))
    labelled = dict(line.split() for line in ds.lists["train"].read_text().splitlines())
    assert [v.path for v in videos] == list(labelled) and all(len(v.captions) == 2 for v in videos)
    for v in videos:
        assert (ds.root / v.path).read_bytes() == (plain.root / v.path).read_bytes()
        motion = ds.classes[int(labelled[v.path])]
        assert v.captions[0].endswith(motion.replace("_", " "))
