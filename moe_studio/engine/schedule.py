"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr``."""
from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Warm-up rises linearly from lr/warmup to lr over ``warmup_steps`` steps; the cosine
    then falls from lr at the end of warm-up to ``min_lr`` at ``total_steps - 1``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
