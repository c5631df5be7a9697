"""The L_CC targets: the frozen teacher's description embeddings, computed once per run and cached on disk.

They must be computed before `deepspeed.initialize`, which partitions the parameters under ZeRO-3. The cache key
hashes the model name, the weights (tag, or a file's path, size and mtime, or the random-init seed) and every
description text, so a change to any of them recomputes the targets.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from msta.engine.checkpoint import atomic_torch_save
from msta.losses import description_targets

__all__ = ["cache_root", "DescriptionTargets", "default_cache_dir", "weights_id", "cache_key",
           "compute_description_targets"]

_logger = logging.getLogger(__name__)


@dataclass
class DescriptionTargets:
    """(C, E) spatial and temporal targets (mean of N normalised frozen-branch embeddings per class)."""
    spatial: torch.Tensor
    temporal: torch.Tensor

    def to(self, device: torch.device | str) -> "DescriptionTargets":
        return DescriptionTargets(self.spatial.to(device), self.temporal.to(device))


def cache_root() -> Path:
    """msta's on-disk cache: `$MSTA_CACHE_DIR`, else `~/.cache/msta`."""
    return Path(os.environ.get("MSTA_CACHE_DIR") or Path.home() / ".cache" / "msta")


def default_cache_dir() -> Path:
    """`$MSTA_CACHE_DIR/descriptions`, else `~/.cache/msta/descriptions`."""
    return cache_root() / "descriptions"


def weights_id(pretrained: Optional[str], seed: int) -> str:
    """Identifies the frozen weights: a local file by path/size/mtime, a tag by name, random init by its seed."""
    if pretrained is None:
        return f"random-init:seed={seed}"
    p = Path(pretrained)
    if p.is_file():
        st = p.stat()
        return f"file:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return f"tag:{pretrained}"


def cache_key(model_name: str, weights: str, spatial: Sequence[Sequence[str]],
              temporal: Sequence[Sequence[str]]) -> str:
    blob = json.dumps({"model": model_name, "weights": weights, "spatial": spatial, "temporal": temporal})
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@torch.no_grad()
def _encode(model, texts: list[str], chunk: int) -> torch.Tensor:
    parts = [model.encode_text_frozen(model.tokenize(texts[i:i + chunk])).float() for i in range(0, len(texts), chunk)]
    return torch.cat(parts)


def compute_description_targets(model, spatial: Sequence[Sequence[str]], temporal: Sequence[Sequence[str]], *,
                                model_name: str, weights: str, cache_dir: Optional[Path] = None,
                                write_cache: bool = True, chunk: int = 256) -> DescriptionTargets:
    """Encodes C x N spatial and C x N temporal descriptions with the frozen text branch, once.

    Args:
        model: the `VideoCLIP` (its `tokenize` and `encode_text_frozen` are used, without gradient).
        spatial, temporal: per class, N description strings (N equal across classes).
        model_name, weights: the cache key's model part (see `weights_id`).
        cache_dir: where cached targets live; None disables the cache (cfg.model.perf.cache_descriptions off).
        write_cache: write a computed result (rank 0 only, so ranks never race on the file).
        chunk: texts per encoder call.

    Returns:
        The targets on the CPU, float32.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(model_name, weights, spatial, temporal)}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                _logger.info("description targets: loaded from the cache %s", path)
                return DescriptionTargets(cached["spatial"], cached["temporal"])
            except Exception as e:  # a damaged cache file is recomputed, never fatal
                _logger.warning("description cache %s unreadable (%s); recomputing", path, e)
    c, n = len(spatial), len(spatial[0]) if spatial else 0
    if any(len(x) != n for x in list(spatial) + list(temporal)):
        raise ValueError("every class needs the same number N of spatial and temporal descriptions")
    was_training = model.training
    model.eval()
    emb = _encode(model, [d for cls in spatial for d in cls] + [d for cls in temporal for d in cls], chunk)
    model.train(was_training)
    emb = emb.view(2, c, n, -1)
    out = DescriptionTargets(description_targets(emb[0]), description_targets(emb[1]))
    _logger.info("description targets: encoded %d x %d spatial + temporal descriptions", c, n)
    if path is not None and write_cache:
        try:
            atomic_torch_save({"spatial": out.spatial, "temporal": out.temporal}, path)
        except OSError as e:  # the cache is optional: a read-only or full MSTA_CACHE_DIR must not stop a run
            _logger.warning("description cache %s not written (%s); going on without the cache (set "
                            "MSTA_CACHE_DIR to a writable folder to keep the targets between runs)", path, e)
    return out
