"""Precision: how close each module's numbers come to the edges of fp16, bf16 and fp8.

From the headroom records (``precision/*`` tensors, run meta ``precision_*``), the
fp16 loss-scale scalars and the ``nonfinite`` / ``loss_scale_backoff`` events:

* the loss scale over time with the skipped steps marked (a triangle where the
  GradScaler backed off) and every non-finite event as a red line;
* per-module abs-max over time of the chosen kind (activations, gradients as backward
  produced them, i.e. times the loss scale, or weights) on a log axis, against each
  format's largest value;
* a module x exponent heatmap of the log2 histogram at the selected step, with the
  chosen format's subnormal range, its flush-to-zero zone and its overflow zone shaded;
* overflow and underflow (subnormal + flushed to zero) shares per module over time for
  the chosen format;
* a sortable table of the tensors closest to the edge at the selected step: headroom
  in bits ``log2(format max / abs-max)``, footroom ``log2(min non-zero / min normal)``.

A run without headroom records gets a page saying how to turn the analysis on instead
of empty plots. Everything is read from the run store, live or recorded, by
``precision_data.PrecisionData`` (Qt-free); ``precision_curves``, ``precision_heatmap``
and ``precision_table`` draw it.
"""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QFrame, QLabel, QScrollArea, QSplitter, QStackedWidget,
                               QWidget)

from ...metrics import precision as P
from ...store import RunReader
from ..theme import is_dark_palette, plot_colors, status_color
from ..widgets.plots import CurvePlot
from .dashboard import RunDashboard, move_step_markers
from .precision_curves import AbsMaxPlot, LossScalePlot
from .precision_data import (FORMAT_LABELS, KIND_LABELS, TENSORS, PrecisionData,
                             block_groups, short_name, zone_of)
from .precision_heatmap import HIST_LEVELS, ExponentHeatmap  # noqa: F401 - re-exported
from .precision_table import EdgeTable

# Gradients are recorded as backward produced them: in fp16 mode, times the loss scale.
KIND_TITLES = {"act": "activations", "grad": "gradients (× loss scale in fp16)",
               "weight": "weights"}
ALL_MODULES = "__all__"
# px per curve plot: its title and x axis take ~70, leaving an axis box of ~145 px, where
# a linear axis labels four or more values (tests/test_gui_geometry.py checks >= 140).
PLOT_MIN_HEIGHT = 215
HISTOGRAM_MIN_HEIGHT = 200      # the exponent histogram: a readable row per module
REPORT_PLOT_MIN_HEIGHT = 80     # a report's page does not scroll

EMPTY_TEXT = (
    "<h3>No precision records in this run</h3>"
    "<p>The headroom analysis measures, every few steps, how close each module's "
    "activations, gradients and weights come to the limits of fp16, bf16 and fp8.</p>"
    "<p>To record it, turn on <b>precision.headroom</b> in the setup panel (section "
    "<i>Precision</i>, tick <i>headroom</i>; <i>headroom_every</i> sets how often), or "
    "<code>headroom = true</code> under <code>[precision]</code> in the TOML, and train "
    "again. With <b>precision.mode = fp16</b> this view also shows the loss scale and the "
    "steps the GradScaler skipped.</p>"
    "<p>The sample runs <i>fp16-overflow</i> and <i>fp16-router-fp32</i> show what it "
    "looks like.</p>")
OLD_RUN_TEXT = ("<p>This run's setup has headroom on, but it recorded none: it was made by "
                "a version without the analysis, or it stopped before its first measured "
                "step.</p>")
WAITING_TEXT = ("<h3>Waiting for the first headroom measurement…</h3>"
                "<p>It is taken on step 1 and then every <b>precision.headroom_every</b> "
                "steps.</p>")


def _select(combo: QComboBox, data: str, what: str) -> None:
    i = combo.findData(data)
    if i < 0:
        raise ValueError(f"no {what} in this run")
    combo.setCurrentIndex(i)


def _series_max(plot: CurvePlot) -> float:
    """The largest finite y over a plot's series (0.0 for none)."""
    return max((float(np.nanmax(plot.series_data(key)[1], initial=0.0))
                for key in plot.series_keys()), default=0.0)


class PrecisionDashboard(RunDashboard):
    """Loss scale, abs-max vs format limits, exponent heatmap, overflow / underflow
    shares and the closest-to-the-edge table of one run."""

    report_aspect = 0.64

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.data = PrecisionData()    # what is drawn, read without Qt
        self._drawn: tuple | None = None
        self._drawn_step: tuple | None = None
        self._table_rows: list[dict] = []
        self._heat_window = (0, 1)    # the exponent bins the heatmap shows (a slice)

        self.controls.set_layer_selector_visible(False)
        self.module_combo = QComboBox()
        self.module_combo.setToolTip("The module the over-time plots show, or all of them")
        self.kind_combo = QComboBox()
        self.kind_combo.setToolTip("Which tensors: module outputs, parameter gradients as "
                                   "backward produced them (times the fp16 loss scale), or "
                                   "weights")
        self.format_combo = QComboBox()
        self.format_combo.setToolTip("The format whose range the heatmap, the shares and the "
                                     "table measure against")
        for label, w in (("Module", self.module_combo), ("Kind", self.kind_combo),
                         ("Format", self.format_combo)):
            w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            self.controls.add_widget(QLabel(label))
            self.controls.add_widget(w)

        dark = is_dark_palette(self.palette())
        self.scale_plot = LossScalePlot(self.data)
        self.absmax_plot = AbsMaxPlot()
        self._max_lines = self.absmax_plot.max_lines
        self.overflow_plot = CurvePlot("Overflow share (%)", y_label="% of elements")
        self.underflow_plot = CurvePlot("Underflow share (%): subnormal + flushed",
                                        y_label="% of elements")
        self.heatmap = ExponentHeatmap(dark)
        self.heatmap.set_hover_formatter(self._hover_cell)
        self.edge_table = table_box = EdgeTable()
        self.table_title, self.table = table_box.title, table_box.view
        self.table_model, self.table_proxy = table_box.model, table_box.proxy

        self._time_plots = (self.scale_plot, self.absmax_plot, self.overflow_plot,
                            self.underflow_plot)
        self._markers: list[pg.InfiniteLine] = []
        for plot in self._time_plots:
            m = pg.InfiniteLine(angle=90, movable=False)
            m.setZValue(900)
            m.hide()
            plot.plot_item.addItem(m, ignoreBounds=True)
            self._markers.append(m)

        # A 1280 x 800 window with the runs panel docked leaves the view ~430 px for its
        # plots: the four curve plots side by side in one row of readable height, the
        # histogram and the table in the other (issue 13: with the shares stacked in a
        # third column each was ~20 px tall, its y labels on top of each other). A
        # shorter window scrolls rather than squeezing the plots.
        top = QSplitter(Qt.Orientation.Horizontal)
        top.setChildrenCollapsible(False)
        for w in self._time_plots:
            top.addWidget(w)
        top.setSizes([280, 280, 170, 170])
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.heatmap)
        bottom.addWidget(table_box)
        bottom.setSizes([640, 720])
        self._bottom = bottom
        self.plots = QSplitter(Qt.Orientation.Vertical)
        self.plots.setChildrenCollapsible(False)
        self.plots.addWidget(top)
        self.plots.addWidget(bottom)
        self.plots.setSizes([360, 480])
        self.content = QScrollArea()
        self.content.setObjectName("precisionPage")
        self.content.setWidgetResizable(True)
        self.content.setFrameShape(QFrame.Shape.NoFrame)
        self.content.setWidget(self.plots)
        self._set_min_heights(PLOT_MIN_HEIGHT, HISTOGRAM_MIN_HEIGHT)
        self.empty = QLabel()
        self.empty.setObjectName("precisionEmpty")
        self.empty.setWordWrap(True)
        self.empty.setTextFormat(Qt.TextFormat.RichText)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty.setMargin(40)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.content)
        self._layout.addWidget(self.stack, 1)

        self.module_combo.currentIndexChanged.connect(lambda _i: self._draw())
        self.kind_combo.currentIndexChanged.connect(lambda _i: self._draw())
        self.format_combo.currentIndexChanged.connect(lambda _i: self._draw())
        self._style_lines()
        self._show_empty()

    def _set_min_heights(self, plot: int, histogram: int) -> None:
        for p in self._time_plots:
            p.set_minimum_plot_height(plot)
        self._bottom.setMinimumHeight(histogram)

    def set_report_mode(self, on: bool) -> None:
        """For ``moe-studio report``: a picture cannot scroll, so the plots share the
        report's height (as small as a short report makes them)."""
        small = (REPORT_PLOT_MIN_HEIGHT, 0) if on else (PLOT_MIN_HEIGHT, HISTOGRAM_MIN_HEIGHT)
        self._set_min_heights(*small)
        self.content.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff if on
                                                else Qt.ScrollBarPolicy.ScrollBarAsNeeded)

    # ------------------------------------------------------------------ selection
    def module(self) -> str | None:
        """The chosen module name, or None for all modules."""
        d = self.module_combo.currentData()
        return None if d in (None, ALL_MODULES) else str(d)

    def kind(self) -> str | None:
        return self.kind_combo.currentData()

    def format(self) -> str | None:
        return self.format_combo.currentData()

    def set_module(self, name: str | None) -> None:
        """Show one module (its name as in the run meta), or all for None."""
        _select(self.module_combo, ALL_MODULES if name is None else name, f"module {name!r}")

    def set_kind(self, kind: str) -> None:
        """"act", "grad" or "weight" (those the run recorded)."""
        _select(self.kind_combo, kind, f"kind {kind!r}")

    def set_format(self, fmt: str) -> None:
        """"fp16", "bf16", "fp8_e4m3" or "fp8_e5m2" (those the run recorded)."""
        _select(self.format_combo, fmt, f"format {fmt!r}")

    @staticmethod
    def _fill_combo(combo: QComboBox, items: list[tuple[str, str]]) -> None:
        """Items ``(text, data)``; keeps the current choice when it still exists."""
        if [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())] == items:
            return
        keep = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        for text, data in items:
            combo.addItem(text, data)
        i = combo.findData(keep)
        combo.setCurrentIndex(max(i, 0))
        combo.blockSignals(False)
        combo.setEnabled(bool(items))

    # ------------------------------------------------------------------ data
    def _reset(self) -> None:
        super()._reset()
        if hasattr(self, "data"):
            self.data.reset()
        self._drawn = self._drawn_step = None
        self._table_rows = []
        for plot in self._time_plots:
            plot.clear_series()
        self.scale_plot.clear_marks()
        self._show_empty()

    def _load(self, reader: RunReader) -> None:
        self.controls.set_members(self._members_of(reader))
        self.data.load(reader, self.member())
        self._fill_combos()
        self.controls.set_steps(self.data.steps)

    def _fill_combos(self) -> None:
        d = self.data
        if not d.modules:
            return
        self._fill_combo(self.module_combo, [("All modules", ALL_MODULES)] +
                         [(short_name(n), n) for n in d.modules])
        self._fill_combo(self.kind_combo, [(KIND_LABELS.get(k, k), k) for k in d.kinds])
        self._fill_combo(self.format_combo,
                         [(FORMAT_LABELS.get(f, f), f) for f in d.formats if f in d.fmt_table])

    def _ingest(self, upd) -> bool:
        changed, new_meta = self.data.ingest(self._reader, upd, self.member())
        if new_meta:
            self._fill_combos()
        if changed:
            self.controls.set_steps(self.data.steps)
        return changed

    # ------------------------------------------------------------------ queries
    def steps(self) -> np.ndarray:
        """The steps with headroom records (what the slider scrubs)."""
        return self.data.steps

    def records(self, name: str) -> np.ndarray | None:
        """The array series of one ``precision/*`` tensor as read, [S, ...]."""
        return self.data.t.get(name)

    def modules(self) -> list[str]:
        return list(self.data.modules)

    def loss_scale(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.scale

    def skipped_steps(self) -> np.ndarray:
        return self.data.skipped

    def events(self, kind: str | None = None) -> list[dict]:
        return [e for e in self.data.events if kind is None or e["kind"] == kind]

    def step_index(self, step: int | None = None) -> int | None:
        return self.data.step_index(self.step() if step is None else step)

    def table_rows(self) -> list[dict]:
        """The closest-to-the-edge rows at the selected step (``metrics.precision.
        edge_table``), in the table's default order."""
        return list(self._table_rows)

    def has_data(self) -> bool:
        return self.data.has_data()

    def report_empty_reason(self) -> str:
        """Why a report leaves this view out ("" when it has something to show)."""
        if self.has_data():
            return ""
        return ("no precision records (fp32 without precision.headroom, or a run made "
                "before the analysis existed)")

    # ------------------------------------------------------------------ drawing
    def _show_empty(self, text: str | None = None) -> None:
        if text is None:
            text = EMPTY_TEXT
            if self._reader is not None and self._loaded and self.data.headroom_on:
                status = self._run_status or ""
                text = (WAITING_TEXT if status == "running"
                        else EMPTY_TEXT.replace("</h3>", "</h3>" + OLD_RUN_TEXT, 1))
        self.empty.setText(text)
        self.stack.setCurrentWidget(self.empty)

    def empty_text(self) -> str:
        """The empty-state message, or "" when the dashboard shows data."""
        return self.empty.text() if self.stack.currentWidget() is self.empty else ""

    def _rows(self) -> list[int]:
        return self.data.rows(self.module())

    def _show(self) -> None:
        if not self.has_data():
            self._show_empty()
            return
        self.stack.setCurrentWidget(self.content)
        key = (self.module(), self.kind(), self.format(), self.member(), self.data.version)
        if key != self._drawn:
            self._drawn = key
            self._draw_time_plots()
        idx = self.step_index()
        skey = (idx, self.module(), self.kind(), self.format(), self.data.version)
        if skey != self._drawn_step:
            self._drawn_step = skey
            self._draw_step(idx)
        self._set_markers(self.step())

    def _fmt(self) -> tuple[int, dict] | None:
        return self.data.fmt(self.format())

    def _draw_time_plots(self) -> None:
        rows = self._rows()
        kind = self.kind()
        k = self.data.kinds.index(kind) if kind in self.data.kinds else None
        fmt = self._fmt()
        x = self.data.steps.astype(np.float64)
        single = len(rows) == 1
        kind_text = KIND_TITLES.get(kind or "", kind or "")
        fname = FORMAT_LABELS.get(self.format() or "", self.format() or "")
        # abs-max and shares per module
        absmax = self.data.t.get(TENSORS[0])
        frac = self.data.t.get(TENSORS[4])
        want_abs: set[str] = set()
        want_frac: set[str] = set()
        for r in rows:
            name = self.data.modules[r]
            if absmax is not None and k is not None:
                y = absmax[:, r, k].astype(np.float64)
                if np.isfinite(y).any():      # the LM head has no weight of its own
                    self.absmax_plot.set_series(name, x, y, label=short_name(name), color=r)
                    want_abs.add(name)
            if frac is not None and k is not None and fmt is not None:
                over = 100.0 * P.overflow_share(frac, fmt[0])[:, r, k]
                if np.isfinite(over).any():
                    under = 100.0 * P.underflow_share(frac, fmt[0])[:, r, k]
                    self.overflow_plot.set_series(name, x, over, label=short_name(name), color=r)
                    self.underflow_plot.set_series(name, x, under, label=short_name(name), color=r)
                    want_frac.add(name)
        for plot, want in ((self.absmax_plot, want_abs), (self.overflow_plot, want_frac),
                           (self.underflow_plot, want_frac)):
            for key in plot.series_keys():
                if key not in want:
                    plot.remove_series(key)
            # The abs-max plot's key serves all three (same colour per module, as the
            # Experts view does); more keys, or one of many modules, would hide curves.
            if plot.plot_item.legend is not None and (plot is not self.absmax_plot
                                                      or len(want) > 12):
                plot.plot_item.legend.setVisible(False)
            plot.set_placeholder("" if want else "No headroom records yet")
        if want_frac:
            for plot, what in ((self.overflow_plot, "would overflow"),
                               (self.underflow_plot, "would be subnormal or flushed")):
                if not _series_max(plot) > 0:
                    plot.set_placeholder(f"0 % at every recorded step: no element {what} "
                                         f"in {fname}")
        where = short_name(self.data.modules[rows[0]]) if single else "all modules"
        self.absmax_plot.set_title(f"Max |x| of {kind_text} · {where}")
        self.overflow_plot.set_title(f"Overflow in {fname} (% of elements)")
        self.underflow_plot.set_title(f"Underflow in {fname}: subnormal + flushed (%)")
        values = [] if absmax is None or k is None else absmax[:, rows, k]
        self.absmax_plot.show_formats(self.data.fmt_table, self.format() if fmt is not None
                                      else None, values, is_dark_palette(self.palette()))
        for plot in (self.overflow_plot, self.underflow_plot):
            plot.plot_item.getViewBox().enableAutoRange(axis=pg.ViewBox.YAxis)
            plot.sync_range()
            if not _series_max(plot) > 0:   # all zero: a 0..1 % axis, not pyqtgraph's ±0.5
                plot.plot_item.getViewBox().setYRange(0.0, 1.0, padding=0.02)
        self.scale_plot.draw(is_dark_palette(self.palette()))

    def _draw_step(self, idx: int | None) -> None:
        fmt = self._fmt()
        kind = self.kind()
        if idx is None or not self.data.t or fmt is None or kind not in self.data.kinds:
            self.heatmap.set_matrix(np.zeros((0, 0)))
            self.edge_table.fill([])
            return
        k = self.data.kinds.index(kind)
        s = int(self.data.steps[idx])
        fname = FORMAT_LABELS.get(self.format(), self.format())
        m, first, stop = self.data.histogram(idx, k, fmt[1])
        x0 = float(self.data.edges[first]) + 0.5
        x1 = float(self.data.edges[stop - 1]) + 0.5
        self._heat_window = (first, stop)
        self.heatmap.set_matrix(m, y_labels=[short_name(n) for n in self.data.modules],
                                x_range=(x0, x1))
        groups, inner = block_groups(self.data.modules)
        self.heatmap.set_row_groups(groups, inner)
        self._set_title_later(self.heatmap, f"log2 |x|: {KIND_LABELS.get(kind, kind)}"
                                            f" · step {s:,} · {fname} zones")
        self.heatmap.show_format(fmt[1], float(self.data.edges[first]),
                                 float(self.data.edges[stop]))
        rows = self.data.edge_rows(idx, fmt, self.module())
        self._table_rows = rows
        self.table_title.setText(f"<b>Closest to the {html.escape(fname)} edges at step "
                                 f"{s:,}</b> (click a header to sort)")
        self.edge_table.fill(rows)

    def heat_window(self) -> tuple[int, int]:
        """The exponent bins the heatmap shows: ``(first, stop)``, a slice of the
        run's ``precision_log2_edges`` bins."""
        return self._heat_window

    def zones(self) -> dict[str, tuple[float, float]]:
        """The heatmap's shaded zones as log2 spans: flush, subnormal, overflow."""
        return self.heatmap.zones()

    def edge_positions(self) -> dict[str, float]:
        """The heatmap's format edge lines (log2): min_subnormal, min_normal, max."""
        return self.heatmap.edge_positions()

    def _move_markers(self, step: int | None) -> None:
        move_step_markers(self._markers, step)

    # ------------------------------------------------------------------ hover
    def _hover_cell(self, row: int, col: int, v: float) -> list[str]:
        first, _ = self._heat_window
        e = int(self.data.edges[first + col]) if first + col < self.data.edges.size else 0
        idx = self.step_index()
        name = self.data.modules[row] if row < len(self.data.modules) else "?"
        lines = [f"<b>{html.escape(name)} · {html.escape(self.kind() or '')}</b>",
                 f"2^{e} ≤ |x| &lt; 2^{e + 1}"]
        if idx is not None and self.kind() in self.data.kinds:
            n, total = self.data.bin_count(idx, row, self.data.kinds.index(self.kind()),
                                           first + col)
            lines.append(f"{n:,} of {total:,} elements"
                         + (f" ({100.0 * n / total:.3g} %)" if total else ""))
        fmt = self._fmt()
        if fmt is not None:
            fname = FORMAT_LABELS.get(self.format(), self.format())
            lines.append(f"in {html.escape(fname)}: {zone_of(e, fmt[1])}")
        return lines

    # ------------------------------------------------------------------ theme / status
    def _style_lines(self) -> None:
        dark = is_dark_palette(self.palette())
        pen = pg.mkPen(QColor(plot_colors(dark)["foreground"]), width=1.2,
                       style=Qt.PenStyle.DashLine)
        for m in self._markers:
            m.setPen(pen)
        self.heatmap.style_format(dark)

    def _palette_changed(self) -> None:
        self._style_lines()
        self.heatmap.set_colormap(plot_colors(is_dark_palette(self.palette()))["colormap"])
        self._drawn = self._drawn_step = None
        if self._reader is not None and self._loaded:
            self._show()

    def _status_extra(self) -> str:
        if not self._loaded:
            return ""
        parts = [html.escape(self.data.mode)]
        if self.data.modules:
            parts.append(f"{len(self.data.modules)} modules watched")
        if self.data.mode == "fp16" or self.data.scale[0].size:
            parts.append(f"{self.data.skipped.size} skipped step{'s' if self.data.skipped.size != 1 else ''}")
        nf = self.data.nonfinite()
        if nf:
            d = nf[0]["data"]
            where = f": {d.get('kind')} of {d.get('module')}" if d.get("module") else ""
            parts.append(f'<span style="color:{status_color("failed", is_dark_palette(self.palette())).name()}">'
                         f"{len(nf)} non-finite event{'s' if len(nf) != 1 else ''} (first at step "
                         f"{nf[0]['step']:,}{html.escape(where)})</span>")
        return " · ".join(parts)
