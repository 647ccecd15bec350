"""Bar charts and percentile bands for the routing views, updated in place.

``BarPlot``: groups of bars (one group per layer, one bar per expert; or one group of
histogram bins) with optional reference lines (the uniform load). ``BandPlot``: a
distribution over time drawn as TensorBoard draws it, nested percentile bands
(min-max, 7-93, 16-84, 31-69) around the median. Both share ``FigureWidget``'s
hover box and PNG / SVG / CSV export.
"""
from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from ...metrics.routing import BAND_PERCENTILES
from . import line_labels
from .figure import FigureWidget
from ..formats import fmt_value
from .axes import LabelAxis
from ..theme import series_color


class BarPlot(FigureWidget):
    """Grouped bars. ``set_bars(values [G, n])``: bar ``i`` of group ``g`` at category
    ``i`` (labelled by ``x_labels``) or at numeric ``x[i]`` (``x`` given: a histogram,
    bars of ``width``)."""

    def __init__(self, title: str = "", x_label: str = "", y_label: str = "",
                 parent: QWidget | None = None):
        self._x_axis = LabelAxis("bottom")
        super().__init__(title, x_label, y_label, axis_items={"bottom": self._x_axis},
                         parent=parent)
        self._x_axis.setStyle(maxTickLevel=0)
        self._pi.getAxis("left").setWidth(48)
        self._pi.getAxis("left").enableAutoSIPrefix(False)
        self._pi.showGrid(x=False, y=True, alpha=self._colors["grid_alpha"])
        self._vb.setMouseEnabled(x=False, y=False)
        self._items: list[pg.BarGraphItem] = []
        self._values = np.zeros((0, 0))
        self._names: list[str] = []
        self._x_labels: list[str] | None = None
        self._x: np.ndarray | None = None
        self._width = 1.0
        self._colors_spec: list | None = None
        self._highlight: np.ndarray | None = None
        self._refs: list[tuple[pg.InfiniteLine, str]] = []
        self._value_format = fmt_value
        self._apply_theme()
        # reference labels ("uniform 384") flip inside the axis box rather than be cut
        for sig in (self._vb.sigTransformChanged, self._vb.sigResized):
            sig.connect(lambda *_: line_labels.keep_inside(self._pi))

    def set_value_format(self, fn) -> None:
        self._value_format = fn

    def set_bars(self, values, *, group_names: Sequence[str] | None = None,
                 x_labels: Sequence[str] | None = None, x=None, width: float | None = None,
                 colors: Sequence | None = None, highlight=None) -> None:
        """Show ``values`` [G, n] (or [n]); ``colors``: one per group (theme series
        index or colour); ``highlight``: bool [G, n], bars drawn with a strong outline
        (e.g. dead experts)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 1:
            v = v[None]
        G, n = v.shape
        shape_changed = v.shape != self._values.shape
        self._values = v
        self._names = list(group_names) if group_names is not None else [""] * G
        self._colors_spec = list(colors) if colors is not None else list(range(G))
        self._highlight = None if highlight is None else np.asarray(highlight, bool).reshape(G, n)
        if x is None:
            self._x = None
            self._x_labels = list(x_labels) if x_labels is not None else [str(i) for i in range(n)]
            self._x_axis.set_labels(self._x_labels)
            self._width = 0.8 / max(G, 1)
        else:
            self._x = np.asarray(x, dtype=np.float64)
            self._x_labels = None
            self._x_axis.set_labels(None)
            self._width = float(width if width is not None else
                                (np.min(np.diff(self._x)) if n > 1 else 1.0)) / max(G, 1)
        while len(self._items) < G:
            item = pg.BarGraphItem(x0=[], height=[], width=1.0)
            self._pi.addItem(item)
            self._items.append(item)
        for item in self._items[G:]:
            item.hide()
        self._draw()
        if shape_changed:
            self.auto_range()

    def _positions(self, g: int) -> np.ndarray:
        n = self._values.shape[1]
        G = self._values.shape[0]
        if self._x is None:
            return np.arange(n) + 0.1 + g * self._width
        return self._x - self._width * G / 2 + g * self._width

    def _draw(self) -> None:
        dark_bg = QColor(self._colors["background"])
        for g, item in enumerate(self._items[:self._values.shape[0]]):
            c = self._resolve(self._colors_spec[g] if self._colors_spec else g)
            pens = None
            if self._highlight is not None and self._highlight[g].any():
                hl = QColor("#d62728") if dark_bg.lightness() > 128 else QColor("#ff6b6b")
                pens = [pg.mkPen(hl, width=2.5) if h else pg.mkPen(c.darker(130), width=0.5)
                        for h in self._highlight[g]]
            opts = dict(x0=self._positions(g), height=np.nan_to_num(self._values[g]),
                        width=self._width, brush=pg.mkBrush(c))
            if pens is not None:
                opts["pens"] = pens
                opts["pen"] = None
            else:
                opts["pens"] = None
                opts["pen"] = pg.mkPen(c.darker(130), width=0.5)
            item.setOpts(**opts)
            item.show()

    def _resolve(self, spec) -> QColor:
        if isinstance(spec, QColor):
            return QColor(spec)
        if isinstance(spec, (int, np.integer)):
            return QColor(series_color(int(spec), QColor(self._colors["background"]).lightness() < 128))
        return QColor(spec)

    def values(self) -> np.ndarray:
        return self._values

    def bar_items(self) -> list[pg.BarGraphItem]:
        return self._items[:self._values.shape[0]]

    def set_references(self, refs: Sequence[tuple[float, str]], vertical: bool = False) -> None:
        """Dashed reference lines: horizontal at y (``vertical=False``, e.g. the uniform
        load) or vertical at x, each with a short label."""
        while len(self._refs) < len(refs):
            line = pg.InfiniteLine(angle=0, movable=False,
                                   label="", labelOpts={"position": 0.98, "anchors": [(1, 0), (1, 0)]})
            line.setZValue(600)
            self._pi.addItem(line, ignoreBounds=False)
            self._refs.append((line, ""))
        for i, (line, _) in enumerate(self._refs):
            if i < len(refs):
                pos, text = refs[i]
                line.show()       # the label only re-renders while visible
                line.setAngle(90 if vertical else 0)
                line.setPos(float(pos))
                # under a horizontal line: the bars reach above it (the view's top is
                # the tallest bar), while there is always room down to zero
                line.label.anchors = [(1, 0), (1, 0)] if not vertical else [(0, 0), (0, 0)]
                line.label.setFormat(text)
                self._refs[i] = (line, text)
            else:
                line.hide()
        self._style_refs()
        line_labels.keep_inside(self._pi)

    def _style_refs(self) -> None:
        c = QColor(self._colors["foreground"])
        fill = pg.mkBrush(QColor(*self._colors["legend_bg"]))
        for line, _ in self._refs:
            line.setPen(pg.mkPen(c, width=1.2, style=Qt.PenStyle.DashLine))
            line.label.setColor(c)
            line.label.fill = fill      # readable where it crosses a bar
            line.label.update()

    def auto_range(self) -> None:
        self._vb.enableAutoRange()
        self._vb.autoRange(padding=0.04)

    def hover_at(self, x: float, y: float) -> str:
        if self._values.size == 0:
            return ""
        n = self._values.shape[1]
        if self._x is None:
            i = int(math.floor(x))
        else:
            i = int(np.argmin(np.abs(self._x - x)))
            if abs(self._x[i] - x) > self._width * self._values.shape[0]:
                return ""
        if not 0 <= i < n:
            return ""
        head = self._x_labels[i] if self._x_labels else fmt_value(float(self._x[i]))
        lines = [f"<b>{html.escape(self._pi.getAxis('bottom').labelText or 'x')} "
                 f"{html.escape(head)}</b>"]
        plain = [head]
        for g in range(self._values.shape[0]):
            c = self._resolve(self._colors_spec[g] if self._colors_spec else g).name()
            name = self._names[g] if g < len(self._names) else ""
            val = self._value_format(float(self._values[g, i]))
            flag = " (dead)" if self._highlight is not None and self._highlight[g, i] else ""
            lines.append(f'<span style="color:{c}">■</span> {html.escape(name)}{":" if name else ""} '
                         f"{val}{flag}")
            plain.append(f"{name}: {val}{flag}")
        self._show_hover(lines, x, y)
        return "\n".join(plain)

    def csv_rows(self):
        rows = []
        for g in range(self._values.shape[0]):
            for i in range(self._values.shape[1]):
                xi = self._x_labels[i] if self._x_labels else float(self._x[i])
                rows.append([self._names[g] if g < len(self._names) else "", xi,
                             float(self._values[g, i])])
        return ["group", self._pi.getAxis("bottom").labelText or "x",
                self._pi.getAxis("left").labelText or "value"], rows

    def _theme_changed(self) -> None:
        self._pi.showGrid(x=False, y=True, alpha=self._colors["grid_alpha"])
        if hasattr(self, "_items") and self._values.size:
            self._draw()
        if hasattr(self, "_refs"):
            self._style_refs()


class BandPlot(FigureWidget):
    """A distribution over steps as nested percentile bands around the median.

    ``set_bands(steps [S], pct [S, 9])`` with the columns of ``BAND_PERCENTILES``
    (min, 7, 16, 31, 50, 69, 84, 93, max).
    """

    _PAIRS = ((0, 8), (1, 7), (2, 6), (3, 5))
    _ALPHA = (45, 70, 95, 125)

    def __init__(self, title: str = "", x_label: str = "step", y_label: str = "",
                 parent: QWidget | None = None):
        super().__init__(title, x_label, y_label, parent=parent)
        self._pi.getAxis("left").setWidth(48)
        self._steps = np.zeros(0)
        self._pct = np.zeros((0, len(BAND_PERCENTILES)))
        self._edges = [pg.PlotCurveItem() for _ in range(2 * len(self._PAIRS))]
        self._fills = []
        for k in range(len(self._PAIRS)):
            lo, hi = self._edges[2 * k], self._edges[2 * k + 1]
            fill = pg.FillBetweenItem(lo, hi)
            fill.setZValue(10 + k)
            self._pi.addItem(lo)
            self._pi.addItem(hi)
            self._pi.addItem(fill)
            self._fills.append(fill)
        self._median = pg.PlotCurveItem()
        self._median.setZValue(50)
        self._pi.addItem(self._median)
        self._marker = pg.InfiniteLine(angle=90, movable=False)
        self._marker.setZValue(60)
        self._marker.hide()
        self._pi.addItem(self._marker, ignoreBounds=True)
        self._color_index = 0
        # A key to the bands, fixed in the view's top-left corner (view-box pixels).
        self._caption = pg.TextItem("bands: min–max · 7–93 · 16–84 · 31–69 %   line: median",
                                    anchor=(0, 0))
        self._caption.setParentItem(self._vb)
        self._caption.setPos(4, 2)
        self._caption.setZValue(70)
        self._apply_theme()

    def set_bands(self, steps, pct) -> None:
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        p = np.asarray(pct, dtype=np.float64).reshape(s.size, len(BAND_PERCENTILES))
        keep = np.all(np.isfinite(p), axis=1)
        self._steps, self._pct = s[keep], p[keep]
        for k, (a, b) in enumerate(self._PAIRS):
            self._edges[2 * k].setData(self._steps, self._pct[:, a])
            self._edges[2 * k + 1].setData(self._steps, self._pct[:, b])
        self._median.setData(self._steps, self._pct[:, 4])

    def bands(self) -> tuple[np.ndarray, np.ndarray]:
        return self._steps, self._pct

    def set_marker(self, step: float | None) -> None:
        if step is None:
            self._marker.hide()
        else:
            self._marker.setPos(float(step))
            self._marker.show()

    def hover_at(self, x: float, y: float) -> str:
        if self._steps.size == 0:
            return ""
        i = int(np.argmin(np.abs(self._steps - x)))
        step = self._steps[i]
        names = ["max" if q == 100 else "min" if q == 0 else f"p{q}" for q in BAND_PERCENTILES]
        lines = [f"<b>step {int(step):,}</b>"]
        for name, v in reversed(list(zip(names, self._pct[i]))):
            lines.append(f"{name}: {fmt_value(float(v))}")
        self._show_hover(lines, step, y)
        return "\n".join([f"step {int(step)}"] + lines[1:])

    def csv_rows(self):
        head = ["step"] + [("min" if q == 0 else "max" if q == 100 else f"p{q}")
                           for q in BAND_PERCENTILES]
        return head, [[int(s)] + [float(v) for v in row]
                      for s, row in zip(self._steps.tolist(), self._pct)]

    def _theme_changed(self) -> None:
        if not hasattr(self, "_fills"):
            return
        dark = QColor(self._colors["background"]).lightness() < 128
        base = QColor(series_color(self._color_index, dark))
        for fill, alpha in zip(self._fills, self._ALPHA):
            c = QColor(base)
            c.setAlpha(alpha)
            fill.setBrush(pg.mkBrush(c))
            fill.setPen(pg.mkPen(None))
        edge = QColor(base)
        edge.setAlpha(60)
        for e in self._edges:
            e.setPen(pg.mkPen(edge, width=0.6))
        self._median.setPen(pg.mkPen(base.darker(125) if not dark else base.lighter(120), width=2))
        self._marker.setPen(pg.mkPen(QColor(self._colors["foreground"]), width=1.2,
                                     style=Qt.PenStyle.DashLine))
        self._pi.showGrid(x=True, y=True, alpha=self._colors["grid_alpha"])
        self._caption.setColor(QColor(self._colors["muted"]))
