"""The Precision view's two plots with more than curves on them: the fp16 loss scale
(skipped steps as triangles at the scale that failed, non-finite events as red lines,
power-of-two ticks, hover notes on the skips) and the abs-max over time against each
format's largest value (horizontal lines, the chosen format's in bold, the y range
taking it in)."""
from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from ..formats import fmt_num
from ..theme import plot_colors, status_color
from ..widgets.plots import CurvePlot
from .precision_data import FORMAT_LABELS, PrecisionData, power_of_two_ticks, short_name

MAX_EVENT_LINES = 200
OFF_SCALE_BITS = 40               # a format max further above the data is not drawn to


class LossScalePlot(CurvePlot):
    """The loss scale of a ``PrecisionData`` on a log axis (``draw``)."""

    def __init__(self, data: PrecisionData, parent: QWidget | None = None):
        super().__init__("Loss scale", y_label="loss scale", parent=parent)
        self.data = data
        self.set_log_y(True)
        self.set_hover_notes(self._notes)
        # Skipped steps: triangles on the loss-scale curve (at the scale that failed).
        self.skip_item = pg.PlotDataItem(pen=None, symbol="t", symbolSize=9)
        self.skip_item.setZValue(950)
        self.plot_item.addItem(self.skip_item)
        self.event_lines: list[pg.InfiniteLine] = []

    def clear_marks(self) -> None:
        self.skip_item.setData([], [])
        for line in self.event_lines:
            line.hide()

    def draw(self, dark: bool) -> None:
        """Draw the data's loss scale, skipped steps and non-finite events."""
        d = self.data
        steps, scale = d.scale
        bad = status_color("failed", dark)
        if steps.size:
            self.set_series("scale", steps, scale, label="loss scale", color="foreground",
                            smooth=False)
            self.set_placeholder("")
            ticks = power_of_two_ticks(scale)
            if ticks:      # loss scales are powers of two: 2^16, not 6.55·10^4
                self.plot_item.getAxis("left").setTicks([ticks, []])
            self.set_title(f"Loss scale · {d.skipped.size} skipped step"
                           f"{'s' if d.skipped.size != 1 else ''}")
        else:
            self.clear_series()
            self.set_title("Loss scale")
            self.set_placeholder(
                "No loss scaling: an inspection does not train.\nIts headroom plots show "
                "what the checkpoint's activations would do in each format."
                if d.inspection else
                f"No loss scaling: this run trains in {html.escape(d.mode)}.\n"
                "fp16 mode (precision.mode) scales the loss and skips steps whose "
                "gradients overflow.")
        x, y = d.skipped_marks()
        if x.size:
            # raw values: the plot's log mode maps the item's y like its curves'
            self.skip_item.setData(x, y)
            self.skip_item.setSymbolBrush(pg.mkBrush(bad))
            self.skip_item.setSymbolPen(pg.mkPen(bad))
            self.skip_item.show()
        else:
            self.skip_item.setData([], [])
            self.skip_item.hide()
        self._event_marks(d.nonfinite()[:MAX_EVENT_LINES], bad)
        if d.nonfinite() and not steps.size:
            self.set_placeholder("")
            self.set_title(f"Non-finite events · {len(d.nonfinite()[:MAX_EVENT_LINES])}")
        self.sync_range()

    def _event_marks(self, nf: list[dict], bad: QColor) -> None:
        """Non-finite events: red lines through the plot."""
        while len(self.event_lines) < len(nf):
            line = pg.InfiniteLine(angle=90, movable=False, label="",
                                   labelOpts={"position": 0.92, "anchors": [(1, 0), (1, 0)]})
            line.setZValue(800)
            self.plot_item.addItem(line, ignoreBounds=True)
            self.event_lines.append(line)
        pen = pg.mkPen(bad, width=1.3, style=Qt.PenStyle.DashLine)
        for j, (line, e) in enumerate(zip(self.event_lines, nf)):
            line.setPen(pen)
            line.setPos(e["step"])
            what = e["data"].get("module") or "loss"
            # One label (the first event): labels of neighbouring lines would overlap.
            line.label.setFormat(f"first inf/NaN: {short_name(str(what))}" if j == 0 else "")
            line.label.setColor(bad)
            line.show()
        for line in self.event_lines[len(nf):]:
            line.hide()

    def _notes(self, x: float) -> list[str]:
        """The hover read-out's lines for the skipped steps near data x (within 1 % of
        the shown steps)."""
        (x0, x1), _ = self.plot_item.vb.viewRange()
        return self.data.skip_notes(x, max(0.5, 0.01 * (x1 - x0)))


class AbsMaxPlot(CurvePlot):
    """Max |x| per module over time on a log axis, with each format's max as a line."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Abs-max over time", y_label="max |x|", parent=parent)
        self.set_log_y(True)
        # Format maxima (log10 positions: the plot's y is log).
        self.max_lines: dict[str, pg.InfiniteLine] = {}

    def show_formats(self, fmt_table: dict, chosen: str | None, values: np.ndarray,
                     dark: bool) -> None:
        """Each format's max as a horizontal line; the y range takes in ``values`` (the
        curves' data) and the chosen format's line unless it sits far above them (bf16)."""
        c = plot_colors(dark)
        # From the largest max down: the label keeper places the labels in this order,
        # so each close line below (fp16, e5m2, e4m3) can put its label under its line,
        # clear of the ones above, in a plot as narrow as a quarter of the view.
        for f, spec in sorted(fmt_table.items(), key=lambda fs: -float(fs[1]["max"])):
            line = self.max_lines.get(f)
            if line is None:
                line = pg.InfiniteLine(angle=0, movable=False, label="",
                                       labelOpts={"position": 0.02, "anchors": [(0, 1), (0, 1)]})
                line.setZValue(400)
                font = line.label.textItem.font()
                font.setPointSizeF(max(7.0, font.pointSizeF() - 1.5))   # fits a narrow plot
                line.label.setFont(font)
                self.plot_item.addItem(line, ignoreBounds=True)
                self.max_lines[f] = line
            mx = float(spec["max"])
            line.setPos(math.log10(mx))
            bold = f == chosen
            col = QColor(status_color("failed", dark) if bold else QColor(c["muted"]))
            line.setPen(pg.mkPen(col, width=1.6 if bold else 1,
                                 style=Qt.PenStyle.DashLine if bold else Qt.PenStyle.DotLine))
            line.label.setFormat(f"{FORMAT_LABELS.get(f, f)} max {fmt_num(mx)}")
            line.label.setColor(col)
            line.label.fill = pg.mkBrush(QColor(*c["legend_bg"]))
            line.show()
        # fp16 (65504) and e5m2 (57344) lie 0.05 decades apart: the plot's label keeper
        # puts the second label below its line, clear of the first (line_labels).
        vb = self.plot_item.getViewBox()
        vb.enableAutoRange(axis=pg.ViewBox.YAxis)
        self.sync_range()
        finite = np.asarray(values, np.float64)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        if finite.size and chosen in fmt_table:
            lo, hi = math.log10(finite.min()), math.log10(finite.max())
            top = math.log10(float(fmt_table[chosen]["max"]))
            if top - hi <= OFF_SCALE_BITS * math.log10(2):
                hi = max(hi, top)
            pad = max(0.15, 0.06 * (hi - lo))
            # Room above the top line for its label ("fp16 max 6.55e+04" sits above it,
            # e5m2's just below): the label's height in decades at this plot's height.
            top_pad = pad
            line = self.max_lines.get(chosen)
            vb_h = vb.boundingRect().height()
            if line is not None and vb_h > 0 and hi >= top:
                k = min(0.45, (line.label.boundingRect().height() + 6) / vb_h)
                top_pad = max(pad, k * (hi - lo + pad) / (1 - k))
            vb.setYRange(lo - pad, hi + top_pad, padding=0)
        self.place_line_labels()   # new texts, perhaps the same view
