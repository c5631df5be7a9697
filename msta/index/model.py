"""The model behind an index: which weights and adapters embed the videos, and the identity that proves it.

This module is the index's only seam to the rest of msta's model loading (``msta.load`` and its ``VideoModel``:
device, precision, views as the evaluators take them); the builder, the search and the web page see an
``IndexModel`` only.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["IndexModel", "load_index_model", "adapters_sha256", "IDENTITY_KEYS"]

_logger = logging.getLogger(__name__)

# what the embeddings depend on; compared key by key when an index is reopened
IDENTITY_KEYS = ("model", "weights", "adapters", "num_frames", "input_size", "clips", "crops", "sampling", "stride")


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
    """An ``msta.api.VideoModel`` with the identity an index needs.

    Attributes:
        video_model: the loaded model (``msta.load``): device, autocast precision, config, classes.
        ckpt_path: the adapters file as given (absolute), or None for frozen CLIP.
        identity: ``IDENTITY_KEYS`` -> value (see the module docstring).
    """

    video_model: object
    ckpt_path: Optional[str]
    identity: dict

    @property
    def model(self) -> torch.nn.Module:
        """The ``VideoCLIP`` (eval mode, on ``device``)."""
        return self.video_model.model

    @property
    def cfg(self):
        """The resolved ``ExperimentCfg`` (model, data sampling, eval views, text prompts)."""
        return self.video_model.cfg

    @property
    def device(self) -> torch.device:
        return self.video_model.device

    @property
    def class_names(self) -> list[str]:
        """The checkpoint's readable class names (empty without a checkpoint or for a caption run)."""
        return list(self.video_model.classes)

    @property
    def templates(self) -> list[str]:
        """The checkpoint's prompt templates (``["a video of {}."]`` without one)."""
        return list(self.video_model.templates)

    @property
    def num_views(self) -> int:
        views = self.cfg.eval.views
        return views.clips * views.crops

    def _autocast(self):
        from msta.devices import autocast

        return autocast(self.device, self.video_model.dtype)

    def decoder(self) -> Callable[[str | os.PathLike], Tensor]:
        """A picklable ``path -> (V, T, C, H, W)`` views function (``read_views`` without the model), for workers."""
        from msta.eval.predict import read_views

        vm = self.video_model
        return functools.partial(read_views, num_frames=vm.model.num_frames, image_size=vm._image_size,
                                 mean=vm.model.image_mean, std=vm.model.image_std, data=vm.cfg.data,
                                 views=vm.cfg.eval.views)

    def read_views(self, path: str | os.PathLike) -> Tensor:
        """Decodes the test views of one video as the evaluators do.

        Returns:
            (V, T, C, H, W) float CLIP-normalised views.

        Raises:
            msta.data.decoding.VideoDecodeError: missing, empty, too short or undecodable.
        """
        return self.video_model.views(Path(path))

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
        with self._autocast():
            emb = self.model.encode_video(batch.flatten(0, 1))
        return torch.nn.functional.normalize(emb.float(), dim=-1).view(b, v, -1).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """(N,) raw texts (no template) -> (N, E) float32 L2-normalised embeddings on the CPU."""
        return self.video_model.encode_text(list(texts))

    @torch.no_grad()
    def embed_classes(self, names: Sequence[str], templates: Sequence[str]) -> Tensor:
        """(C,) readable class names -> (C, E) template-ensembled class embeddings (float32, CPU)."""
        from msta.eval.evaluator import ClassBank

        with self._autocast():
            return ClassBank(self.model)(list(names), list(templates)).float().cpu()

    @torch.no_grad()
    def logit_scale(self) -> float:
        from msta.eval.evaluator import logit_scale_of

        return float(logit_scale_of(self.model))


def load_index_model(ckpt: Optional[str] = None, cfg: Optional[str] = None, opts: Optional[list[str]] = None, *,
                     config_dict: Optional[dict] = None, device: Optional[str] = None) -> IndexModel:
    """Loads the model an index is made with (``msta.load``), and its identity.

    Args:
        ckpt: adapters (a folder, ``run/best``, an old ``.pt``); its embedded config is the config unless ``cfg``
            is given; None: frozen CLIP (ViT-B/16 with OpenAI weights unless ``cfg`` or ``config_dict`` names one).
        cfg: experiment YAML, or None.
        opts: dotted overrides.
        config_dict: a resolved config as an index stores it (replaces ``cfg``; used to rebuild an index's model).
        device: "auto"/None (a GPU when present), "cpu", "cuda", "cuda:N".

    Raises:
        msta.errors.UserError: a bad config, a missing or unreadable adapters file, an unknown device.
    """
    from msta.api import VideoModel, load
    from msta.config import apply_overrides, config_from_dict
    from msta.devices import select_device
    from msta.eval.loading import build_eval_model, read_checkpoint

    dev = select_device(device)
    with torch.random.fork_rng(devices=[]):
        # random init (tests, tiny models): seeded, so that a query-time rebuild makes the same weights; they are
        # identified by their hash below, so a rebuild that differs (another torch) is refused
        torch.manual_seed(0)
        if config_dict is not None:
            loaded = read_checkpoint(ckpt) if ckpt else None
            exp = config_from_dict(apply_overrides(config_dict, opts or []))
            vm = VideoModel(build_eval_model(exp.model, loaded, device=dev), exp, loaded, device=dev)
        elif ckpt:
            vm = load(ckpt, cfg=cfg, opts=opts or [], device=dev)
        elif cfg:   # the config's model, frozen (no adapters)
            from msta.config import load_config

            exp = load_config(cfg, opts)
            vm = VideoModel(build_eval_model(exp.model, None, device=dev), exp, None, device=dev)
        else:   # as predict.py: frozen CLIP ViT-B/16 with OpenAI weights
            vm = load("ViT-B-16", pretrained="openai", opts=opts or [], device=dev)
    exp, loaded = vm.cfg, vm.checkpoint
    if exp.model.pretrained:
        weights = _weights_identity(exp.model.pretrained)
    else:
        frozen = {k: p for k, p in vm.model.named_parameters() if not p.requires_grad}   # CLIP's own, not adapters
        weights = "random-init:sha256:" + adapters_sha256(frozen)
    size = vm.model.image_size if isinstance(vm.model.image_size, int) else int(vm.model.image_size[0])
    views = exp.eval.views
    identity = {
        "model": exp.model.name, "weights": weights,
        "adapters": adapters_sha256(loaded.state_dict) if loaded is not None else "none",
        "num_frames": exp.model.num_frames, "input_size": size, "clips": views.clips, "crops": views.crops,
        "sampling": exp.data.sampling, "stride": exp.data.stride if exp.data.sampling == "dense" else 0,
    }
    path = str(Path(ckpt).resolve()) if ckpt else None
    _logger.debug("index model: %s on %s", identity, dev)
    return IndexModel(vm, path, identity)
