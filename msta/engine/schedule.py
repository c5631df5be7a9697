"""Learning-rate schedule: linear warm-up then cosine decay, a pure function of the optimiser step."""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WarmupCosine"]


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up from `base_lr / warmup_steps` to `base_lr`, then cosine decay to `min_lr` at `total_steps`.

    The schedule holds no state, so resuming at step `s` gives exactly the learning rate an uninterrupted run had.

    Attributes:
        base_lr: peak learning rate, reached at the end of warm-up.
        min_lr: final learning rate (reached at `total_steps`, kept after it).
        warmup_steps: optimiser steps of linear warm-up (0: none).
        total_steps: optimiser steps of the whole run.
    """
    base_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self):
        if not 0 <= self.warmup_steps <= self.total_steps or self.total_steps < 1:
            raise ValueError(f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps}) "
                             "and total_steps >= 1")
        if not 0 <= self.min_lr <= self.base_lr:
            raise ValueError(f"need 0 <= min_lr ({self.min_lr}) <= base_lr ({self.base_lr})")

    def __call__(self, step: int) -> float:
        """Learning rate of optimiser step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    @classmethod
    def from_epochs(cls, *, base_lr: float, min_lr: float, epochs: int, warmup_epochs: float,
                    steps_per_epoch: int) -> "WarmupCosine":
        """The paper's recipe in epochs (50 epochs, 5 of warm-up) converted to optimiser steps."""
        total = max(1, epochs * steps_per_epoch)
        return cls(base_lr=base_lr, min_lr=min_lr, warmup_steps=min(total, round(warmup_epochs * steps_per_epoch)),
                   total_steps=total)
