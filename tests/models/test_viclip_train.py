"""ViCLIP through the engine (issue 15.3): the same config keys train MSTA + ST-Adapters on viclip-tiny end to end,
from a checkpoint file in the released layout, with ViCLIP's preprocessing and the description cache."""
import json

import pytest
import torch

from msta.config import load_config
from msta.engine.launch import dry_run
from msta.models.backbones.viclip import VICLIP_SIZES, ViCLIP
from tests.engine.helpers import tiny_config, write_dataset


@pytest.mark.slow
def test_viclip_tiny_trains_through_the_engine(tmp_path, launcher_env):
    from msta.engine.launch import train
    data_keys = write_dataset(tmp_path / "synthetic", per_class=3, val=1)
    torch.manual_seed(0)
    weights = tmp_path / "ViCLIP-tiny.pth"
    state = ViCLIP(VICLIP_SIZES["viclip-tiny"], "viclip-tiny").state_dict()
    state["temp"] = state["temp"].reshape(())  # as the released files store it
    torch.save({"model": state}, weights)
    path = tiny_config(tmp_path, data_keys,
                       model={"name": "viclip-tiny", "pretrained": str(weights),
                              "msta": {"text_blocks": [-1, -1], "vision_blocks": [1, -1], "dim": 32, "scale": 0.1},
                              "st_adapter": {"enabled": True, "blocks": [-1, -1], "width": 16}},
                       data={"eval_resize": "squash"}, optim={"epochs": 2, "warmup_epochs": 1})
    cfg = load_config(path)
    assert dry_run(cfg)[1:] == ["  text.2-2 of 2 msta r=32", "  visual.1-2 of 2 msta r=32 temporal k=3",
                                "  visual.2-2 of 2 st w=16 mlp"]
    train(cfg)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert list((tmp_path / "cache").rglob("*.pt")), "description embeddings cached for the ViCLIP checkpoint"
