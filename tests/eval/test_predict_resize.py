"""predict and the Python API honour data.eval_resize as the evaluation datasets do (ViCLIP's no-crop resize)."""
import numpy as np
import torch

from msta.config import DataCfg, ViewsCfg
from msta.data.decoding import open_video
from msta.data.mp4 import write_mp4
from msta.data.transforms import EvalTransform, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from msta.eval.predict import read_views


def test_read_views_follows_data_eval_resize(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(8, 32, 48, 3), dtype=np.uint8)   # wide frames: a crop loses the sides
    path = write_mp4(tmp_path / "wide.mp4", frames)
    views = ViewsCfg(clips=1, crops=1)
    common = dict(num_frames=4, image_size=32, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, views=views)
    squash = read_views(path, data=DataCfg(eval_resize="squash"), **common)
    crop = read_views(path, data=DataCfg(eval_resize="crop"), **common)
    assert squash.shape == crop.shape == (1, 4, 3, 32, 32)
    assert not torch.allclose(squash, crop)
    # the squash views are exactly the whole decoded frames through the datasets' transform
    decoded = open_video(path, backend="decord").get_frames(list(range(8))).permute(0, 3, 1, 2)
    from msta.data.sampling import sample_views
    clip = sample_views(8, 4, 1, sampling=DataCfg().sampling, stride=DataCfg().stride)[0]
    expected = EvalTransform(32, crops=1, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, resize="squash")(
        decoded[torch.tensor(clip, dtype=torch.long)])
    torch.testing.assert_close(squash, expected)
