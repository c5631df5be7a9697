"""ViCLIP's frame preparation (issue 15.1): ImageNet mean/std from the backbone, and the selectable eval resize
(224 x 224 bicubic, no crop) through ``data.eval_resize``."""
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from msta.config import ConfigError, DataCfg, ModelCfg, MstaCfg, config_from_dict
from msta.data.annotations import VideoItem
from msta.data.datasets import build_video_dataset
from msta.data.transforms import EvalTransform
from msta.models import build_model
from msta.models.backbones.viclip import IMAGENET_MEAN, IMAGENET_STD


def test_backbones_state_their_preprocessing():
    viclip = build_model(ModelCfg(name="viclip-tiny", msta=MstaCfg(enabled=False)))
    clip = build_model(ModelCfg(name="msta-tiny", msta=MstaCfg(enabled=False)))
    assert (viclip.image_mean, viclip.image_std, viclip.preprocess.eval_resize) == \
        (IMAGENET_MEAN, IMAGENET_STD, "squash")
    assert clip.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert clip.preprocess.eval_resize == "crop"


def test_squash_keeps_the_whole_frame_bicubic_and_imagenet_normalised():
    clip = torch.zeros(2, 3, 40, 120, dtype=torch.uint8)
    clip[..., :10] = 255  # a white band on the left edge: a centre crop of the short side would drop it
    t = EvalTransform(32, resize="squash", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = t(clip)
    assert out.shape == (1, 2, 3, 32, 32) and t.short_side is None  # the decoder does not pre-resize
    expected = F.resize(clip, [32, 32], interpolation=F.InterpolationMode.BICUBIC, antialias=True).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(out[0], (expected - mean) / std)
    assert float(out[0, 0, 0, 16, 0]) > 1.5 and float(out[0, 0, 0, 16, -1]) < -1.5  # the band is kept, squashed
    cropped = EvalTransform(32)(clip)
    assert float(cropped[0, 0, 0, 16, 0]) < 0  # CLIP's centre crop loses it


def test_data_eval_resize_key(tmp_path):
    assert config_from_dict({"data": {"eval_resize": "squash"}}).data.eval_resize == "squash"
    with pytest.raises(ConfigError, match="data.eval_resize must be 'crop'.*or 'squash'"):
        config_from_dict({"data": {"eval_resize": "stretch"}})
    (tmp_path / "a.mp4").write_bytes(b"")
    ds = build_video_dataset([VideoItem("a.mp4", 0)], DataCfg(root=str(tmp_path), eval_resize="squash"), train=False, num_frames=8,
                             image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert ds.transform.resize == "squash" and ds.transform.mean == IMAGENET_MEAN
