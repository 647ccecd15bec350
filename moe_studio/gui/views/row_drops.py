"""Capacity drops by position in the batch, for the Experts view's "Dropped" plot: the
first and the last sequence of each batch as two dashed curves. With capacity counted
over the whole batch (``moe.capacity_group = "batch"``) the last sequence loses more;
counted per sequence, the two lie together. Read from ``moe/dropped_per_row``."""
from __future__ import annotations

import numpy as np

from ...store import RunReader
from ..widgets.plots import CurvePlot

SERIES = ("row:first", "row:last")


def row_drop_percent(reader: RunReader, member: int, rows: list[int]
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps [S], percent [S, B]): per sequence of the batch, the share of its
    (token, choice) pairs dropped, averaged over the MoE blocks ``rows`` (indices into
    the recorded blocks). None when the run recorded no per-sequence drops."""
    steps, arr = reader.tensor_series("moe/dropped_per_row", member=member)
    if not steps.size or arr.ndim != 3 or not rows:
        return None
    moe = (reader.config or {}).get("moe") or {}
    context = int(((reader.config or {}).get("data") or {}).get("context") or 0)
    pairs = context * int(moe.get("top_k") or 1)
    if pairs <= 0:
        return None
    return steps, 100.0 * arr[:, rows, :].mean(axis=1) / pairs


def show_row_drops(plot: CurvePlot, reader: RunReader | None, member: int, rows: list[int]) -> None:
    """Add (or refresh) the first / last sequence curves on ``plot``; remove them when
    the run has none."""
    got = row_drop_percent(reader, member, rows) if reader is not None else None
    if got is None:
        for key in SERIES:
            if key in plot.series_keys():
                plot.remove_series(key)
        return
    steps, pct = got
    for key, col, label in ((SERIES[0], 0, "1st sequence"), (SERIES[1], -1, "last sequence")):
        plot.set_series(key, steps.astype(np.float64), pct[:, col].astype(np.float64), label=label,
                        dash=True, color=6 if col == 0 else 7)
