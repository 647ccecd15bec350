"""Precision statistics over recorded headroom arrays: what the Precision view shows.

Inputs are the ``precision/*`` records of docs/CONTRACTS.md as numpy arrays, for one
step or with a leading step axis: ``absmax`` / ``min_nonzero`` [..., n, K],
``counts`` [..., n, K, 3] (elements measured, zeros among them, non-finite),
``exp_hist`` [..., n, K, B] (one bin per power of two, edges ``log2_edges`` [B + 1]),
``fractions`` [..., n, K, F, 3] (overflow, subnormal, flush_to_zero). A format is the
run meta's ``precision_format_table`` entry: ``{"max", "min_normal", "min_subnormal"}``.
numpy only: no Qt, no torch.
"""
from __future__ import annotations

import math

import numpy as np

OVERFLOW, SUBNORMAL, FLUSH = 0, 1, 2


def headroom_bits(absmax, fmt_max: float) -> np.ndarray:
    """``log2(fmt_max / absmax)``: how many doublings the largest magnitude can take
    before it passes the format's largest value (negative: already past it). inf for an
    all-zero tensor, NaN where nothing was measured (NaN absmax)."""
    a = np.asarray(absmax, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, np.log2(fmt_max / a), np.where(a == 0, np.inf, np.nan))


def footroom_bits(min_nonzero, min_normal: float) -> np.ndarray:
    """``log2(min_nonzero / min_normal)``: how many halvings the smallest non-zero
    magnitude can take before it leaves the format's normal range (negative: it is
    already subnormal or flushed). NaN where the tensor had no non-zero element."""
    m = np.asarray(min_nonzero, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, np.log2(m / min_normal), np.nan)


def underflow_share(fractions, fmt_index: int) -> np.ndarray:
    """Share of the elements a cast to format ``fmt_index`` would push below its normal
    range: subnormal plus flushed to zero. [..., n, K]."""
    f = np.asarray(fractions, dtype=np.float64)
    return f[..., fmt_index, SUBNORMAL] + f[..., fmt_index, FLUSH]


def overflow_share(fractions, fmt_index: int) -> np.ndarray:
    """Share of the elements that would overflow format ``fmt_index``. [..., n, K]."""
    return np.asarray(fractions, dtype=np.float64)[..., fmt_index, OVERFLOW]


def histogram_shares(exp_hist, counts) -> np.ndarray:
    """Exponent histogram as shares of the elements measured (zeros included in the
    denominator, so a row sums to 1 - zero share). NaN rows where nothing was measured."""
    h = np.asarray(exp_hist, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n[..., None] > 0, h / n[..., None], np.nan)


def format_log2_range(fmt: dict) -> dict[str, float]:
    """The format's edges as exponents: ``min_subnormal``, ``min_normal``, ``max``
    (``log2`` of each), for drawing against an exponent axis."""
    return {k: math.log2(float(fmt[k])) for k in ("min_subnormal", "min_normal", "max")}


def bin_window(exp_hist, log2_edges, fmt: dict | None = None, margin: int = 2) -> tuple[int, int]:
    """The bins worth showing: from ``margin`` bins below the lowest occupied bin (or
    the format's smallest subnormal) to ``margin`` above the highest (or the format's
    max). Returns ``(first, stop)`` bin indices (a slice)."""
    edges = np.asarray(log2_edges, dtype=np.int64)
    n_bins = edges.size - 1
    occupied = np.flatnonzero(np.asarray(exp_hist).reshape(-1, n_bins).sum(axis=0) > 0)
    lo_e, hi_e = [], []
    if occupied.size:
        lo_e.append(int(edges[occupied[0]]))
        hi_e.append(int(edges[occupied[-1]]))
    if fmt is not None:
        r = format_log2_range(fmt)
        lo_e.append(math.floor(r["min_subnormal"]) - 1)
        hi_e.append(math.floor(r["max"]))
    if not lo_e:
        return 0, n_bins
    first = max(0, int(np.searchsorted(edges, min(lo_e), side="right")) - 1 - margin)
    stop = min(n_bins, int(np.searchsorted(edges, max(hi_e), side="right")) + margin)
    return first, max(stop, first + 1)


def edge_table(modules, kinds, absmax, min_nonzero, counts, fractions, fmt_index: int,
               fmt: dict) -> list[dict]:
    """One row per measured (module, kind) at one step, closest to the top edge first.

    absmax / min_nonzero [n, K], counts [n, K, 3], fractions [n, K, F, 3]. Row keys:
    ``module``, ``kind``, ``absmax``, ``headroom_bits`` (``headroom_bits``),
    ``min_nonzero``, ``footroom_bits`` (``footroom_bits``), ``overflow`` and
    ``underflow`` (shares of the elements, 0..1), ``nonfinite`` (count). Pairs with
    nothing measured (count 0) are left out. Tensors that already hold inf/NaN come
    first (they went past the edge), then the rest by headroom, then by underflow share
    (largest first).
    """
    absmax = np.asarray(absmax, dtype=np.float64)
    min_nz = np.asarray(min_nonzero, dtype=np.float64)
    counts = np.asarray(counts)
    head = headroom_bits(absmax, float(fmt["max"]))
    foot = footroom_bits(min_nz, float(fmt["min_normal"]))
    over = overflow_share(fractions, fmt_index)
    under = underflow_share(fractions, fmt_index)
    rows = []
    for i, name in enumerate(modules):
        for k, kind in enumerate(kinds):
            if counts[i, k, 0] <= 0 and counts[i, k, 2] <= 0:
                continue
            rows.append({"module": str(name), "kind": str(kind), "absmax": float(absmax[i, k]),
                         "headroom_bits": float(head[i, k]), "min_nonzero": float(min_nz[i, k]),
                         "footroom_bits": float(foot[i, k]), "overflow": float(over[i, k]),
                         "underflow": float(under[i, k]), "nonfinite": int(counts[i, k, 2])})

    def key(r):
        h = r["headroom_bits"]
        return (0 if r["nonfinite"] else 1, math.inf if math.isnan(h) else h, -r["underflow"])

    rows.sort(key=key)
    return rows
