"""Quality per cost: a run's validation loss at a compute or time budget that every
compared run reached (numpy only).

"Val loss at equal FLOPs": the budget is the smallest final training-FLOPs count among
the runs compared, and each run's validation loss there is read off its own curve of
val loss against cumulative training FLOPs, linearly interpolated between its
evaluations (NaN where the budget falls before its first evaluation: no measurement to
read). "At equal wall time" is the same on elapsed seconds.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def value_at(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """``y`` linearly interpolated at ``x = at`` over finite points (x ascending);
    NaN outside ``[x[0], x[-1]]`` or without points."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if not x.size or not math.isfinite(at) or at < x[0] or at > x[-1]:
        return math.nan
    return float(np.interp(at, x, y))


def common_budget(finals: Sequence[float]) -> float:
    """The largest budget every run reached: the smallest finite final value (NaN for
    none)."""
    f = [float(v) for v in finals if v is not None and math.isfinite(float(v))]
    return min(f) if f else math.nan


def at_equal_budget(curves: Sequence[tuple[np.ndarray, np.ndarray]], finals: Sequence[float]
                    ) -> tuple[float, list[float]]:
    """(budget, each curve's value there): ``curves`` are (cost at each evaluation,
    val loss) per run, ``finals`` each run's final cost."""
    b = common_budget(finals)
    return b, [value_at(x, y, b) for x, y in curves]
