"""What the evaluation scripts call: build the model once, run a protocol over one or more checkpoints, write.

- ``run_protocol(cfg, protocol, checkpoints, out_dir)``: zeroshot / fewshot / supervised evaluate each checkpoint
  (or the frozen baseline when there is none) into its own folder; several few-shot checkpoints are gathered into
  one table; base-to-novel treats the checkpoints as its seeds.
- ``run_zeroshot(cfg, checkpoint, out_dir)``: every target of ``eval.targets`` (or ``cfg`` itself), one model.

Both take ``device=`` (``msta.devices``: CUDA when present, the training precision under autocast on a GPU) and
work the same under ``torchrun``: every process scores its share of the videos, rank 0 writes the one results.json.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch

from msta.config import ConfigError, ExperimentCfg, load_config
from msta.devices import autocast, autocast_dtype, select_device, world
from msta.adapters_io import CONFIG_FILE, HUB_PREFIX
from msta.eval import protocols as P
from msta.eval.evaluator import ClassBank
from msta.eval.fewshot import gather_fewshot
from msta.eval.loading import LoadedCheckpoint, build_eval_model
from msta.eval.outputs import MARKDOWN_FILE
from msta.eval.report import EvalRecord, render_markdown

__all__ = ["PROTOCOLS", "default_out_dir", "placement", "run_protocol", "zeroshot_targets", "run_zeroshot"]

_logger = logging.getLogger(__name__)

PROTOCOLS = ("zeroshot", "fewshot", "b2n", "supervised", "retrieval")


def default_out_dir(protocol: str, checkpoint: Optional[LoadedCheckpoint], cfg: ExperimentCfg) -> Path:
    """``<run>/eval_<protocol>`` next to the adapters (``run/best`` -> ``run/eval_<protocol>``; a checkpoint step
    folder gets its own), else ``runs/eval/<name>_<protocol>`` (also for ``hf-hub:`` ids).

    Never inside an adapters folder: training replaces ``best/`` whole, which would take the results with it.
    """
    if checkpoint is not None and not checkpoint.path.startswith(HUB_PREFIX):
        path = Path(checkpoint.path)
        inside = path.is_dir() and (path / CONFIG_FILE).is_file()
        folder = path.parent if path.suffix == ".pt" or not path.is_dir() or inside else path
        return folder / f"eval_{protocol}"
    return Path("runs") / "eval" / f"{cfg.name}_{protocol}"


def _one(cfg: ExperimentCfg, protocol: str, model, ckpt: Optional[LoadedCheckpoint], out: Path) -> EvalRecord:
    if protocol == "zeroshot":
        return P.zeroshot(cfg, model, checkpoint=ckpt, out_dir=out)
    if protocol == "fewshot":
        return P.fewshot(cfg, model, checkpoint=ckpt, out_dir=out)
    if protocol == "retrieval":
        return P.retrieval(cfg, model, checkpoint=ckpt, out_dir=out)
    return P.supervised(cfg, model, checkpoint=ckpt, out_dir=out)


def placement(cfg: ExperimentCfg, device: Optional[str | torch.device] = None
              ) -> tuple[torch.device, contextlib.AbstractContextManager]:
    """The device to evaluate on and the autocast context of the run's precision there (``msta.devices``).

    Args:
        cfg: the config (``train.precision``: the training precision, used under autocast on a GPU).
        device: a device or ``--device`` string; None picks like the trainer (CUDA when present).
    """
    device = device if isinstance(device, torch.device) else select_device(device)
    dtype = autocast_dtype(device, cfg.train.precision)
    _logger.info("evaluating on %s in %s", device, f"{dtype} autocast" if dtype is not None else "fp32")
    return device, autocast(device, dtype)


def run_protocol(cfg: ExperimentCfg, protocol: str, checkpoints: Sequence[LoadedCheckpoint] = (),
                 out_dir: Optional[str | Path] = None, *, device: Optional[str | torch.device] = None
                 ) -> list[EvalRecord]:
    """Runs ``protocol`` for ``checkpoints`` (none: the frozen CLIP baseline) and writes the outputs.

    Args:
        cfg: the evaluation config (its ``model`` section builds the model).
        protocol: one of ``PROTOCOLS``.
        checkpoints: adapters-only files; for b2n the seeds, otherwise evaluated one by one.
        out_dir: output folder; with several checkpoints each gets a sub-folder named after its file.
        device: see ``placement``. Under several evaluation processes each scores its share and rank 0 writes.

    Returns:
        The records written (b2n: one).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "zeroshot":
        if len(checkpoints) > 1:
            raise ValueError("zero-shot evaluates one checkpoint at a time")
        return run_zeroshot(cfg, checkpoints[0] if checkpoints else None, out_dir, device=device)
    device, precision = placement(cfg, device)
    with precision:
        return _run_protocol(cfg, protocol, checkpoints, out_dir, device)


def _run_protocol(cfg: ExperimentCfg, protocol: str, checkpoints: Sequence[LoadedCheckpoint],
                  out_dir: Optional[str | Path], device: torch.device) -> list[EvalRecord]:
    model = build_eval_model(cfg.model, checkpoints[0] if checkpoints else None, device=device)
    if protocol == "b2n":
        out = Path(out_dir) if out_dir else default_out_dir(protocol, checkpoints[0] if checkpoints else None, cfg)
        return [P.base_to_novel(cfg, model, list(checkpoints) or [None], out_dir=out)]
    records, outs = [], []
    for i, ckpt in enumerate(checkpoints or [None]):
        if ckpt is not None and i > 0:
            model.load_adapter_state_dict(ckpt.state_dict)
        if out_dir is None:
            out = default_out_dir(protocol, ckpt, cfg)
        else:
            out = Path(out_dir) if len(checkpoints) <= 1 else Path(out_dir) / _run_name(ckpt, i)
        records.append(_one(cfg, protocol, model, ckpt, out))
        outs.append(out)
    if protocol == "fewshot" and len(records) > 1 and world()[0] == 0:
        summary_dir = Path(out_dir) if out_dir else Path("runs") / "eval" / f"{cfg.name}_fewshot_gathered"
        gather_fewshot(outs, summary_dir)
    return records


def _run_name(ckpt: Optional[LoadedCheckpoint], i: int) -> str:
    if ckpt is None:
        return f"run{i}"
    path = Path(ckpt.path)
    return (path.parent.name if path.suffix == ".pt" else path.name) or f"run{i}"


def zeroshot_targets(cfg: ExperimentCfg) -> list[tuple[str, ExperimentCfg]]:
    """The (path, config) of every entry of ``cfg.eval.targets``, or ``[("", cfg)]`` when it names none.

    Target paths follow the one path rule of ``msta.resources`` (applied by ``load_config``): relative to the working
    directory, else the shipped ``configs/`` copy; the data paths inside a target stay relative to the working
    directory.

    Raises:
        ConfigError: a target file that does not exist or does not validate, naming ``eval.targets``.
    """
    out = []
    for t in cfg.eval.targets:
        if not Path(t).is_file():
            raise ConfigError(f"eval.targets: {t} not found (relative to the working directory {Path.cwd()}, nor a "
                              "shipped config); give an existing config file or a shipped config's path such as "
                              "configs/zeroshot_hmdb.yaml")
        try:
            out.append((t, load_config(t)))
        except ConfigError as e:
            raise ConfigError(f"eval.targets: {e}") from None
    return out or [("", cfg)]


def run_zeroshot(cfg: ExperimentCfg, checkpoint: Optional[LoadedCheckpoint] = None,
                 out_dir: Optional[str | Path] = None, *, device: Optional[str | torch.device] = None
                 ) -> list[EvalRecord]:
    """Zero-shot on every target of ``cfg.eval.targets`` (configs whose data/text/eval describe a target dataset),
    or on ``cfg``'s own data when it names none. One model serves all targets.

    Args:
        device: see ``placement``.

    Returns:
        One record per target; with several, ``<out_dir>/results.md`` also gets a one-line-per-target summary.
    """
    out = Path(out_dir) if out_dir else default_out_dir("zeroshot", checkpoint, cfg)
    targets = zeroshot_targets(cfg)   # before the model: a wrong path fails in a second, not after a build
    device, precision = placement(cfg, device)
    with precision:
        return _run_zeroshot(cfg, checkpoint, out, targets, device)


def _run_zeroshot(cfg: ExperimentCfg, checkpoint: Optional[LoadedCheckpoint], out: Path,
                  targets: list[tuple[str, ExperimentCfg]], device: torch.device) -> list[EvalRecord]:
    model = build_eval_model(cfg.model, checkpoint, device=device)
    bank = ClassBank(model)   # targets that share a class set (rare) share its embeddings too
    records = []
    for path, target in targets:
        # the model and its frames are the evaluated run's; data, prompts and splits are the target's
        tcfg = dataclasses.replace(target, model=cfg.model)
        where = out / target.data.dataset if len(targets) > 1 else out
        if path:
            _logger.info("zero-shot target %s (%s)", target.data.dataset, path)
        if tcfg.eval.protocol == "retrieval":     # a caption-list target: zero-shot text <-> video retrieval
            records.append(P.retrieval(tcfg, model, checkpoint=checkpoint, out_dir=where))
        else:
            records.append(P.zeroshot(tcfg, model, checkpoint=checkpoint, out_dir=where, bank=bank))
    if len(records) > 1 and world()[0] == 0:
        rows = {r.dataset: {"top1": r.metrics.get("top1_mean"), "±": r.metrics.get("top1_std"),
                            "half-class top1": r.metrics.get("half_top1_mean")} for r in records}
        text = ("# zero-shot summary (mean over splits; details in each folder)\n\n"
                + render_markdown(rows, summary=False))
        (out / MARKDOWN_FILE).write_text(text, encoding="utf-8")
    return records
