"""Checkpoint sizes: the adapters-only file the trainer writes vs ``torch.save`` of the full model state dict."""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Optional

import torch

from msta.bench.train_step import TrainSpec, model_cfg

__all__ = ["run_ckpt_bench"]

_logger = logging.getLogger(__name__)


def run_ckpt_bench(spec: TrainSpec, work_dir: Optional[str] = None) -> dict:
    """Writes both files for ``spec``'s model and returns their sizes in bytes and the ratio.

    The adapters-only file is the adapters folder training writes (``msta.adapters_io.save_adapters``:
    model.safetensors + config.json with the resolved config, class names and templates, as ``run/best/``), counted
    as the sum of its two files; the full file is ``torch.save(model.state_dict())``.
    """
    from msta.config import ExperimentCfg, config_to_dict
    from msta.adapters_io import adapter_payload, save_adapters
    from msta.models import build_model

    torch.manual_seed(0)
    cfg = ExperimentCfg(model=model_cfg(spec))
    model = build_model(cfg.model)
    names = [f"class {c}" for c in range(spec.num_classes)]
    payload = adapter_payload(state_dict=model.adapter_state_dict(), config=config_to_dict(cfg), class_names=names,
                              raw_labels=[n.replace(" ", "_") for n in names], templates=["a video of {}."],
                              step=0, epoch=0)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        adapters = save_adapters(payload, os.path.join(tmp, "adapters"))
        full = os.path.join(tmp, "full.pt")
        torch.save(model.state_dict(), full)
        a_bytes, f_bytes = sum(f.stat().st_size for f in adapters.iterdir()), os.path.getsize(full)
    report = model.param_report()
    result = {"kind": "ckpt", **spec.to_dict(), "adapters_bytes": a_bytes, "full_bytes": f_bytes,
              "ratio": a_bytes / f_bytes, "trainable": report.trainable, "total_params": report.total}
    _logger.info("%s: adapters %.2f MB, full %.1f MB (%.2f %%)", spec.name, a_bytes / 1e6, f_bytes / 1e6,
                 100 * a_bytes / f_bytes)
    return result
