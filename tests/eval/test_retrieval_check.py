"""The retrieval check anyone can run: on synthetic captioned clips, the frozen tiny CLIP against the same CLIP with
MSTA adapters trained by InfoNCE, text <-> video retrieval on held-out clips before and after.

16 training and 3 held-out videos per class (4 colour + shape classes, every clip moving one of four ways), 2
captions each ("a red square moving left"); msta-tiny with random frozen weights, adapters in its 2 visual blocks
and last text block; 10 epochs of batch 8 through scripts/train.py. Measured (12 held-out videos, 24 captions):
text -> video R@1 8.3 % frozen -> 37.5 % adapted, R@5 37.5 -> 100 %, MdR 7 -> 2.

The frozen backbone is a random initialisation, so both evaluations build it from the training seed (as the
training did): adapters only mean something on the backbone they were trained on.
"""
import json
from pathlib import Path

import pytest
import torch

from tests.engine.helpers import run_train, tiny_config, write_dataset


@pytest.mark.slow
def test_adapted_tiny_clip_retrieves_held_out_clips_better_than_frozen(tmp_path):
    from msta.eval.loading import read_checkpoint, resolve_config
    from msta.eval.runner import run_protocol

    keys = write_dataset(tmp_path / "ds", captions=True, per_class=16, val=3)
    cfg = tiny_config(tmp_path, keys, train={"batch_size": 8, "micro_batch": 8, "eval_every": 2},
                      eval={"protocol": "retrieval"})
    proc = run_train(cfg, tmp_path, "--opts", "optim.epochs=10", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    frozen_cfg = resolve_config(str(cfg), None, [])
    torch.manual_seed(frozen_cfg.train.seed)
    frozen = run_protocol(frozen_cfg, "retrieval", (), tmp_path / "eval_frozen")[0]
    ckpt = read_checkpoint(tmp_path / "run" / "best")
    torch.manual_seed(ckpt.config.train.seed)
    adapted = run_protocol(resolve_config(str(cfg), ckpt, []), "retrieval", [ckpt], tmp_path / "eval_adapted")[0]

    assert frozen.num_videos == adapted.num_videos == 12
    before, after = frozen.metrics, adapted.metrics
    assert after["t2v_r1"] >= before["t2v_r1"] + 15, (before, after)
    assert after["t2v_r5"] >= before["t2v_r5"] + 30 and after["t2v_medr"] < before["t2v_medr"], (before, after)
    assert after["v2t_r1"] > before["v2t_r1"], (before, after)
    saved = json.loads(Path(tmp_path / "eval_adapted" / "results.json").read_text())
    assert saved["checkpoint"] and saved["metrics"]["t2v_r1"] == after["t2v_r1"]
