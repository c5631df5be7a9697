"""Exact trainable counts on ViT-B-16 (random init; no forward pass on the big model)."""
import copy

import open_clip
import pytest

from msta.config import ModelCfg, MstaCfg, StAdapterCfg
from msta.models import VideoCLIP


@pytest.fixture(scope="module")
def vit_b16():
    return open_clip.create_model("ViT-B-16", pretrained=None)  # one creation, deep-copied per case


@pytest.mark.parametrize("cfg, expected", [
    (ModelCfg(msta=MstaCfg(dim=256, text_blocks=(1, 12), vision_blocks=(1, 12))), 8_712_192),
    (ModelCfg(msta=MstaCfg(dim=128, text_blocks=(8, 12), vision_blocks=(8, 12))), 1_744_000),
    (ModelCfg(msta=MstaCfg(enabled=False), st_adapter=StAdapterCfg(enabled=True, blocks=(1, 12), width=384)),
     7_110_144),
], ids=["msta-r256-1-12", "msta-r128-8-12", "st-12x384-mlp"])
def test_vit_b16_trainable_counts(vit_b16, cfg, expected):
    model = VideoCLIP(copy.deepcopy(vit_b16), cfg, open_clip.get_tokenizer("ViT-B-16"))
    model.freeze_backbone()
    report = model.param_report()
    assert report.trainable == expected
    assert report.total == sum(p.numel() for p in vit_b16.parameters()) + expected
