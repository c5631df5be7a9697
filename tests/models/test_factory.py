"""build_model: weight sources, name and range errors, freezing, tiny registered configs."""
import open_clip
import pytest
import torch

import msta.models  # noqa: F401  (registers msta-tiny / msta-demo)
from msta.config import ConfigError, ModelCfg, MstaCfg
from msta.models import build_model


def test_tiny_configs_registered():
    assert {"msta-tiny", "msta-demo"} <= set(open_clip.list_models())
    demo = build_model(ModelCfg(name="msta-demo", msta=MstaCfg(dim=32, text_blocks=(3, 4), vision_blocks=(3, 4))))
    assert demo.context_length == 32 and demo.image_size == 32
    assert demo.encode_video(torch.randn(1, 2, 3, 32, 32)).shape == (1, 64)


def test_local_file_loads_bit_exact(tmp_path):
    torch.manual_seed(5)
    clip = open_clip.create_model("msta-tiny", pretrained=None)
    path = tmp_path / "w.pt"
    torch.save(clip.state_dict(), path)
    model = build_model(ModelCfg(name="msta-tiny", pretrained=str(path), msta=MstaCfg(enabled=False)))
    got = {k[len("clip."):]: v for k, v in model.state_dict().items()}
    for k, v in clip.state_dict().items():
        assert torch.equal(got[k].reshape(v.shape), v), k


def test_freezing_and_log(caplog):
    with caplog.at_level("INFO", logger="msta.models.factory"):
        model = build_model(ModelCfg(name="msta-tiny", msta=MstaCfg(dim=16, text_blocks=(1, 2),
                                                                      vision_blocks=(1, 2))))
    assert all(p.requires_grad == n.startswith("adapters.") for n, p in model.named_parameters())
    assert model.param_report().line() in caplog.text


def test_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'ViT-B-16'"):
        build_model(ModelCfg(name="ViT-B-61"))
    missing = tmp_path / "nope.pt"
    with pytest.raises(ValueError, match="nope.pt"):
        build_model(ModelCfg(name="msta-tiny", pretrained=str(missing)))
    with pytest.raises(ValueError, match="neither a file nor an open_clip tag"):
        build_model(ModelCfg(name="msta-tiny", pretrained="laion2b_nope"))
    with pytest.raises(ValueError, match=r"model.msta.text_blocks=\[8, 12\] exceeds the 2 blocks"):
        build_model(ModelCfg(name="msta-tiny", msta=MstaCfg(text_blocks=(8, 12))))
    with pytest.raises(ValueError, match=r"model.msta.text_blocks=\[-5, -1\] \(blocks -2-2\) exceeds the 2 blocks"):
        build_model(ModelCfg(name="msta-tiny"))
