"""Learning-rate schedules: linear warm-up, then cosine decay to ``min_lr``; and the
segment-wise version that sequential ensembles (snapshot, boosting) train on, one
segment of the run's steps per member."""
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


def segment_starts(total_steps: int, members: int) -> list[int]:
    """First optimizer step (0-based) of each member's segment, plus ``total_steps``:
    ``[round(k * S / M) for k in 0..M]``. Member k trains steps [starts[k], starts[k+1])."""
    return [int(round(k * total_steps / members)) for k in range(members + 1)]


def member_at(step: int, starts: list[int]) -> int:
    """The member whose segment holds optimizer step ``step`` (0-based)."""
    m = len(starts) - 1
    for k in range(m):
        if step < starts[k + 1]:
            return k
    return m - 1


def segment_lr(step: int, starts: list[int], *, lr: float, min_lr: float, warmup_steps: int,
               restart_warmup: bool) -> float:
    """Learning rate at ``step`` for segment-wise schedules: within each segment of
    length L a warm-up of min(warmup_steps, L // 2) steps then a cosine from ``lr`` to
    ``min_lr``. Snapshot ensembles warm up only in the first cycle (later cycles restart
    at the peak: ``restart_warmup=False``); boosting warms up every member."""
    k = member_at(step, starts)
    length = max(1, starts[k + 1] - starts[k])
    warm = min(warmup_steps, length // 2) if (k == 0 or restart_warmup) else 0
    return lr_at(step - starts[k], lr=lr, min_lr=min_lr, warmup_steps=warm, total_steps=length)
