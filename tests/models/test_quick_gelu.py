"""Every model is built with the activation its weights were trained with (issue 13.1), without downloads.

open_clip's own config merging runs for real; only the download, the checkpoint load and (for the all-pairs test)
the model class are stubbed, so what is checked is the ``quick_gelu`` the model class really receives.
"""
import logging
import warnings

import open_clip
import open_clip.factory as ocf
import pytest
import torch
from torch import nn

import msta.models  # noqa: F401  (registers msta-tiny)
from msta.config import ConfigError, ModelCfg, MstaCfg, config_from_dict
from msta.models import build_model
from msta.models.backbones.open_clip_build import check_supported, create_clip, resolve_quick_gelu


def _plain_clip_pairs():
    """(model, tag) pairs open_clip lists whose model is a plain CLIP ViT (the names msta accepts)."""
    pairs = []
    for name, tag in open_clip.list_pretrained():
        try:
            check_supported(name)
        except ConfigError:
            continue
        pairs.append((name, tag))
    return pairs


PAIRS = _plain_clip_pairs()


def test_pairs_cover_the_shipped_names():
    names = {n for n, _ in PAIRS}
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-B-16-quickgelu"} <= names
    assert len(PAIRS) > 80  # open_clip 3.3 lists 118 ViT pairs; RN / SigLIP / EVA / CoCa are rejected


class _Recorder(nn.Module):
    """Stands in for open_clip's model class: records the config it is built with."""
    seen: list = []

    def __init__(self, **cfg):
        super().__init__()
        _Recorder.seen.append(cfg)


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    fake = tmp_path / "weights.bin"
    fake.write_bytes(b"")
    monkeypatch.setattr(ocf, "download_pretrained", lambda *a, **k: str(fake))
    monkeypatch.setattr(ocf, "load_checkpoint", lambda *a, **k: None)
    return fake


def test_every_listed_pair_gets_its_declared_activation(no_download, monkeypatch):
    monkeypatch.setattr(ocf, "CLIP", _Recorder)
    _Recorder.seen.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # open_clip's "QuickGELU mismatch" warning must not fire
        for name, tag in PAIRS:
            create_clip(name, tag)
    declared = [bool(open_clip.get_pretrained_cfg(n, t).get("quick_gelu", False)) for n, t in PAIRS]
    built = [bool(cfg.get("quick_gelu", False)) for cfg in _Recorder.seen]
    assert built == declared
    assert sum(declared) > 20 and not all(declared)  # both kinds of tags are exercised


def _activations(module: nn.Module) -> set[str]:
    return {type(blk.mlp.gelu).__name__ for blk in module.transformer.resblocks}


@pytest.mark.slow
def test_vit_b16_openai_has_quick_gelu_in_both_towers(no_download, caplog):
    with caplog.at_level(logging.INFO, logger="msta.models.factory"), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = build_model(ModelCfg(name="ViT-B-16", pretrained="openai", msta=MstaCfg(enabled=False)))
    assert _activations(model.clip) == {"QuickGELU"}
    assert _activations(model.clip.visual) == {"QuickGELU"}
    assert "ViT-B-16 activation: QuickGELU (declared by tag 'openai')" in caplog.text
    x = torch.randn(4)
    assert torch.allclose(model.clip.transformer.resblocks[0].mlp.gelu(x), x * torch.sigmoid(1.702 * x))


def test_gelu_tag_and_local_file_rules(tmp_path):
    assert not resolve_quick_gelu("ViT-B-16", "laion2b_s34b_b88k").quick_gelu
    assert resolve_quick_gelu("ViT-B-16", "openai").quick_gelu
    with pytest.raises(ConfigError, match="model.quick_gelu=false contradicts the weights.*'openai'"):
        resolve_quick_gelu("ViT-B-16", "openai", False)
    f = tmp_path / "w.pt"
    f.write_bytes(b"")
    assert not resolve_quick_gelu("ViT-B-16", str(f)).quick_gelu  # unknown file: the config's own (GELU), hinted
    assert "does not record its activation" in resolve_quick_gelu("ViT-B-16", str(f)).reason
    assert resolve_quick_gelu("ViT-B-16-quickgelu", str(f)).quick_gelu
    assert resolve_quick_gelu("ViT-B-16", str(f), True).quick_gelu
    # a file inside the Hugging Face cache entry of the openai tag is that tag's download
    cached = tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "abc"
    cached.mkdir(parents=True)
    (cached / "open_clip_pytorch_model.bin").write_bytes(b"")
    choice = resolve_quick_gelu("ViT-B-16", str(cached / "open_clip_pytorch_model.bin"))
    assert choice.quick_gelu and "'openai'" in choice.reason


def test_local_file_activation_follows_the_key(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "w.pt"
    torch.save(open_clip.create_model("msta-tiny").state_dict(), path)
    for setting, expected in (("auto", "GELU"), (True, "QuickGELU"), (False, "GELU")):
        model = build_model(ModelCfg(name="msta-tiny", pretrained=str(path), quick_gelu=setting,
                                     msta=MstaCfg(enabled=False)))
        assert _activations(model.clip) == _activations(model.clip.visual) == {expected}


def test_config_key_values():
    assert config_from_dict({"model": {"quick_gelu": True}}).model.quick_gelu is True
    assert config_from_dict({"model": {"quick_gelu": "auto"}}).model.quick_gelu == "auto"
    with pytest.raises(ConfigError, match="model.quick_gelu must be auto, true or false"):
        config_from_dict({"model": {"quick_gelu": "yes"}})


@pytest.mark.parametrize("name, why", [("ViT-B-16-SigLIP", "timm model"), ("EVA02-B-16", "timm model"),
                                       ("RN50", "ModifiedResNet"), ("coca_ViT-B-32", "CoCa")])
def test_unsupported_towers_are_rejected_before_building(name, why):
    with pytest.raises(ConfigError, match=f"model.name='{name}' is not supported: .*{why}"):
        build_model(ModelCfg(name=name))
