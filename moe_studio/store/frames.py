"""pandas DataFrames built from decoded store rows (shared by the reader and the follower)."""
from __future__ import annotations

import json
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .codec import ScalarBlock

SCALAR_COLUMNS = ("step", "member", "name", "value", "wall_time")
EVENT_COLUMNS = ("step", "member", "kind", "message", "data", "wall_time")


def _empty_scalars() -> pd.DataFrame:
    return pd.DataFrame({
        "step": np.empty(0, np.int64), "member": np.empty(0, np.int64),
        "name": pd.Categorical.from_codes(np.empty(0, np.int32), categories=pd.Index([], dtype=str)),
        "value": np.empty(0, np.float64), "wall_time": np.empty(0, np.float64)})


# Building a DataFrame costs ~1 ms, copying an empty one ~0.05 ms; an idle follow poll
# returns two empty frames, so they are copied from these templates.
_EMPTY_SCALARS = _empty_scalars()


def empty_scalars() -> pd.DataFrame:
    """An empty scalar table with the right columns and dtypes."""
    return _EMPTY_SCALARS.copy()


def scalar_frame(block: ScalarBlock, names_by_id: dict[int, str],
                 want_ids: Sequence[int] | None = None, member: int | None = None) -> pd.DataFrame:
    """The long scalar table, sorted by (name, member, step), from decoded blocks.

    ``name`` is a categorical column whose categories are the names present, in sorted
    order (building 5 million Python strings would take seconds; codes take
    milliseconds). ``want_ids`` / ``member`` keep only those series. Rows with equal
    (name, member, step) keep their write order.

    Every block is already grouped by series and sorted by step within a series, so
    the result is the blocks' segments reordered by (series, block): a stable sort of
    the segments (thousands), then one gather of runs of consecutive values.
    """
    seg = block.series
    ids, mem, cnt = seg[:, 0], seg[:, 1], seg[:, 2].astype(np.int64)
    start = np.cumsum(cnt) - cnt  # where each segment begins in the value columns
    if want_ids is not None or member is not None:
        keep = np.ones(len(seg), bool)
        if want_ids is not None:
            keep &= np.isin(ids, np.asarray(list(want_ids), np.int32))
        if member is not None:
            keep &= mem == member
        ids, mem, cnt, start = ids[keep], mem[keep], cnt[keep], start[keep]
    if len(ids) == 0:
        return empty_scalars()

    # name id -> code in alphabetical order of the names present
    present = np.flatnonzero(np.bincount(ids))
    order_names = sorted(present.tolist(), key=names_by_id.__getitem__)
    lut = np.full(int(present[-1]) + 1, -1, np.int32)
    lut[order_names] = np.arange(len(order_names), dtype=np.int32)
    code = lut[ids]
    m_lo = int(mem.min())
    group = code.astype(np.int64) * (int(mem.max()) - m_lo + 1) + (mem - m_lo)

    o = np.argsort(group, kind="stable")  # stable: blocks stay in write order
    group, code, mem, cnt, start = group[o], code[o], mem[o], cnt[o], start[o]
    out_start = np.cumsum(cnt) - cnt
    n = int(cnt.sum())
    perm = np.arange(n, dtype=np.int64) + np.repeat(start - out_start, cnt)
    steps = block.steps[perm]
    values = block.values[perm]
    walls = block.wall_times[perm]
    members = np.repeat(mem.astype(np.int64), cnt)
    codes = np.repeat(code, cnt)

    # A series' steps can only be out of order across blocks (e.g. an eval value
    # recorded late); check segment boundaries and fall back to a full sort if so.
    first, last = steps[out_start], steps[out_start + cnt - 1]
    if len(group) > 1 and bool(np.any((group[1:] == group[:-1]) & (first[1:] < last[:-1]))):
        p = np.lexsort((steps, np.repeat(group, cnt)))  # stable
        steps, values, walls, members, codes = steps[p], values[p], walls[p], members[p], codes[p]

    names = [names_by_id[i] for i in order_names]
    return pd.DataFrame({
        "step": steps,
        "member": members,
        "name": pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=str),
                                          validate=False),
        "value": values,
        "wall_time": walls,
    }, copy=False)


def event_frame(rows: Iterable[Sequence]) -> pd.DataFrame:
    """Event rows ``(step, member, kind, message, data JSON or None, wall_time)`` -> the
    events table in row order; ``data`` holds dicts ({} when none was given)."""
    rows = list(rows)
    if not rows:
        return _EMPTY_EVENTS.copy()
    return pd.DataFrame({
        "step": np.array([r[0] for r in rows], np.int64),
        "member": np.array([r[1] for r in rows], np.int64),
        "kind": pd.array([r[2] for r in rows], dtype=str),
        "message": pd.array([r[3] for r in rows], dtype=str),
        "data": pd.Series([json.loads(r[4]) if r[4] else {} for r in rows], dtype=object),
        "wall_time": np.array([r[5] for r in rows], np.float64),
    })


_EMPTY_EVENTS = pd.DataFrame({
    "step": np.empty(0, np.int64), "member": np.empty(0, np.int64),
    "kind": pd.array([], dtype=str), "message": pd.array([], dtype=str),
    "data": pd.Series([], dtype=object), "wall_time": np.empty(0, np.float64)})
