"""Comparing runs as the store records them: config diff, grouping, per-run series,
summary rows.

Pure pandas / numpy on what :class:`~moe_studio.store.RunReader` returns (the long scalar
table, the config dict, the meta dict); the Compare dashboard and ``moe-studio report``
draw what these functions compute. The curve maths (x axes, a group's mean and band)
is :mod:`moe_studio.metrics.compare`, re-exported here so that a view reads a
comparison through one module.

Resumed runs. A run continued from a checkpoint writes its steps again, and the store
keeps the rows of every attempt. :func:`latest_attempt` keeps, per series, only the rows
of the history that led to the final model: a row stays if every row of that series
written after it (by wall time) has a larger step. So the last attempt wins from the
step it restarted at, a step recorded twice keeps its later value, and every curve is
monotone in step (no zig-zag back to the restart).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from ..metrics.compare import (BAND_MINMAX, BAND_STD, MAX_GRID, X_MODES,  # noqa: F401 - re-exported
                               X_FLOPS, X_RELATIVE, X_STEP, X_TOKENS, X_WALL, band_edges,
                               common_grid, group_band, resample, tokens_at, x_of)
from ..metrics.cost import at_equal_budget


# Summary columns: (key, header). Values are floats (NaN: not recorded), or str.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "Run"), ("status", "Status"), ("steps", "Steps"),
    ("final_val_loss", "Final val loss"), ("best_val_loss", "Best val loss"),
    ("tokens_per_s", "Tokens/s"),
    ("params_total", "Params"), ("params_active", "Active/token"),
    ("load_cv", "Load CV"), ("load_max_over_mean", "Max/mean"),
    ("dropped_frac", "Dropped"), ("ens_gain", "Ens. gain"),
    ("skipped_steps", "Skipped"),
    ("train_flops", "Train FLOPs"), ("val_at_equal_flops", "Val @ equal FLOPs"),
    ("val_at_equal_time", "Val @ equal time"), ("memory_total", "Step memory"),
)
# What each summary column holds (the tables' header tooltips).
SUMMARY_HELP = {
    "final_val_loss": "val/loss at the last evaluation (the ensemble's where recorded), nats/token",
    "best_val_loss": "the lowest val/loss of any evaluation, nats/token",
    "tokens_per_s": "median training throughput, tokens per second",
    "params_total": "total parameters (run meta params_total)",
    "params_active": "parameters active per token (run meta params_active)",
    "load_cv": "expert load coefficient of variation at the last step, mean over MoE layers",
    "load_max_over_mean": "busiest expert's load over the mean load at the last step, "
                          "mean over MoE layers",
    "dropped_frac": "share of token choices dropped by expert capacity at the last step, "
                    "mean over MoE layers",
    "ens_gain": "ensemble gain at the last evaluation: mean member loss minus the "
                "ensemble's loss, nats/token",
    "skipped_steps": "optimizer steps skipped by the fp16 loss scaler (precision/skipped)",
    "train_flops": "training FLOPs of the whole run so far (cost/train_flops: matmul FLOPs, "
                   "training = 3 x forward, all members)",
    "val_at_equal_flops": "val/loss at the smallest final training-FLOPs count among the runs "
                          "compared, interpolated between evaluations (empty: no evaluation "
                          "that early)",
    "val_at_equal_time": "val/loss at the shortest final wall time (elapsed_s) among the runs "
                         "compared, interpolated between evaluations",
    "memory_total": "measured memory of one training step: parameters + gradients + optimizer "
                    "state + activations (run meta memory_footprint)",
}
IGNORED_KEYS = ("name",)   # differs between almost any two runs; the run columns name them


# ---------------------------------------------------------------------------- configs
def flatten_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """``{"moe": {"top_k": 2}}`` -> ``{"moe.top_k": 2}`` (nested to any depth)."""
    out: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                out[key] = v
    walk(config or {}, "")
    return out


def same_value(a: Any, b: Any) -> bool:
    """Config values equal (NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def config_diff(configs: Sequence[dict[str, Any] | None], labels: Sequence[str] | None = None,
                ignore: Iterable[str] = IGNORED_KEYS) -> pd.DataFrame:
    """The config keys whose values are not all equal across ``configs``.

    Returns a DataFrame indexed by flattened key (``"moe.top_k"``, in the order the keys
    first appear), one column per config (``labels``, default ``"0"``, ``"1"``, ...), the
    values as recorded (None where a config lacks the key). ``ignore``: keys never shown.
    """
    labels = list(labels) if labels is not None else [str(i) for i in range(len(configs))]
    flat = [flatten_config(c) for c in configs]
    keys: list[str] = []
    seen: set[str] = set()
    for f in flat:
        for k in f:
            if k not in seen:
                seen.add(k)
                keys.append(k)
    skip = set(ignore)
    rows = []
    for k in keys:
        if k in skip:
            continue
        vals = [f.get(k) for f in flat]
        if any(not same_value(v, vals[0]) for v in vals[1:]):
            rows.append((k, vals))
    return pd.DataFrame([v for _, v in rows], index=pd.Index([k for k, _ in rows], name="key"),
                        columns=labels, dtype=object)


def value_text(v: Any) -> str:
    """A config value as the tables show it (None: an empty cell)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def group_runs(values: Sequence[Any]) -> list[tuple[str, list[int]]]:
    """Indices of equal values: ``[(value text, [run indices])]``, groups in the order of
    their first run."""
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(value_text(v), []).append(i)
    return list(groups.items())


# ---------------------------------------------------------------------------- series
def latest_attempt(scalars: pd.DataFrame) -> pd.DataFrame:
    """``scalars`` (the store's long table) without the rows a later attempt replaced.

    Per (name, member) series, in write order (wall time; the store's row order for
    ties), a row is kept if every later row has a larger step. Returns the kept rows
    sorted by (name, member, step), index reset. See the module docstring.
    """
    if len(scalars) == 0:
        return scalars.reset_index(drop=True)
    df = scalars.reset_index(drop=True)
    names = df["name"]
    codes = (names.cat.codes.to_numpy() if isinstance(names.dtype, pd.CategoricalDtype)
             else pd.factorize(names)[0]).astype(np.int64)
    member = df["member"].to_numpy(np.int64)
    series = codes * 4096 + (member + 1)
    wall = df["wall_time"].to_numpy(np.float64)
    step0 = df["step"].to_numpy(np.int64)
    # Within each series in write order (a stable sort keeps it; a table appended poll
    # by poll has a series in several blocks), do the steps only ever rise?
    grouped = np.argsort(series, kind="stable")
    g_ser, g_step, g_wall = series[grouped], step0[grouped], wall[grouped]
    same = g_ser[1:] == g_ser[:-1]
    if bool(np.all(~same | ((g_step[1:] > g_step[:-1]) & ~(g_wall[1:] < g_wall[:-1])))):
        # the usual run: nothing was written again, every row stays
        return df
    order = np.lexsort((np.arange(len(df)), np.nan_to_num(wall, nan=-np.inf), series))
    s_ser = series[order]
    steps = df["step"].to_numpy(np.int64)[order]
    # the minimum step of the rows written after each row, within its series
    later_min = np.empty_like(steps)
    big = np.iinfo(np.int64).max
    bounds = np.flatnonzero(np.r_[True, s_ser[1:] != s_ser[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = steps[a:b][::-1]
        sm = np.minimum.accumulate(seg)[::-1]     # suffix minimum including the row
        later_min[a:b - 1] = sm[1:]
        later_min[b - 1] = big
    keep = np.zeros(len(df), bool)
    keep[order] = steps < later_min
    if keep.all():
        return df
    return df[keep].sort_values(["name", "member", "step"], kind="stable", ignore_index=True)


def by_name(scalars: pd.DataFrame) -> dict[str, tuple[np.ndarray, ...]]:
    """The long scalar table split by name: ``{name: (step int64, member int64, value
    float64, wall_time float64)}``, each in the table's row order. Index a run once and
    pass the result to :func:`metric_series` / :func:`summary_row` instead of the table
    when asking it many questions (each is then a dictionary look-up, not a scan)."""
    names = scalars["name"]
    if isinstance(names.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in names.cat.categories]
        codes = names.cat.codes.to_numpy().astype(np.int64)
    else:
        codes, uniq = pd.factorize(names)
        cats = [str(c) for c in uniq]
    cols = (scalars["step"].to_numpy(np.int64), scalars["member"].to_numpy(np.int64),
            scalars["value"].to_numpy(np.float64), scalars["wall_time"].to_numpy(np.float64))
    if codes.size and not bool(np.all(codes[1:] >= codes[:-1])):
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        cols = tuple(c[order] for c in cols)
    bounds = np.searchsorted(codes, np.arange(len(cats) + 1))
    return {name: tuple(c[bounds[i]:bounds[i + 1]] for c in cols)
            for i, name in enumerate(cats) if bounds[i + 1] > bounds[i]}


# a run's long scalar table, or its by_name() index
Scalars = Union[pd.DataFrame, Dict[str, Tuple[np.ndarray, ...]]]


def _rows(scalars, name: str) -> tuple[np.ndarray, ...]:
    """(step, member, value, wall_time) of the rows of ``name`` (a ``*`` in it matches
    any layer number, e.g. ``"moe/L*/load_cv"``) in a table or a :func:`by_name` index."""
    index = scalars if isinstance(scalars, dict) else by_name(scalars)
    if "*" in name:
        head, _, tail = name.partition("*")
        want = [c for c in index if c.startswith(head) and c.endswith(tail)
                and len(c) > len(head) + len(tail)]
    else:
        want = [name] if name in index else []
    if len(want) == 1:
        return index[want[0]]
    if not want:
        return (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))
    return tuple(np.concatenate([index[w][i] for w in want]) for i in range(4))


def metric_series(scalars: Scalars, name: str) -> pd.DataFrame:
    """:func:`series_arrays` as a DataFrame with columns step, value, wall_time."""
    step, value, wall = series_arrays(scalars, name)
    return pd.DataFrame({"step": step, "value": value, "wall_time": wall})


def series_arrays(scalars: Scalars, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One value per step of scalar ``name`` for a whole run: (step int64, value,
    wall_time) arrays [S], ascending in step.

    The run-wide record (member -1) where there is one; else the mean over the members
    (and, for a name with ``*`` such as ``"moe/L*/load_cv"``, over every layer it
    matches). ``wall_time`` is the latest of the rows averaged. ``scalars``: a run's
    long table, or its :func:`by_name` index.
    """
    step, member, value, wall = _rows(scalars, name)
    sel = member == -1 if ("*" not in name and (member == -1).any()) else member >= 0
    if not sel.all():
        step, value, wall = step[sel], value[sel], wall[sel]
    # numpy rather than groupby: a summary of 50 runs calls this hundreds of times
    uniq, inv = np.unique(step, return_inverse=True)
    if uniq.size != step.size:
        value = np.bincount(inv, weights=value, minlength=uniq.size) / np.bincount(inv)
        w = np.full(uniq.size, -np.inf)
        np.maximum.at(w, inv, np.nan_to_num(wall, nan=-np.inf))
        wall = np.where(np.isfinite(w), w, np.nan)
    else:
        order = np.argsort(step, kind="stable")
        value, wall = value[order], wall[order]
    return uniq, value, wall


# ---------------------------------------------------------------------------- summary
def _last(series: tuple[np.ndarray, ...]) -> float:
    v = series[1]
    return float(v[-1]) if v.size else math.nan


def run_params(meta: dict[str, Any] | None) -> tuple[float, float]:
    """(total parameters, active per token) of a whole run from its meta: an
    ensemble's members all count, and every token passes through all of them. NaN where
    the meta has no count."""
    meta = meta or {}
    m = meta.get("members")
    m = int(m) if isinstance(m, (int, float)) and not isinstance(m, bool) and m >= 1 else 1

    def num(key: str) -> float:
        v = meta.get(key)
        return float(v) * m if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

    return num("params_total"), num("params_active")


def summary_row(scalars: Scalars, meta: dict[str, Any] | None = None, *,
                run: str = "", status: str = "") -> dict[str, Any]:
    """The summary of one run (``scalars``: its long table, already through
    :func:`latest_attempt`, or its :func:`by_name` index), keyed as :data:`SUMMARY_COLUMNS`:

    final / best validation loss (``val/loss``: the ensemble's where recorded, else the
    members' mean; nats/token); the median of ``tokens_per_s``; total and active
    parameters per token of the whole run (:func:`run_params`: an ensemble counts all its
    members); at the last recorded step, the mean over MoE layers (and
    members) of ``moe/L*/load_cv``, ``moe/L*/load_max_over_mean``, ``moe/L*/dropped_frac``;
    the last ``ens/gain`` (nats/token); the number of ``precision/skipped`` steps (all
    members). NaN where a run recorded no such value.
    """
    meta = meta or {}
    if not isinstance(scalars, dict):
        scalars = by_name(scalars)
    val = series_arrays(scalars, "val/loss")
    tps = series_arrays(scalars, "tokens_per_s")[1]
    tps = tps[np.isfinite(tps)]
    skipped = _rows(scalars, "precision/skipped")[2]
    last_step = max((int(r[0].max()) for r in scalars.values() if r[0].size), default=-1)

    params_total, params_active = run_params(meta)
    vals = val[1]
    return {
        "run": run, "status": status,
        "steps": float(last_step) if last_step >= 0 else math.nan,
        "final_val_loss": _last(val),
        "best_val_loss": float(np.nanmin(vals)) if np.isfinite(vals).any() else math.nan,
        "tokens_per_s": float(np.median(tps)) if tps.size else math.nan,
        "params_total": params_total, "params_active": params_active,
        "load_cv": _last(series_arrays(scalars, "moe/L*/load_cv")),
        "load_max_over_mean": _last(series_arrays(scalars, "moe/L*/load_max_over_mean")),
        "dropped_frac": _last(series_arrays(scalars, "moe/L*/dropped_frac")),
        "ens_gain": _last(series_arrays(scalars, "ens/gain")),
        "skipped_steps": float(np.sum(skipped > 0)) if skipped.size else math.nan,
        "train_flops": _last(series_arrays(scalars, "cost/train_flops")),
        "memory_total": _meta_num(meta.get("memory_footprint"), "total"),
        # set across the compared runs by add_equal_cost
        "val_at_equal_flops": math.nan, "val_at_equal_time": math.nan,
    }


def _meta_num(d: Any, key: str) -> float:
    v = d.get(key) if isinstance(d, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def cost_curve(scalars: Scalars, cost: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(cumulative ``cost`` at each evaluation, val/loss there, final ``cost``) of one
    run; ``cost``: "cost/train_flops" or "elapsed_s" (run-wide series)."""
    val = series_arrays(scalars, "val/loss")
    c = series_arrays(scalars, cost)
    return tokens_at(c, val[0]), val[1], _last(c)


def add_equal_cost(rows: Sequence[dict[str, Any]], scalars: Sequence[Scalars]) -> None:
    """Fill ``val_at_equal_flops`` / ``val_at_equal_time`` of the summary ``rows`` of
    the runs whose scalars are ``scalars`` (same order): each run's val/loss at the
    budget every one of them reached (:func:`moe_studio.metrics.cost.at_equal_budget`)."""
    for key, cost in (("val_at_equal_flops", "cost/train_flops"),
                      ("val_at_equal_time", "elapsed_s")):
        curves = [cost_curve(s, cost) for s in scalars]
        _, vals = at_equal_budget([(x, y) for x, y, _ in curves], [f for _, _, f in curves])
        for row, v in zip(rows, vals):
            row[key] = v


def summary_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Summary rows as a table with the :data:`SUMMARY_COLUMNS` headers, in that order."""
    keys = [k for k, _ in SUMMARY_COLUMNS]
    df = pd.DataFrame([{k: r.get(k) for k in keys} for r in rows], columns=keys)
    return df.rename(columns=dict(SUMMARY_COLUMNS))


def write_summary_csv(rows: Sequence[dict[str, Any]], path) -> None:
    """The summary table as CSV (headers as shown; empty cells for NaN)."""
    summary_frame(rows).to_csv(path, index=False, na_rep="")
