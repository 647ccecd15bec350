"""``CurvePlot``'s hover read-out: a vertical line snapped to the nearest data point, a
dot on each visible series, and a text box with every series' value there.

A mixin of ``CurvePlot``: it uses the plot's ``_series``, ``_pi``, ``_vb``, ``_hover``
(the frame's text box), ``_resolve``, ``_smoothed`` and ``_format_x``.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg

from ..formats import fmt_value
from .curve_series import CurveSeries


class CurveHoverMixin:
    """``hover_at`` / ``set_hover_notes`` of ``CurvePlot``."""

    def _init_hover(self) -> None:
        pi = self._pi
        # Hover read-out: a vertical line and a dot on each visible series beside the
        # frame's text box.
        self._vline = pg.InfiniteLine(angle=90, movable=False)
        self._dots = pg.ScatterPlotItem(size=7, pxMode=True)
        for item in (self._vline, self._dots):
            item.setZValue(1000)
            item.hide()
            pi.addItem(item, ignoreBounds=True)
        self._hover_notes = None     # set_hover_notes

    def hide_hover(self) -> None:
        super().hide_hover()
        for item in (self._vline, self._dots):
            item.hide()

    def _hover_point(self, x: float, y: float) -> str:
        return self.hover_at(x)

    def set_hover_notes(self, notes) -> None:
        """``notes(x) -> list[str]``: lines added to the hover read-out at data x, about
        what is drawn there besides the series (e.g. markers); None: none."""
        self._hover_notes = notes

    def hover_at(self, x: float) -> str:
        """Show the read-out for data x (the mouse calls this); returns its plain text."""
        rows = []
        for s in self._series.values():
            if not s.smooth.isVisible() or s.x.size == 0:
                continue
            i = self._nearest(s, x)
            rows.append((s, i, s.x[i]))
        if not rows:
            self.hide_hover()
            return ""
        # Snap the line to the data point closest to the mouse.
        x_snap = min((r[2] for r in rows), key=lambda v: abs(v - x))
        fg, muted = self._colors["foreground"], self._colors["muted"]
        lines = [f'<span style="color:{fg}"><b>{html.escape(self._x_label)} '
                 f'{self._format_x(x_snap)}</b></span>']
        plain = [f"{self._x_label} {self._format_x(x_snap)}"]
        spots = []
        for s, i, xi in rows:
            c = self._resolve(s.color).name()
            v = float(s.ys[i])
            text = fmt_value(v, missing=None)
            if self._smoothed(s):
                text += f' <span style="color:{muted}">({fmt_value(float(s.y[i]), missing=None)})</span>'
            if xi != x_snap:
                text += f' <span style="color:{muted}">@ {self._format_x(xi)}</span>'
            lines.append(f'<span style="color:{c}">■</span> '
                         f'<span style="color:{fg}">{html.escape(s.label)}: {text}</span>')
            plain.append(f"{s.label}: {fmt_value(v, missing=None)}")
            if math.isfinite(v) and (not self._log_y or v > 0):
                spots.append({"pos": (xi, math.log10(v) if self._log_y else v),
                              "brush": pg.mkBrush(c), "pen": pg.mkPen(self._colors["background"])})
        for note in (self._hover_notes(x) if self._hover_notes is not None else []):
            lines.append(f'<span style="color:{fg}">{html.escape(note)}</span>')
            plain.append(note)
        self._vline.setPos(x_snap)
        self._dots.setData(spots)
        self._hover.setHtml('<div style="font-size:8pt">' + "<br>".join(lines) + "</div>")
        (x0, x1), (_, y1) = self._vb.viewRange()
        right_half = x_snap > (x0 + x1) / 2
        self._hover.setAnchor((1, 0) if right_half else (0, 0))
        pad = (x1 - x0) * 0.01
        self._hover.setPos(x_snap - pad if right_half else x_snap + pad, y1)
        for item in (self._vline, self._dots, self._hover):
            item.show()
        return "\n".join(plain)

    @staticmethod
    def _nearest(s: CurveSeries, x: float) -> int:
        if not s.sorted_x:
            return int(np.nanargmin(np.abs(s.x - x)))
        i = int(np.searchsorted(s.x, x))
        if i <= 0:
            return 0
        if i >= s.x.size:
            return s.x.size - 1
        return i if abs(s.x[i] - x) < abs(x - s.x[i - 1]) else i - 1
