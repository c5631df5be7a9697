"""Adapter block ranges fit any depth (issue 16.7): negative indices count from the end, on every claimed tower.

The claimed open_clip towers (ViT-B-32, ViT-B-16, ViT-L-14) are built on the meta device (shapes only, no
initialisation cost), so the 24-block ViT-L/14 costs milliseconds.
"""
import open_clip
import pytest
import torch

import msta.models  # noqa: F401
from msta.config import ConfigError, ExperimentCfg, ModelCfg, MstaCfg, StAdapterCfg, config_from_dict
from msta.engine.launch import dry_run
from msta.models import VideoCLIP
from msta.models.injection import AdaptedBlock, resolve_range


@pytest.mark.parametrize("blocks, n, expected", [((-5, -1), 12, (8, 12)), ((-5, -1), 24, (20, 24)),
                                                 ((8, -1), 24, (8, 24)), ((1, 12), 24, (1, 12)),
                                                 ((-1, -1), 2, (2, 2))])
def test_resolve_range(blocks, n, expected):
    assert resolve_range("model.msta.vision_blocks", blocks, n, "m") == expected


def test_out_of_depth_ranges_name_the_key_and_the_fix():
    with pytest.raises(ValueError, match=r"model.st_adapter.blocks=\[1, 24\] exceeds the 12 blocks of 'B'.*"
                                         r"\[-5, -1\]"):
        resolve_range("model.st_adapter.blocks", (1, 24), 12, "B")
    with pytest.raises(ValueError, match=r"\[-13, -1\] \(blocks 0-12\) exceeds the 12 blocks"):
        resolve_range("model.msta.text_blocks", (-13, -1), 12, "B")


@pytest.mark.parametrize("blocks", [[0, 3], [5, 4], [-1, -5], [-5, 12]])
def test_bad_ranges_are_config_errors(blocks):
    with pytest.raises(ConfigError, match=r"model.msta.vision_blocks must be \[first, last\].*\[-5, -1\] = the last"):
        config_from_dict({"model": {"msta": {"vision_blocks": blocks}}})


def _meta_clip(name):
    with torch.device("meta"):
        return open_clip.create_model(name, device="meta")


@pytest.mark.parametrize("name, text_depth, vis_depth", [("ViT-B-32", 12, 12), ("ViT-B-16", 12, 12),
                                                         ("ViT-L-14", 12, 24)])
def test_claimed_towers_get_the_last_blocks(name, text_depth, vis_depth):
    clip = _meta_clip(name)
    with torch.device("meta"):
        model = VideoCLIP(clip, ModelCfg(name=name, st_adapter=StAdapterCfg(enabled=True, blocks=(-2, -1))),
                          open_clip.get_tokenizer("ViT-B-16"))
    vis, text = clip.visual.transformer.resblocks, clip.transformer.resblocks
    adapted_vis = [i + 1 for i, b in enumerate(vis) if isinstance(b, AdaptedBlock)]
    adapted_text = [i + 1 for i, b in enumerate(text) if isinstance(b, AdaptedBlock)]
    assert adapted_vis == list(range(vis_depth - 4, vis_depth + 1))
    assert adapted_text == list(range(text_depth - 4, text_depth + 1))
    keys = f" (layers {vis_depth - 4}-{vis_depth})" if vis_depth != text_depth else ""
    assert model.param_report().blocks == [
        f"text.{text_depth - 4}-{text_depth} of {text_depth} msta r=128{keys}",
        f"visual.{vis_depth - 4}-{vis_depth} of {vis_depth} msta r=128 temporal k=3",
        f"visual.{vis_depth - 1}-{vis_depth} of {vis_depth} st w=384 mlp"]
    tw, vw = text[0].ln_1.normalized_shape[0], vis[0].ln_1.normalized_shape[0]
    r = 128
    per_layer = (tw * r + r + r * tw + tw) + (vw * r + r + r * vw + vw) + (r * r + r) + (vw * 3 + vw)
    st = 2 * (vw * 384 + 384 + 384 * 3 + 384 + 384 * vw + vw)
    model.freeze_backbone()
    assert model.param_report().trainable == 5 * per_layer + st  # five shared projections: the towers pair up
    # the last text block and the last visual block share one MSTA layer (towers aligned at their ends)
    assert text[-1]._refs[1] is vis[-1]._refs[1] is model.adapters["msta"][str(vis_depth)]
    if name == "ViT-B-16":
        assert 5 * per_layer == 1_744_000  # the paper's count, now from the relative default


def test_dry_run_names_the_resolved_blocks():
    cfg = ExperimentCfg(model=ModelCfg(name="msta-tiny", msta=MstaCfg(dim=16, text_blocks=(-1, -1),
                                                                      vision_blocks=(1, -1))))
    lines = dry_run(cfg)
    assert lines[1:] == ["  text.2-2 of 2 msta r=16", "  visual.1-2 of 2 msta r=16 temporal k=3"]
