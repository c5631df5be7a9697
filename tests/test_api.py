"""The public Python API (``msta.load`` -> ``VideoModel``) with the tiny model on real mp4 files: predict, classify,
encode_video and encode_text agree with the evaluation code and with each other; paths, decoded frames and
preprocessed views give the same answers; adapters from a folder and from a Hub cache; the frozen model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import msta
from msta import adapters_io as A
from msta.config import config_to_dict
from msta.errors import UsageError
from tests.eval.test_loading_adapters import _fill_hub_cache
from tests.eval.test_protocols import CLASSES, make_cfg, make_world

NAMES = [c.replace("_", " ") for c in CLASSES]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("api_world"))


@pytest.fixture(scope="module")
def adapters(world, tmp_path_factory):
    """A real adapters folder (random non-identity adapters) as training writes it, with the classes and config."""
    from msta.models import build_model

    cfg = make_cfg(world)
    g = torch.Generator().manual_seed(11)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in build_model(cfg.model).adapter_state_dict().items()}
    payload = A.adapter_payload(state_dict=state, config=config_to_dict(cfg), class_names=NAMES, raw_labels=CLASSES,
                                templates=["a video of {}."], step=5, epoch=1)
    return A.save_adapters(payload, tmp_path_factory.mktemp("run") / "best")


@pytest.fixture(scope="module")
def model(adapters):
    torch.manual_seed(0)   # msta-tiny has no pretrained weights: the same seed builds the same random backbone
    return msta.load(adapters)


def _videos(world, n=4):
    return [str(world["videos"] / it.path) for it in world["items"][:n]]


def test_import_msta_stays_light():
    code = ("import sys, msta; heavy = [m for m in ('torch', 'deepspeed', 'decord', 'open_clip') if m in sys.modules]; "
            "assert not heavy, heavy; assert callable(msta.load) and 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_adapters_folder(model, adapters):
    assert model.classes == NAMES and model.templates == ["a video of {}."]
    assert model.device == torch.device("cpu") and model.dtype is None       # fp32 on the CPU
    assert not model.model.training
    saved = A.load_adapters(adapters)["state_dict"]
    got = model.model.adapter_state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    assert "best" in repr(model) and "6 classes" in repr(model)


def test_predict_defaults_to_the_checkpoint_classes_and_matches_predict_files(model, world):
    from msta.eval.predict import predict_files

    paths = _videos(world)
    preds = model.predict(paths, topk=3)
    ref = list(predict_files(model.model, paths, NAMES, ["a video of {}."], topk=3, data=model.cfg.data,
                             views=model.cfg.eval.views))
    assert [p.path for p in preds] == paths
    for p, r in zip(preds, ref):
        assert p.ok and len(p.top) == 3 and [n for n, _ in p.top] == [n for n, _ in r.top]
        assert [q for _, q in p.top] == pytest.approx([q for _, q in r.top], abs=1e-6)
        assert all(a >= b for (_, a), (_, b) in zip(p.top, p.top[1:]))
    assert len(model.predict(paths[0], topk=50)[0].top) == len(NAMES)        # capped at the number of classes


def test_classify_paths_frames_and_views_agree(model, world):
    from msta.data.decoding import open_video

    path = _videos(world, 1)[0]
    by_path = model.classify(path)
    assert by_path.shape == (1, len(NAMES))
    torch.testing.assert_close(by_path.sum(-1), torch.ones(1))
    reader = open_video(path)
    frames = reader.get_frames(list(range(len(reader))))                     # (N, H, W, 3) uint8, as decoded
    assert frames.dtype == torch.uint8 and frames.shape[-1] == 3
    torch.testing.assert_close(model.classify(frames), by_path)
    torch.testing.assert_close(model.classify(model.views(path)), by_path)    # preprocessed (V, T, 3, S, S)
    torch.testing.assert_close(model.classify(model.views(path)[0]), by_path)  # one clip (T, 3, S, S)
    two = model.classify([path, frames], labels=NAMES[:3])
    assert two.shape == (2, 3)
    torch.testing.assert_close(two[0], two[1])


def test_encode_video_and_text_are_the_classifier(model, world):
    paths = _videos(world, 3)
    v = model.encode_video(paths)
    t = model.encode_text([f"a video of {n}." for n in NAMES])
    assert v.shape[0] == 3 and t.shape == (len(NAMES), v.shape[1])
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(len(NAMES)))
    assert model.encode_text("a video of red square").shape == (1, v.shape[1])
    # one view, one template: classify == softmax(scale * video . text)
    scale = float(model.model(with_classes=False).logit_scale)
    torch.testing.assert_close(model.classify(paths), torch.softmax(scale * v @ t.T, dim=-1), atol=1e-5, rtol=1e-4)
    # the text branch is the adapted one: a frozen model embeds the same strings differently
    frozen = msta.load("msta-tiny", opts=["model.num_frames=4"])
    assert not torch.allclose(frozen.encode_text("a video of red square"), t[:1], atol=1e-3)


def test_frozen_model_needs_labels(world):
    frozen = msta.load("msta-tiny", opts=["model.num_frames=4"])
    assert frozen.checkpoint is None and frozen.classes == []
    assert frozen.model.adapter_state_dict() == {}                            # no adapters at all
    with pytest.raises(UsageError, match="labels="):
        frozen.predict(_videos(world, 1))
    preds = frozen.predict(_videos(world, 1), labels=["red square", "green circle"], topk=1)
    assert len(preds[0].top) == 1 and preds[0].top[0][0] in ("red square", "green circle")


def test_user_mistakes_get_one_message(model, world, tmp_path):
    with pytest.raises(UsageError, match="duplicate"):
        model.predict(_videos(world, 1), labels=["a", "a"])
    with pytest.raises(UsageError, match="topk"):
        model.predict(_videos(world, 1), topk=0)
    with pytest.raises(UsageError, match="non-empty"):
        model.classify(_videos(world, 1), labels=[])
    with pytest.raises(UsageError, match="CUDA is not available"):
        msta.load("msta-tiny", device="cuda")
    with pytest.raises(FileNotFoundError, match="no adapters file"):
        msta.load(tmp_path / "nothing" / "best")
    with pytest.raises(ValueError, match="expected uint8 frames"):
        model.classify(torch.zeros(2, 2))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    preds = model.predict([str(bad), _videos(world, 1)[0]], topk=2)
    assert not preds[0].ok and "broken.mp4" in preds[0].error and preds[1].ok


def test_uncached_weights_without_network_say_so_at_once(tmp_path, monkeypatch):
    import time

    import huggingface_hub.constants as hub_constants

    from msta.cli.weights import WeightsNotAvailable

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))   # an empty cache
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsNotAvailable, match=r"ViT-B-32 .*'openai' \(pretrained\) are not cached"):
        msta.load("ViT-B-32", pretrained="openai", device="cpu")
    assert time.monotonic() - start < 10


def test_load_from_hub_cache(adapters, model, world, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    _fill_hub_cache(cache, "someone/tiny-synth", adapters)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    torch.manual_seed(0)
    hub = msta.load("hf-hub:someone/tiny-synth")
    assert hub.classes == NAMES
    path = _videos(world, 1)
    torch.testing.assert_close(hub.classify(path), model.classify(path))


@pytest.mark.slow
def test_a_trained_run_writes_adapters_folders_that_load(tmp_path, launcher_env):
    """The trainer writes run/best/, run/last/ and each step's adapters/ in the folder format; msta.load reads the
    run by its old and new names and predicts with the run's own classes."""
    from msta.config import load_config
    from msta.engine.launch import train
    from tests.engine.helpers import tiny_config, write_dataset

    keys = write_dataset(tmp_path / "data")
    train(load_config(tiny_config(tmp_path, keys)))
    run = tmp_path / "run"
    for folder in (run / "best", run / "last", *sorted((run / "checkpoints").glob("step_*/adapters"))):
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"], folder
    assert not list(run.glob("*.pt")) and not list(run.glob("checkpoints/*/adapters.pt"))
    meta = json.loads((run / "last" / "config.json").read_text())
    assert meta["step"] == 12 and meta["base_model"]["name"] == "msta-tiny"
    assert meta["raw_labels"] == ["red_square", "green_circle", "blue_triangle", "yellow_square"]
    model = msta.load(run / "best.pt")                                       # an old command line's name
    assert model.checkpoint.path.endswith("best.pt") and len(model.classes) == 4
    videos = sorted(str(p) for p in (tmp_path / "data").rglob("*.mp4"))[:2]
    preds = model.predict(videos, topk=2)
    assert all(p.ok and p.top[0][0] in model.classes for p in preds)


def test_frozen_viclip_by_name(world):
    """msta.load takes the ViCLIP names of the model factory as it takes open_clip ones."""
    viclip = msta.load("viclip-tiny", opts=["model.num_frames=4"], device="cpu")
    assert viclip.cfg.model.name == "viclip-tiny" and viclip.checkpoint is None
    paths = _videos(world, 2)
    preds = viclip.predict(paths, labels=NAMES[:3], topk=2)
    assert all(p.ok and len(p.top) == 2 for p in preds)
    v, t = viclip.encode_video(paths), viclip.encode_text(NAMES[:3])
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))
    assert t.shape == (3, v.shape[1])
