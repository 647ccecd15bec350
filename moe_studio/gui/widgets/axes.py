"""The axes of every figure.

``ValueAxis``, the value (y) axis of every plot: numbers as they are, and a log scale
that always reads.

pyqtgraph's own axis rescales small numbers behind an SI factor in the axis label
("probability (×0.001)" over ticks 0-700, "nats (×0.001)"), which reads as the wrong
unit; and on a log scale narrower than a decade it labels one tick or none. ``ValueAxis``
writes the values themselves (``0.0004``, ``3e-5``), never a factor, and on a log scale
picks ticks (decades, then 1-2-5, then 1..9 per decade, then evenly spaced values) so
that at least three are labelled and none overlaps.

``XAxis``: a curve plot's bottom axis (compact counts, or durations). ``LabelAxis``: an
axis of categories (tokens, experts, modules) for heatmaps and bar charts.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QFontMetrics

from ..formats import compact_number, format_duration, format_small, log_label

MIN_LOG_TICKS = 3


def no_si_prefix(axis: pg.AxisItem) -> None:
    """Turn off pyqtgraph's SI rescaling of an axis (the "(×0.001)" in its label)."""
    axis.enableAutoSIPrefix(False)


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


class XAxis(pg.AxisItem):
    """Bottom axis with compact tick labels: ``"250k"``, ``"2.5M"`` for large counts
    (tokens, steps), or durations for wall time (``x_format = "duration"``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.x_format = "number"

    def tickStrings(self, values, scale, spacing):
        if self.logMode or not values:
            return super().tickStrings(values, scale, spacing)
        if self.x_format == "duration":
            top = max(abs(v * scale) for v in values)
            return [format_duration(v * scale, spacing * scale, top) for v in values]
        if max(abs(v * scale) for v in values) < 1e4:
            return super().tickStrings(values, scale, spacing)
        return [compact_number(v * scale, spacing * scale) for v in values]


class LabelAxis(pg.AxisItem):
    """An axis of categories: cell ``i`` spans [i, i + 1) and is labelled ``labels[i]``.
    Labels that would overlap are thinned to every 2nd, 5th, 10th, ... one.

    A left axis may also group its rows (``set_groups``: the experts of one layer, the
    modules of one block): each group's name is drawn once, centred on its rows beside a
    bracket, and the rows inside keep short labels (``e3``, ``attn.qkv``), so a row whose
    own label does not fit is still read as "row 3 of layer 2", never as part of the
    labelled row above it."""

    GROUP_GAP = 9        # px between the row labels and the group names (bracket inside)

    def __init__(self, orientation: str, **kw):
        super().__init__(orientation, **kw)
        self._labels: list[str] | None = None
        self._max_chars = 1
        self._strides: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
        # [(name, first row, stop row)]: contiguous groups; "" names an ungrouped row
        self._groups: list[tuple[str, int, int]] | None = None

    def set_strides(self, strides: Sequence[int] | None) -> None:
        """The label strides to choose from when labels must be thinned (e.g. 1, 2, 4, 8,
        16, ... for a stack of 8-expert layers, so every layer starts with a label)."""
        new = tuple(sorted(set(int(s) for s in strides))) if strides else \
            (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
        if new != self._strides:        # a new picture costs a full axis redraw
            self._strides = new
            self.picture = None
            self.update()

    def set_labels(self, labels: Sequence[str] | None) -> None:
        new = None if labels is None else [str(s) for s in labels]
        if new == self._labels:
            return
        self._labels = new
        self._max_chars = max((len(s) for s in new), default=1) if new else 1
        self.picture = None
        self.update()

    def set_groups(self, groups: Sequence[tuple[str, int]] | None) -> None:
        """Rows in groups: ``[(name, n_rows), ...]`` in row order (left axis only). A
        group named "" holds rows that belong to no group (their labels stand alone)."""
        new = None
        if groups:
            new, start = [], 0
            for name, n in groups:
                new.append((str(name), start, start + int(n)))
                start += int(n)
        if new != self._groups:
            self._groups = new
            self.picture = None
            self.update()

    def groups(self) -> list[tuple[str, int, int]] | None:
        """``[(name, first row, stop row)]`` or None."""
        return None if self._groups is None else list(self._groups)

    def labels(self) -> list[str] | None:
        return None if self._labels is None else list(self._labels)

    def _metrics(self) -> QFontMetrics:
        return QFontMetrics(self.style["tickFont"] or self.font())

    def row_pitch(self, fm: QFontMetrics) -> float:
        """Pixels between row labels. Grouped rows pack them as tight as pyqtgraph
        draws them (0.8 of the font's line height: ascent and descent, no leading):
        more rows keep their own label, and the group names carry the rest."""
        if self._groups and self.orientation in ("left", "right"):
            return math.ceil(0.8 * fm.height())
        return fm.height() + 1

    def _in_group(self) -> np.ndarray | None:
        """Per row: True where it belongs to a named group (its label may be thinned,
        the group's name stands for it)."""
        if not self._groups or self._labels is None:
            return None
        named = np.zeros(len(self._labels), bool)
        for name, a, b in self._groups:
            if name:
                named[a:min(b, named.size)] = True
        return named

    def tickValues(self, minVal, maxVal, size):
        if self._labels is None:
            return super().tickValues(minVal, maxVal, size)
        n = len(self._labels)
        minVal, maxVal = min(minVal, maxVal), max(minVal, maxVal)   # inverted views
        if n == 0 or size <= 0 or maxVal <= minVal:
            return [(1.0, [])]
        fm = self._metrics()
        lo = max(0, int(math.floor(minVal)))
        hi = min(n, int(math.ceil(maxVal)))
        if self.orientation in ("bottom", "top"):
            shown = self._labels[lo:hi]
            if 0 < len(shown) <= 4096:
                need = max(fm.horizontalAdvance(s) for s in shown) + 3
            else:
                need = fm.horizontalAdvance("M" * min(self._max_chars, 12)) + 5
        else:
            need = self.row_pitch(fm)
        per_cell = size / (maxVal - minVal)
        stride = 1
        for s in self._strides:
            stride = s
            if s * per_cell >= need:
                break
        named = self._in_group() if self.orientation in ("left", "right") else None
        if named is None or stride == 1:
            start = lo - lo % stride
            return [(float(stride), [i + 0.5 for i in range(start, hi, stride) if 0 <= i < n])]
        # Grouped rows: rows that stand alone come first (nothing else names them),
        # then each group's rows every `stride` from its first; a label too close to one
        # already kept is left out.
        want = []
        for name, a, b in self._groups:
            if not name:
                want += [(0, i) for i in range(a, b)]
            else:
                want += [(1, i) for i in range(a, b) if (i - a) % stride == 0]
        kept: list[int] = []
        rows_needed = need / per_cell
        for _, i in sorted(want):
            if lo <= i < hi and all(abs(i - k) >= rows_needed for k in kept):
                kept.append(i)
        return [(float(stride), [i + 0.5 for i in sorted(kept)])]

    def tickStrings(self, values, scale, spacing):
        if self._labels is None:
            return super().tickStrings(values, scale, spacing)
        out = []
        for v in values:
            i = int(math.floor(v))
            out.append(self._labels[i] if 0 <= i < len(self._labels) else "")
        return out

    def _group_width(self) -> float:
        """Width the group names and brackets add left of the row labels (0: none)."""
        if not self._groups or self._labels is None or self.orientation != "left":
            return 0.0
        names = [g[0] for g in self._groups if g[0]]
        if not names:
            return 0.0
        fm = self._metrics()
        return self.GROUP_GAP + max(fm.horizontalAdvance(g) for g in names) + 4

    def _updateMaxTextSize(self, x: int):
        # The row labels' width, as pyqtgraph measures it, plus the group column: one
        # figure, so the two never fight over the axis width (a redraw each time).
        if self.orientation in ("left", "right") and self._labels is not None and self._groups:
            fm = self._metrics()
            x = max(fm.horizontalAdvance(s) for s in self._labels) + 1 + self._group_width() \
                if self._labels else x
        super()._updateMaxTextSize(x)

    def generateDrawSpecs(self, p):
        specs = super().generateDrawSpecs(p)
        if specs is None:
            return specs
        axis_spec, tick_specs, text_specs = specs
        if self._groups and self._labels is not None and self.orientation == "left":
            self._add_group_specs(p, tick_specs, text_specs)
        return axis_spec, tick_specs, text_specs

    def _add_group_specs(self, p, tick_specs, text_specs) -> None:
        """Group names and brackets left of the row labels (the width for them is
        claimed in ``_updateMaxTextSize``)."""
        fm = QFontMetrics(p.font())
        inner_w = max((fm.horizontalAdvance(s) for s in self._labels), default=0)
        names = [g for g in self._groups if g[0]]
        group_w = max((fm.horizontalAdvance(g[0]) for g in names), default=0)
        bounds = self.mapRectFromParent(self.geometry())
        lo, hi = self.range
        if hi == lo or not names:
            return
        scale = -bounds.height() / (hi - lo)
        off = lo * scale - bounds.height()

        def y_of(v: float) -> float:
            return v * scale - off

        offset = max(0, self.style["tickLength"]) + self.style["tickTextOffset"][0]
        right = bounds.right() - offset - inner_w - self.GROUP_GAP
        pen = self.tickPen()
        top, bottom = bounds.top(), bounds.bottom()
        h = fm.height()
        for name, a, b in names:
            y0, y1 = sorted((y_of(a), y_of(b)))
            y0, y1 = max(y0, top), min(y1, bottom)
            if y1 - y0 < 2:
                continue       # scrolled out of view
            bx = right + self.GROUP_GAP / 2
            tick_specs.append((pen, pg.Point(bx, y0 + 1.5), pg.Point(bx, y1 - 1.5)))
            if y1 - y0 >= 0.8 * h:
                yc = (y0 + y1) / 2
                rect = QRectF(right - group_w - 2, yc - h / 2, group_w + 2, h)
                flags = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter | \
                    Qt.TextFlag.TextDontClip
                text_specs.append((rect, flags, name))
