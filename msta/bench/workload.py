"""The benchmark's workload: class prompts and descriptions (HMDB51's, as shipped in prompts/) and random clips.

Real prompt texts matter for speed: the cut text sequences (DESIGN §3) are as long as the longest prompt, and
the descriptions are much longer than the class prompts. Where the prompts file cannot be found (an installed
package run outside the repository) the same number of generated sentences of similar length stands in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

__all__ = ["BenchPrompts", "bench_prompts", "random_clips", "default_prompts_dir"]

_logger = logging.getLogger(__name__)

TEMPLATE = "a video of {}."  # the paper's single template (text.ensemble false)


@dataclass
class BenchPrompts:
    """C class prompts and, per class, N spatial and N temporal descriptions."""
    classes: list[str]
    spatial: list[list[str]]
    temporal: list[list[str]]
    source: str

    def descriptions(self) -> list[str]:
        """All 2 * C * N descriptions, spatial first, class-major (the layout ``view(2, C, N, E)`` expects)."""
        return [d for cls in self.spatial for d in cls] + [d for cls in self.temporal for d in cls]


def default_prompts_dir() -> Path:
    """The repository's prompts/ folder (next to the package)."""
    return Path(__file__).resolve().parents[2] / "prompts"


def _generated(num_classes: int, num_descriptions: int) -> BenchPrompts:
    classes = [TEMPLATE.format(f"doing action number {c}") for c in range(num_classes)]
    spatial = [[f"A video about a person doing action {c} in a room with furniture, view {i}."
                for i in range(num_descriptions)] for c in range(num_classes)]
    temporal = [[f"A video of action {c} generally involves the following step: moving the arms and then the "
                 f"legs in turn, again and again, which is sub-step {i}." for i in range(num_descriptions)]
                for c in range(num_classes)]
    return BenchPrompts(classes, spatial, temporal, "generated")


def bench_prompts(num_classes: int = 51, num_descriptions: int = 2, dataset: str = "hmdb51",
                  prompts_dir: Optional[Path] = None) -> BenchPrompts:
    """The first ``num_classes`` classes of ``prompts/<dataset>.yaml`` rendered with the paper's template.

    Classes beyond the file's (or a missing file) are filled with generated texts of similar length.
    """
    from msta.text.prompts import read_prompts_file

    path = Path(prompts_dir or default_prompts_dir()) / f"{dataset}.yaml"
    if not path.is_file():
        _logger.warning("benchmark prompts: %s not found, using generated texts", path)
        return _generated(num_classes, num_descriptions)
    _, entries = read_prompts_file(path)
    usable = [e for e in entries.values() if e["name"] and len(e["spatial"]) >= num_descriptions
              and len(e["temporal"]) >= num_descriptions][:num_classes]
    out = BenchPrompts([TEMPLATE.format(e["name"]) for e in usable],
                       [e["spatial"][:num_descriptions] for e in usable],
                       [e["temporal"][:num_descriptions] for e in usable], str(path))
    if len(usable) < num_classes:
        extra = _generated(num_classes - len(usable), num_descriptions)
        out.classes += extra.classes
        out.spatial += extra.spatial
        out.temporal += extra.temporal
    return out


def random_clips(batch: int, num_frames: int, image_size: int, views: int = 0, seed: int = 0) -> torch.Tensor:
    """Normal-distributed (B, T, 3, S, S) clips, or (B, V, T, 3, S, S) with ``views`` > 0 (already normalised)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, views, num_frames, 3, image_size, image_size) if views else (batch, num_frames, 3, image_size,
                                                                                 image_size)
    return torch.randn(shape, generator=gen)
