"""Gates: how sure the routers are, per MoE layer, over training.

* the router-probability distribution over time as TensorBoard-style percentile bands
  (from the ``router_probs/L{i}`` histograms; all layers pooled in the overview);
* the histogram at the selected step, with the uniform probability 1/E marked;
* mean router entropy and mean top-1 probability over time (``moe/L{i}/entropy``,
  ``moe/L{i}/top1_prob``), with their uniform-router references;
* router-logit magnitude, mean and max |logit| (``moe/L{i}/logit_absmean`` /
  ``logit_absmax``): what the z-loss keeps small.

Every plot marks the selected step; everything is read from the run store through
``gates_data.GatesData`` (no Qt there): this module only draws.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGridLayout, QWidget

from ...metrics.routing import histogram_percentiles
from ...store import RunReader
from .gates_data import GatesData, histogram_at
from ..widgets.bars import BandPlot, BarPlot
from ..widgets.line_labels import ReferenceLine, hold_side
from ..widgets.plots import CurvePlot
from .dashboard import DENSE_STATUS, RunDashboard, move_step_markers
from .run_data import moe_blocks_of
from ..theme import is_dark_palette, plot_colors


class GateDashboard(RunDashboard):
    """Router-probability bands, histogram, entropy, top-1 probability, logit size."""

    routes_tokens = True

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.data = GatesData()     # what is drawn, read without Qt
        self._drawn_curves: tuple | None = None
        self._drawn_bands: tuple | None = None
        self._pooled = self.data.pooled_histogram(None)

        self.bands = BandPlot("Router probabilities over time", "step", "probability")
        self.histogram = BarPlot("Router probabilities at step", "router probability",
                                 "% of probabilities")
        self.histogram.set_value_format(lambda v: f"{v:.2f} %")
        self.bands.setToolTip("Nested bands: min-max, 7-93, 16-84 and 31-69 percentiles of every "
                              "router probability\nof the batch (TensorBoard's distribution "
                              "view); the line is the median.")
        self.entropy = CurvePlot("Router entropy (nats)")
        self.top1 = CurvePlot("Mean top-1 probability")
        self.logits = CurvePlot("Router-logit magnitude |logit|")
        self._curve_plots = {"entropy": self.entropy, "top1_prob": self.top1,
                             "logit": self.logits}
        self._markers: dict[str, pg.InfiniteLine] = {}
        self._refs: dict[str, pg.InfiniteLine] = {}
        for key, plot in self._curve_plots.items():
            m = pg.InfiniteLine(angle=90, movable=False)
            m.setZValue(900)
            m.hide()
            plot.plot_item.addItem(m, ignoreBounds=True)
            self._markers[key] = m
            if key != "logit":
                # entropy's reference is its maximum (text above it), top-1's its
                # minimum (text below it): the side no curve can reach, a little off the
                # line (a curve may run along it). At the left end: the corner a legend
                # takes last (it tries the right-hand corners first).
                side = 1.1 if key == "entropy" else -0.1
                ref = ReferenceLine(angle=0, movable=False, label="",
                                     labelOpts={"position": 0.03, "anchors": [(0, side)] * 2})
                hold_side(ref)       # placed clear of the legend, never on the data's side
                ref.hide()
                plot.plot_item.addItem(ref, ignoreBounds=False)
                self._refs[key] = ref
        self.logits.plot_item.setToolTip("The ST-MoE z-loss, mean(logsumexp(logits)^2), keeps "
                                         "router logits small: large |logit| means\nsaturated, "
                                         "over-confident gates and fp16/bf16 round-off in the softmax.")

        grid = QGridLayout()
        grid.setSpacing(6)
        grid.addWidget(self.bands, 0, 0, 1, 2)
        grid.addWidget(self.histogram, 0, 2)
        grid.addWidget(self.entropy, 1, 0)
        grid.addWidget(self.top1, 1, 1)
        grid.addWidget(self.logits, 1, 2)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        for c in range(3):
            grid.setColumnStretch(c, 1)
        self._layout.addLayout(grid, 1)
        self._style_lines()

    # ------------------------------------------------------------------ data
    def _reset(self) -> None:
        super()._reset()
        self.data.reset()
        self._drawn_curves = None
        self._drawn_bands = None
        for plot in self._curve_plots.values():
            plot.clear_series()
        self.bands.set_bands([], np.zeros((0, 9)))
        self.histogram.set_bars(np.zeros((1, 0)))

    def _load(self, reader: RunReader) -> None:
        self.controls.set_members(self._members_of(reader))
        blocks = moe_blocks_of(reader)
        self.controls.set_layers(blocks)
        self.data.load(reader, self.member(), blocks)
        self.controls.set_steps(self.data.steps())

    def _ingest(self, upd) -> bool:
        changed = self.data.ingest(self._reader, upd, self.member())
        if changed:
            self.controls.set_steps(self.data.steps())
        return changed

    # ------------------------------------------------------------------ queries
    def pooled_histogram(self, layer: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, edges, counts [S, B])`` of one layer, or of all layers pooled."""
        return self.data.pooled_histogram(layer)

    def percentile_bands(self, layer: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [S], percentiles [S, 9])`` of the router probabilities shown."""
        return self.data.percentile_bands(layer)

    # ------------------------------------------------------------------ drawing
    def _show(self) -> None:
        layer, step = self.layer(), self.step()
        where = "all layers pooled" if layer is None else f"layer {layer}"
        bkey = (layer, self.member(), self.data.version)
        if bkey != self._drawn_bands:   # only the step marker moves while scrubbing
            self._drawn_bands = bkey
            self._pooled = self.data.pooled_histogram(layer)
            self.bands.set_title(f"Router probabilities over time · {where}")
            self.bands.set_bands(self._pooled[0], histogram_percentiles(self._pooled[1],
                                                                        self._pooled[2]))
        at = histogram_at(self._pooled, step)
        if at is not None:
            s, centres, width, share = at
            self._set_title_later(self.histogram, f"Histogram at step {s:,} · {where}")
            self.histogram.set_bars(share, x=centres, width=width, group_names=[where])
        else:
            self.histogram.set_bars(np.zeros((1, 0)))
        E = self.data.n_experts
        if E:
            self.histogram.set_references([(1.0 / E, f"uniform 1/{E}")], vertical=True)
        key = (layer, self.member(), self.data.version)
        if key != self._drawn_curves:
            self._drawn_curves = key
            self._draw_curves(layer)
        self._set_markers(step)

    def _move_markers(self, step: int | None) -> None:
        self.bands.set_marker(step)
        move_step_markers(self._markers.values(), step)

    def _draw_curves(self, layer: int | None) -> None:
        all_blocks = self.data.blocks
        blocks = all_blocks if layer is None else [layer]
        single = len(blocks) == 1
        want: dict[CurvePlot, set[str]] = {p: set() for p in self._curve_plots.values()}
        for j, b in enumerate(blocks):
            color = all_blocks.index(b) if b in all_blocks else j
            for name, plot, label, dash in (
                    ("entropy", self.entropy, f"L{b}", False),
                    ("top1_prob", self.top1, f"L{b}", False),
                    ("logit_absmean", self.logits, "mean" if single else f"L{b} mean", False),
                    ("logit_absmax", self.logits, "max" if single else f"L{b} max", True)):
                data = self.data.curve(b, name)
                if data is None:
                    continue
                k = f"L{b}|{name}"
                plot.set_series(k, data[0], data[1], label=label,
                                color=(color if not single else (1 if dash else 0)), dash=dash)
                want[plot].add(k)
        E = self.data.n_experts
        if E:   # before the ranges are synced: the lines make room for their labels
            self._set_ref("entropy", math.log(E), f"uniform router ln {E} = {math.log(E):.2f}")
            self._set_ref("top1_prob", 1.0 / E, f"uniform 1/{E}")
        for plot, keys in want.items():
            for k in plot.series_keys():
                if k not in keys:
                    plot.remove_series(k)
            # Layers have the same colours in all three plots: the entropy plot's key is
            # enough (a key per plot would cover the curves of these small plots).
            if not single and plot is not self.entropy and plot.plot_item.legend is not None:
                plot.plot_item.legend.setVisible(False)
            plot.sync_range()
        self.logits.set_title("Router-logit magnitude |logit|" if single
                              else "Router |logit|: solid mean, dashed max")

    def _set_ref(self, key: str, y: float, text: str) -> None:
        ref = self._refs[key]
        ref.show()            # the label only re-renders while visible
        ref.setPos(y)
        ref.label.setFormat(text)

    def _style_lines(self) -> None:
        c = plot_colors(is_dark_palette(self.palette()))
        pen = pg.mkPen(QColor(c["foreground"]), width=1.2, style=Qt.PenStyle.DashLine)
        for m in self._markers.values():
            m.setPen(pen)
        ref_pen = pg.mkPen(QColor(c["muted"]), width=1, style=Qt.PenStyle.DotLine)
        for r in self._refs.values():
            r.setPen(ref_pen)
            r.label.setColor(QColor(c["muted"]))

    def _palette_changed(self) -> None:
        self._style_lines()

    def _status_extra(self) -> str:
        if self._loaded and not self.data.blocks:
            return DENSE_STATUS
        return f"{len(self.data.blocks)} MoE layers × {self.data.n_experts} experts"
