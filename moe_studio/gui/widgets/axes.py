"""The value (y) axis of every plot: numbers as they are, and a log scale that always
reads.

pyqtgraph's own axis rescales small numbers behind an SI factor in the axis label
("probability (×0.001)" over ticks 0-700, "nats (×0.001)"), which reads as the wrong
unit; and on a log scale narrower than a decade it labels one tick or none. ``ValueAxis``
writes the values themselves (``0.0004``, ``3e-5``), never a factor, and on a log scale
picks ticks (decades, then 1-2-5, then 1..9 per decade, then evenly spaced values) so
that at least three are labelled and none overlaps.
"""
from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtGui import QFontMetrics

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
MIN_LOG_TICKS = 3


def no_si_prefix(axis: pg.AxisItem) -> None:
    """Turn off pyqtgraph's SI rescaling of an axis (the "(×0.001)" in its label)."""
    axis.enableAutoSIPrefix(False)


def format_small(v: float, spacing: float) -> str:
    """A tick value as written: plain decimals to the precision the tick spacing needs,
    or ``3e-5`` for values below 0.001 (no row of zeros)."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a < 1e-3 or a >= 1e6:
        mant, exp = f"{v:.2e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    places = max(0, math.ceil(-math.log10(spacing))) if spacing > 0 else 3
    return f"{v:.{min(places, 6)}f}"


def log_label(v: float) -> str:
    """A value on a log axis: ``0.02``, ``300``, ``10⁵``, ``2·10⁻⁴``."""
    if v <= 0 or not math.isfinite(v):
        return ""
    if 1 <= v < 1e4:
        return f"{v:.4g}"
    if 1e-3 <= v < 1:
        return f"{v:.3g}"
    exp = math.floor(math.log10(v) + 1e-9)
    mant = v / 10 ** exp
    sup = str(exp).translate(_SUPERSCRIPT)
    return f"10{sup}" if abs(mant - 1) < 1e-6 else f"{mant:.2g}·10{sup}"


def log_ticks(lo: float, hi: float, length_px: float, label_px: float) -> list[float]:
    """Tick values (in data units, not log10) for a log axis spanning 10**lo..10**hi
    over ``length_px`` pixels, labels ``label_px`` tall. The sparsest of: decades (every
    k-th when many), 1-2-5, 1..9 per decade, that gives ``MIN_LOG_TICKS`` labels at
    least a label apart; else as many as fit of those values and of evenly spaced
    ones (a range narrower than a decade), the roundest first. Never overlapping."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo or length_px <= 0:
        return []
    per_decade = length_px / (hi - lo)

    def apart(a: float, b: float) -> bool:
        return abs(math.log10(a) - math.log10(b)) * per_decade >= label_px

    def fits(vals: list[float]) -> bool:
        return all(apart(a, b) for a, b in zip(vals, vals[1:]))

    # a label centred on its tick must not stick out of the axis (pyqtgraph drops it)
    margin = 0.5 * label_px / per_decade

    def inside(vals) -> list[float]:
        return [v for v in vals if v > 0 and lo + margin <= math.log10(v) <= hi - margin]

    k0, k1 = math.floor(lo) - 1, math.ceil(hi) + 1
    decades = inside(10.0 ** k for k in range(k0, k1 + 1))
    if len(decades) >= MIN_LOG_TICKS:
        for stride in range(1, len(decades)):
            sub = decades[::stride]
            if len(sub) >= MIN_LOG_TICKS and fits(sub):
                return sub
    tiers = [inside(m * 10.0 ** k for k in range(k0, k1 + 1) for m in mults)
             for mults in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9))]
    for vals in tiers:
        if len(vals) >= MIN_LOG_TICKS and fits(vals):
            return vals
    # Evenly spaced values, for a range narrower than the 1..9 steps resolve.
    a, b = 10.0 ** lo, 10.0 ** hi
    mag = 10.0 ** math.floor(math.log10((b - a) / MIN_LOG_TICKS))
    even: list[float] = []
    for step in (m * mag for m in (10, 5, 2, 1, 0.5, 0.2, 0.1)):   # sparsest first
        vals = inside(i * step for i in range(math.ceil(a / step), math.floor(b / step) + 1))
        if len(vals) >= MIN_LOG_TICKS and fits(vals):
            return vals
        even += [v for v in vals if v not in even]
    # Nothing regular fits: as many as fit, roundest first (decades, 5s, 2s, ...).
    def roundness(v: float) -> tuple:
        exp = math.floor(math.log10(v) + 1e-9)
        digits = f"{v / 10 ** exp:.6g}".replace(".", "").rstrip("0")
        return (len(digits), digits not in ("1", "5", "2"), not digits.endswith("5"), -v)
    pool = sorted(set(decades + tiers[1] + even))
    kept: list[float] = []
    for v in sorted(pool, key=roundness):
        if len(kept) >= MIN_LOG_TICKS and roundness(v)[0] > 1:
            break       # enough: no 3.9 between 3 and 5
        if all(apart(v, k) for k in kept):
            kept.append(v)
    if len(kept) < MIN_LOG_TICKS:
        # Round values alone leave gaps: pack from the top down, as many as fit.
        packed: list[float] = []
        for v in reversed(pool):
            if not packed or apart(v, packed[-1]):
                packed.append(v)
        if len(packed) > len(kept):
            kept = packed
    return sorted(kept)


class ValueAxis(pg.AxisItem):
    """A left / right value axis: no SI factor, small values written out, log ticks
    that always label at least three values (see the module docstring)."""

    def __init__(self, orientation: str = "left", **kw):
        super().__init__(orientation, **kw)
        self.enableAutoSIPrefix(False)
        self._log_values: list[float] = []

    def _label_px(self) -> float:
        fm = QFontMetrics(self.style["tickFont"] or self.font())
        return fm.height() * 0.8 + 1      # pyqtgraph draws labels 0.8 of the font height

    def tickValues(self, minVal, maxVal, size):
        if not self.logMode:
            return super().tickValues(minVal, maxVal, size)
        lo, hi = min(minVal, maxVal), max(minVal, maxVal)
        vals = log_ticks(lo, hi, size, self._label_px())
        self._log_values = vals
        if not vals:
            return super().tickValues(minVal, maxVal, size)
        return [(1.0, [math.log10(v) for v in vals])]

    def tickStrings(self, values, scale, spacing):
        if self.logMode:
            return [log_label(10.0 ** v) for v in values]
        return [format_small(v * scale, spacing * scale) for v in values]
