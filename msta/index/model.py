"""The model behind an index: which weights and adapters embed the videos, and the identity that proves it.

This module is the index's only seam to the rest of msta's model loading (today ``msta.eval.loading``); the
builder, the search and the web page see an ``IndexModel`` only.

The identity of an index is what its embeddings depend on: the open_clip model name, the weights (a tag, or the
sha256 of a local file), the adapters (the sha256 of their tensors, or ``"none"`` for frozen CLIP), the frames
per clip, the input size and the test views (clips, crops, sampling). Two indexes, or an index and a model, with
different identities are not comparable: the embeddings live in different spaces.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["IndexModel", "load_index_model", "adapters_sha256", "pick_device", "IDENTITY_KEYS"]

_logger = logging.getLogger(__name__)

# what the embeddings depend on; compared key by key when an index is reopened
IDENTITY_KEYS = ("model", "weights", "adapters", "num_frames", "input_size", "clips", "crops", "sampling", "stride")


def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given, else the first CUDA GPU when one is visible, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def adapters_sha256(state_dict: dict[str, Tensor]) -> str:
    """sha256 over the tensors' names, shapes and fp32 bytes, in sorted name order (adapters, or any state dict)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size/mtime in the key: a rewritten file rehashes
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights_identity(pretrained: str) -> str:
    path = Path(pretrained).expanduser()
    if path.is_file():
        st = path.stat()
        return "sha256:" + _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)
    return f"tag:{pretrained}"


@dataclass
class IndexModel:
    """A ``VideoCLIP`` in eval mode with the settings and identity an index needs.

    Attributes:
        model: the video-text model (on ``device``).
        cfg: the resolved ``ExperimentCfg`` (model, data sampling, eval views, text prompts).
        ckpt_path: the adapters file as given (absolute), or None for frozen CLIP.
        identity: ``IDENTITY_KEYS`` -> value (see the module docstring).
        class_names, templates: the checkpoint's own classes and templates (empty without a checkpoint).
        device: where the model runs.
    """

    model: torch.nn.Module
    cfg: object
    ckpt_path: Optional[str]
    identity: dict
    class_names: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def image_size(self) -> int:
        size = self.model.image_size
        return size if isinstance(size, int) else int(size[0])

    @property
    def num_views(self) -> int:
        views = self.cfg.eval.views
        return views.clips * views.crops

    def read_views(self, path: str | os.PathLike) -> Tensor:
        """Decodes the test views of one video as the evaluators do.

        Returns:
            (V, T, C, H, W) float CLIP-normalised views.

        Raises:
            msta.data.decoding.VideoDecodeError: missing, empty, too short or undecodable.
        """
        from msta.eval.predict import read_views

        return read_views(path, num_frames=self.cfg.model.num_frames, image_size=self.image_size,
                          mean=self.model.image_mean, std=self.model.image_std, data=self.cfg.data,
                          views=self.cfg.eval.views)

    @torch.no_grad()
    def embed_views(self, videos: Sequence[Tensor]) -> Tensor:
        """Embeds a batch of videos, all views of all videos in one forward.

        Args:
            videos: B tensors (V, T, C, H, W).

        Returns:
            (B, V, E) float32 L2-normalised view embeddings on the CPU.
        """
        batch = torch.stack(list(videos)).to(self.device, torch.float32)       # (B, V, T, C, H, W)
        b, v = batch.shape[:2]
        return self.model.encode_video(batch.flatten(0, 1)).float().view(b, v, -1).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """(N,) raw texts (no template) -> (N, E) float32 L2-normalised embeddings on the CPU."""
        ids = self.model.tokenize(list(texts)).to(self.device)
        return self.model.encode_text(ids).float().cpu()

    @torch.no_grad()
    def embed_classes(self, names: Sequence[str], templates: Sequence[str]) -> Tensor:
        """(C,) readable class names -> (C, E) template-ensembled class embeddings (float32, CPU)."""
        from msta.eval.evaluator import ClassBank

        return ClassBank(self.model)(list(names), list(templates)).float().cpu()

    @torch.no_grad()
    def logit_scale(self) -> float:
        from msta.eval.evaluator import logit_scale_of

        return float(logit_scale_of(self.model))


def load_index_model(ckpt: Optional[str] = None, cfg: Optional[str] = None, opts: Optional[list[str]] = None, *,
                     config_dict: Optional[dict] = None, device: Optional[str] = None) -> IndexModel:
    """Builds the model an index is made with.

    Args:
        ckpt: adapters file (its embedded config is the config unless ``cfg`` is given), or None.
        cfg: experiment YAML, or None.
        opts: dotted overrides.
        config_dict: a resolved config as an index stores it (used when neither ``cfg`` nor ``ckpt`` names one).
        device: e.g. "cuda:0" (default: a GPU when present, else the CPU).

    Raises:
        ConfigError, FileNotFoundError, ValueError: a bad config, missing file or mismatching adapters (the
            CLI turns these into one message and exit code 2).
    """
    from msta.config import ExperimentCfg, ModelCfg, apply_overrides, config_from_dict
    from msta.eval.loading import build_eval_model, read_checkpoint, resolve_config

    loaded = read_checkpoint(ckpt) if ckpt else None
    if cfg or (loaded is not None and config_dict is None):
        exp = resolve_config(cfg, loaded, opts)
    elif config_dict is not None:
        exp = config_from_dict(apply_overrides(config_dict, opts or []))
    else:  # as predict.py: frozen CLIP ViT-B/16 with OpenAI weights
        exp = ExperimentCfg(model=ModelCfg(name="ViT-B-16", pretrained="openai"))
    dev = pick_device(device)
    if exp.model.pretrained:
        model = build_eval_model(exp.model, loaded, device=dev)
        weights = _weights_identity(exp.model.pretrained)
    else:
        # random init (tests, tiny models): seeded, so that a query-time rebuild makes the same weights, and
        # identified by the weights themselves, so that a rebuild that does not (another torch) is refused
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_eval_model(exp.model, loaded)
        frozen = {k: p for k, p in model.named_parameters() if not p.requires_grad}   # CLIP's own, not adapters
        weights = "random-init:sha256:" + adapters_sha256(frozen)
        model.to(dev)
    size = model.image_size if isinstance(model.image_size, int) else int(model.image_size[0])
    views = exp.eval.views
    identity = {
        "model": exp.model.name, "weights": weights,
        "adapters": adapters_sha256(loaded.state_dict) if loaded is not None else "none",
        "num_frames": exp.model.num_frames, "input_size": size, "clips": views.clips, "crops": views.crops,
        "sampling": exp.data.sampling, "stride": exp.data.stride if exp.data.sampling == "dense" else 0,
    }
    path = str(Path(ckpt).resolve()) if ckpt else None
    _logger.debug("index model: %s on %s", identity, dev)
    return IndexModel(model, exp, path, identity, list(loaded.class_names) if loaded else [],
                      list(loaded.templates) if loaded else [], dev)
