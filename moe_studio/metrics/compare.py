"""Run comparison maths: the x axis of a run's curve, and the mean and spread of a
group of runs' curves on a common grid.

Pure numpy over ``(step, value, wall_time)`` arrays (the shape
:func:`moe_studio.store.compare.series_arrays` returns; a table with those columns
works too). The Compare view and ``moe-studio report`` draw what these compute; the
store's half of comparing (resumed runs, per-run series, config diff, summary rows)
is :mod:`moe_studio.store.compare`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

X_STEP, X_TOKENS, X_WALL, X_RELATIVE = "step", "tokens", "wall", "relative"
X_FLOPS = "flops"
X_MODES = (X_STEP, X_TOKENS, X_WALL, X_RELATIVE, X_FLOPS)
BAND_MINMAX, BAND_STD = "minmax", "std"
MAX_GRID = 2000          # points of a group's common x grid, at most


# ---------------------------------------------------------------------------- x axes
def _columns(series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, value, wall_time) of a ``(step, value, wall_time)`` tuple, or of a table
    with those columns (a DataFrame: read by column name, no pandas import here)."""
    if isinstance(series, (tuple, list)):
        cols = list(series) + [np.empty(0)] * (3 - len(series))
    else:
        cols = [series["step"], series["value"],
                series["wall_time"] if "wall_time" in series else np.empty(0)]
    return tuple(np.asarray(c, np.float64) for c in cols[:3])


def tokens_at(tokens, steps: np.ndarray) -> np.ndarray:
    """Cumulative tokens at ``steps`` from a run's ``tokens`` series (a
    ``(step, value, wall_time)`` tuple or a table with those columns): interpolated between
    records, proportional to step outside them; NaN without one."""
    steps = np.asarray(steps, np.float64)
    s, t, _ = _columns(tokens)
    if s.size == 0:
        return np.full(steps.shape, np.nan)
    out = np.interp(steps, s, t)
    for mask, ss, tt in ((steps < s[0], s[0], t[0]), (steps > s[-1], s[-1], t[-1])):
        if ss > 0:
            out[mask] = steps[mask] * (tt / ss)
    return out


def x_of(series, mode: str, *, tokens=None, run_start: float = math.nan,
         origin: float = math.nan, flops=None) -> np.ndarray:
    """The x of a ``(step, value, wall_time)`` series (tuple or table) on axis ``mode``:
    "step"; "tokens" (via the run's ``tokens`` series, as :func:`tokens_at` takes it);
    "wall" (seconds since ``origin``, the first record of all runs compared, so runs sit
    where they ran in time); "relative" (seconds since ``run_start``, the run's own
    first record, so all runs start at 0); "flops" (cumulative training FLOPs, via the
    run's ``cost/train_flops`` series ``flops``, interpolated as :func:`tokens_at` does)."""
    step, _, wall = _columns(series)
    if mode == X_STEP:
        return step
    if mode == X_TOKENS:
        return tokens_at(tokens if tokens is not None else (step[:0], step[:0]), step)
    if mode == X_FLOPS:
        return tokens_at(flops if flops is not None else (step[:0], step[:0]), step)
    if mode == X_WALL:
        return wall - origin
    if mode == X_RELATIVE:
        return wall - run_start
    raise ValueError(f"x axis must be one of {', '.join(X_MODES)}; got {mode!r}")


# ---------------------------------------------------------------------------- groups
def common_grid(xs: Sequence[np.ndarray], max_points: int = MAX_GRID) -> np.ndarray:
    """The x grid a group is averaged on: the sorted union of its runs' finite x, or
    ``max_points`` evenly spaced points over its span when the union is longer."""
    parts = [np.asarray(x, np.float64) for x in xs]
    parts = [x[np.isfinite(x)] for x in parts if x.size]
    if not parts:
        return np.empty(0)
    grid = np.unique(np.concatenate(parts))
    if grid.size > max_points:
        grid = np.linspace(grid[0], grid[-1], max_points)
    return grid


def resample(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``y(x)`` linearly interpolated at ``grid``; NaN outside the run's own x range
    (never extrapolated) and where ``y`` is not finite on either side."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x)
    x, y = x[ok], y[ok]
    out = np.full(grid.shape, np.nan)
    if x.size == 0:
        return out
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    inside = (grid >= x[0]) & (grid <= x[-1])
    g = grid[inside]
    i = np.clip(np.searchsorted(x, g, side="right") - 1, 0, x.size - 1)
    j = np.minimum(i + 1, x.size - 1)
    span = x[j] - x[i]
    frac = np.divide(g - x[i], span, out=np.zeros_like(g), where=span > 0)
    out[inside] = y[i] + frac * (y[j] - y[i])
    # exact hits take the recorded value (a NaN neighbour must not blank them)
    exact = x[i] == g
    vals = out[inside]
    vals[exact] = y[i][exact]
    out[inside] = vals
    return out


def group_band(curves: Sequence[tuple[np.ndarray, np.ndarray]], max_points: int = MAX_GRID
               ) -> dict[str, np.ndarray]:
    """Mean and spread of several runs' curves (x, y) on a common grid.

    Returns ``{"x", "mean", "min", "max", "std", "n"}``, arrays [G]: at each grid x, over
    the runs whose x range covers it (each resampled by :func:`resample`): the mean, min,
    max, population std (ddof=0) and how many runs there are. Points no run covers are
    dropped.
    """
    grid = common_grid([c[0] for c in curves], max_points)
    if grid.size == 0 or not curves:
        e = np.empty(0)
        return {"x": e, "mean": e, "min": e, "max": e, "std": e, "n": e.astype(np.int64)}
    Y = np.vstack([resample(x, y, grid) for x, y in curves])
    ok = np.isfinite(Y)
    n = ok.sum(axis=0)
    keep = n > 0
    Y, ok, n, grid = Y[:, keep], ok[:, keep], n[keep], grid[keep]
    s = np.where(ok, Y, 0.0).sum(axis=0)
    mean = s / n
    dev = np.where(ok, Y - mean, 0.0)
    std = np.sqrt((dev ** 2).sum(axis=0) / n)
    lo = np.where(ok, Y, np.inf).min(axis=0)
    hi = np.where(ok, Y, -np.inf).max(axis=0)
    return {"x": grid, "mean": mean, "min": lo, "max": hi, "std": std, "n": n.astype(np.int64)}


def band_edges(band: dict[str, np.ndarray], kind: str = BAND_MINMAX
               ) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of a :func:`group_band`: min..max, or mean ± std."""
    if kind == BAND_MINMAX:
        return band["min"], band["max"]
    if kind == BAND_STD:
        return band["mean"] - band["std"], band["mean"] + band["std"]
    raise ValueError(f"band must be {BAND_MINMAX!r} or {BAND_STD!r}; got {kind!r}")
