"""Helpers the benchmarks share."""
from __future__ import annotations

import os

# A timed run is this much longer than its timed steps: the last step of a run
# evaluates, snapshots and checkpoints, which is not step time.
SPARE_STEPS = 10


def timing_config(cfg, steps: int):
    """``cfg`` set up for timing ``steps`` training steps (plus warm-up): the run is
    SPARE_STEPS longer, evaluation, probe snapshots and checkpoints are pushed past its
    end, warm-up of the learning rate is one step. Returns ``cfg``."""
    cfg.train.steps = steps + SPARE_STEPS
    cfg.train.warmup_steps = 1
    cfg.train.eval_every = 10 ** 6
    cfg.train.snapshot_every = 10 ** 6
    cfg.train.checkpoint_every = 0
    return cfg


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (None where the OS has none):
    recorded with every figure, since a shared machine slows what it measures."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))]
