"""A step's progress as every reader of it sees it: the fields of the trainer's
``StepInfo``, without torch (the GUI rebuilds it from the engine process's JSON, and an
inspection reports its batches in it, with no loss: NaN, and no learning rate: 0)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProgressInfo:
    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_per_s: float
    eta_s: float
    val_loss: float | None = None
