"""The Precision view's exponent histogram: a module x log2-bin heatmap of the share of
each module's elements per bin, with the chosen format's flush-to-zero, subnormal and
overflow zones shaded behind the cells and its edges (min subnormal, min normal, max)
drawn as labelled lines."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from ...metrics import precision as P
from ..formats import fmt_num
from ..theme import plot_colors, status_color
from ..widgets.heatmap import HeatmapPlot

HIST_LEVELS = (-6.0, 0.0)          # log10 of the share of a tensor's elements in a bin
EDGE_NAMES = {"min_subnormal": "min subnormal", "min_normal": "min normal", "max": "max"}


class ExponentHeatmap(HeatmapPlot):
    """The heatmap plus a format's zones and edge lines (``show_format``)."""

    def __init__(self, dark: bool, parent: QWidget | None = None):
        super().__init__("Exponent histogram", "log2 |x|  (bin [2^e, 2^(e+1)))", "",
                         colormap=plot_colors(dark)["colormap"], fixed_levels=HIST_LEVELS,
                         value_label="share of elements", value_format=lambda v: f"10^{v:.1f}",
                         parent=parent)
        self.set_bar_ticks([(-6.0, "1e-6"), (-4.0, "1e-4"), (-2.0, "1 %"), (0.0, "100 %")])
        self.set_mouse_pan(True, False)
        # The chosen format's zones: flushed, subnormal, overflow.
        self._zones = {z: pg.LinearRegionItem(orientation="vertical", movable=False)
                       for z in ("flush", "subnormal", "overflow")}
        for z in self._zones.values():
            z.setZValue(-10)          # behind the cells: the data keeps its colours
            for line in z.lines:
                line.setPen(pg.mkPen(None))
            self.plot_item.addItem(z, ignoreBounds=True)
        self._edge_lines = {k: pg.InfiniteLine(angle=90, movable=False, label="",
                                               labelOpts={"position": 0.04, "rotateAxis": (1, 0),
                                                          "anchors": [(0, 0), (0, 0)]})
                            for k in EDGE_NAMES}
        for line in self._edge_lines.values():
            line.setZValue(700)
            font = line.label.textItem.font()
            font.setPointSizeF(max(7.0, font.pointSizeF() - 1.5))   # runs along a short axis
            line.label.setFont(font)
            self.plot_item.addItem(line, ignoreBounds=True)

    def show_format(self, fmt: dict, left: float, right: float) -> None:
        """Shade ``fmt``'s zones and draw its edges over the bins ``left``..``right``
        (log2)."""
        r = P.format_log2_range(fmt)
        # Flushed: below half the smallest subnormal; subnormal: up to min normal;
        # overflow: past max (its rounding tie sits inside the top bin).
        zones = {"flush": (left, r["min_subnormal"] - 1.0),
                 "subnormal": (r["min_subnormal"] - 1.0, r["min_normal"]),
                 "overflow": (r["max"], max(right, r["max"] + 1.0))}
        for z, (a, b) in zones.items():
            self._zones[z].setRegion((a, b))
            self._zones[z].show()
        for key, line in self._edge_lines.items():
            line.setPos(r[key])
            # the format is in the title ("fp16 zones"): the label along the line
            # must fit the plot's height
            line.label.setFormat(f"{EDGE_NAMES[key]} {fmt_num(float(fmt[key]))}")
            line.show()

    def zones(self) -> dict[str, tuple[float, float]]:
        """The shaded zones as log2 spans: flush, subnormal, overflow."""
        return {z: tuple(float(v) for v in item.getRegion()) for z, item in self._zones.items()}

    def edge_positions(self) -> dict[str, float]:
        """The format edge lines (log2): min_subnormal, min_normal, max."""
        return {k: float(line.value()) for k, line in self._edge_lines.items()}

    def style_format(self, dark: bool) -> None:
        """Zone fills and edge pens of the theme."""
        c = plot_colors(dark)
        bad, warn = status_color("failed", dark), status_color("interrupted", dark)
        fills = {"flush": QColor(c["muted"]), "subnormal": QColor(warn), "overflow": QColor(bad)}
        for z, item in self._zones.items():
            col = QColor(fills[z])
            col.setAlpha(55 if dark else 45)
            item.setBrush(pg.mkBrush(col))
            item.update()
        fg = QColor(c["foreground"])
        for key, line in self._edge_lines.items():
            col = QColor(bad) if key == "max" else QColor(warn) if key == "min_normal" else fg
            line.setPen(pg.mkPen(col, width=1.4, style=Qt.PenStyle.DashLine))
            line.label.setColor(col)
            line.label.fill = pg.mkBrush(QColor(*c["legend_bg"]))
