"""Reference texts for the distillation term L_RD (``loss.distill``): what frozen CLIP should keep answering.

Training on a handful of classes moves the adapted embeddings towards those classes' prompts and away from
everything else CLIP knew: after few-shot training on motion classes, the same model may no longer tell a red square
from a blue circle. ``L_RD`` (``msta.losses.reference_distillation_loss``, after ZSCL, Zheng et al. ICCV 2023)
holds the adapted model's distribution over a set of *reference texts* to frozen CLIP's, on every training clip.
The references should describe what the frozen model knows in general (everyday objects, scenes, the captions it
was pretrained on), not the classes a later zero-shot test will use.

The frozen embeddings of all references are computed once, before ``deepspeed.initialize`` (ZeRO-3 partitions the
weights after it). Each step draws ``loss.distill_sample`` of them; the draw depends only on the seed and the step,
so every rank and every micro batch of a step uses the same references, and a multi-process run computes the same
loss as a one-process run with the same global batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from msta.config import ConfigError

__all__ = ["ReferenceBank", "read_reference_texts", "build_reference_bank"]

_logger = logging.getLogger(__name__)


def read_reference_texts(path: str | Path) -> list[str]:
    """Reads one reference text per line; blank lines and lines starting with ``#`` are skipped.

    Raises:
        ConfigError: the file is missing or holds no text (the message names ``loss.distill_texts``).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"loss.distill_texts={path}: no such file; give a text file with one reference text per "
                          "line (e.g. prompts/reference_concepts.txt) or set loss.distill=0")
    lines = [line.strip() for line in p.read_text(encoding="utf-8-sig").splitlines()]   # -sig: a BOM is no text
    comments = [i for i, t in enumerate(lines, 1) if t.startswith("#")]
    kept = [t for t in lines if t and not t.startswith("#")]
    texts = list(dict.fromkeys(kept))  # unique, file order
    if not texts:
        raise ConfigError(f"loss.distill_texts={path}: the file has no reference text (only blank or # lines)")
    _logger.info("loss.distill_texts=%s: %d reference texts; skipped %d comment line(s)%s and %d repeated text(s)",
                 path, len(texts), len(comments), f" ({_line_list(comments)})" if comments else "",
                 len(kept) - len(texts))
    return texts


def _line_list(numbers: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{', ...' if len(numbers) > limit else ''}"


@dataclass
class ReferenceBank:
    """All reference texts as token ids, with frozen CLIP's embedding of each.

    Attributes:
        ids: (R, L) token ids.
        teacher: (R, E) L2-normalised frozen text embeddings, same order.
        sample: references per step (all R when R <= sample).
        seed: the draw's seed.
    """
    ids: torch.Tensor
    teacher: torch.Tensor
    sample: int
    seed: int = 0

    def __len__(self) -> int:
        return self.ids.shape[0]

    def draw(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The references of optimiser step ``step``: ((S, L) ids, (S, E) frozen embeddings), S = min(sample, R)."""
        if len(self) <= self.sample:
            return self.ids, self.teacher
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        pick = torch.randperm(len(self), generator=g)[:self.sample].to(self.ids.device)
        return self.ids[pick], self.teacher[pick]


@torch.no_grad()
def build_reference_bank(model, path: str | Path, sample: int, seed: int, chunk: int = 256) -> ReferenceBank:
    """Reads the references and encodes them with the frozen text branch of ``model`` (a ``VideoCLIP``).

    Call before ``deepspeed.initialize``; the result lives on the model's device.
    """
    texts = read_reference_texts(path)
    ids = model.tokenize(texts).to(model.text_device)
    teacher = torch.cat([model.encode_text_frozen(ids[i:i + chunk]).float() for i in range(0, len(ids), chunk)])
    _logger.info("reference distillation: %d reference texts from %s, %d per step", len(texts), path,
                 min(sample, len(texts)))
    return ReferenceBank(ids, teacher, sample, seed)
