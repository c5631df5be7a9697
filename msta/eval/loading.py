"""Which model an evaluation runs: the config to use, the adapters to load, and what to call it in the report.

Rules (the same for every script):
- ``--cfg`` given: its ``model`` section builds the model; a checkpoint's embedded config is only compared with it
  (a difference is logged; adapter shapes that do not match fail in ``load_adapter_state_dict`` with the reason).
- no ``--cfg`` (``predict.py`` only): the checkpoint's embedded config is the config.
- no checkpoint: the frozen CLIP baseline, with every adapter switched off, so the numbers are those of the
  pretrained model itself and not of randomly initialised adapters.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from msta.config import ExperimentCfg, ModelCfg, apply_overrides, config_from_dict, config_to_dict, load_config

__all__ = ["LoadedCheckpoint", "read_checkpoint", "resolve_config", "baseline_model_cfg", "build_eval_model"]

_logger = logging.getLogger(__name__)


@dataclass
class LoadedCheckpoint:
    """Adapters (``msta.adapters_io``: a folder, a Hub id or an old ``.pt``) as the evaluators use them.

    Attributes:
        path: the adapters as given by the user (recorded in results.json).
        state_dict: the adapter tensors.
        config: the training run's resolved config.
        class_names, raw_labels, templates: the class prompts the run trained with (empty for a caption run,
            loss.kind infonce: the evaluation config names the classes).
    """

    path: str
    state_dict: dict
    config: ExperimentCfg
    class_names: list[str]
    raw_labels: list[str]
    templates: list[str]

    @property
    def shots(self) -> int:
        return self.config.data.shots


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Reads adapters (anything ``msta.adapters_io.resolve_adapters`` accepts) and validates their config.

    Raises:
        FileNotFoundError: nothing there. ValueError (``AdaptersFileError``, ``ConfigError``): not valid adapters.
    """
    from msta.adapters_io import load_adapters

    payload = load_adapters(path)
    return LoadedCheckpoint(str(path), payload["state_dict"], config_from_dict(payload["config"]),
                            list(payload.get("class_names", [])), list(payload.get("raw_labels", [])),
                            list(payload.get("templates", [])))


def resolve_config(cfg_path: Optional[str], ckpt: Optional[LoadedCheckpoint],
                   opts: Optional[list[str]] = None) -> ExperimentCfg:
    """The config of an evaluation run (see the module rules).

    Args:
        cfg_path: ``--cfg``, or None to use the checkpoint's embedded config.
        ckpt: the first checkpoint, if any.
        opts: dotted overrides applied on top (``--opts``).

    Raises:
        ValueError: neither a config nor a checkpoint.
    """
    if cfg_path:
        cfg = load_config(cfg_path, opts)
        if ckpt is not None:
            ours, theirs = config_to_dict(cfg.model), config_to_dict(ckpt.config.model)
            diff = {k: (theirs.get(k), v) for k, v in ours.items()
                    if theirs.get(k) != v and k != "init_adapters"}   # where training started, not the model
            if diff:
                _logger.warning("model config differs from the checkpoint's (%s) in %s; using --cfg's",
                                ckpt.path, ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items()))
        return cfg
    if ckpt is None:
        raise ValueError("give --cfg, or --ckpt (whose embedded config is then used)")
    return config_from_dict(apply_overrides(config_to_dict(ckpt.config), opts or []))


def baseline_model_cfg(cfg: ModelCfg) -> ModelCfg:
    """``cfg`` with every adapter disabled: the frozen CLIP the adapters start from."""
    return dataclasses.replace(cfg, msta=dataclasses.replace(cfg.msta, enabled=False),
                               st_adapter=dataclasses.replace(cfg.st_adapter, enabled=False))


def build_eval_model(cfg: ModelCfg, ckpt: Optional[LoadedCheckpoint] = None, *, device=None):
    """Builds the model, loads the checkpoint's adapters (or disables adapters without one), sets eval mode.

    Args:
        cfg: the model config.
        ckpt: the adapters to load (None: the frozen baseline).
        device: where to put the model (default: leave it on the CPU); ``msta.devices.select_device`` picks one.

    Returns:
        A ``VideoCLIP`` on ``device``, in eval mode.
    """
    from msta.models import build_model

    model = build_model(cfg if ckpt is not None else baseline_model_cfg(cfg))
    if ckpt is not None:
        model.load_adapter_state_dict(ckpt.state_dict)
        _logger.info("loaded adapters from %s", ckpt.path)
    else:
        _logger.info("no checkpoint: evaluating frozen %s (%s) without adapters", cfg.name,
                     cfg.pretrained or "random init")
    if device is not None:
        model.to(device)
    return model.eval()
