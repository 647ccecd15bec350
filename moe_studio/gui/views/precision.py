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
of empty plots. Everything is read from the run store, live or recorded.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHeaderView, QLabel, QSplitter,
                               QStackedWidget, QTableView, QVBoxLayout, QWidget)

from ..formats import fmt_num, fmt_pow2, fmt_share
from ...metrics import precision as P
from ...store import RunReader
from .precision_data import TENSORS, PrecisionData
from ..widgets.heatmap import HeatmapPlot
from ..widgets.plots import CurvePlot
from .dashboard import RunDashboard, move_step_markers
from ..theme import is_dark_palette, plot_colors, status_color

KIND_LABELS = {"act": "activations", "grad": "gradients", "weight": "weights"}
# Gradients are recorded as backward produced them: in fp16 mode, times the loss scale.
KIND_TITLES = {"act": "activations", "grad": "gradients (× loss scale in fp16)",
               "weight": "weights"}
FORMAT_LABELS = {"fp16": "fp16", "bf16": "bf16", "fp8_e4m3": "fp8 e4m3", "fp8_e5m2": "fp8 e5m2"}
ALL_MODULES = "__all__"
HIST_LEVELS = (-6.0, 0.0)          # log10 of the share of a tensor's elements in a bin
_MAX_EVENT_LINES = 200
_OFF_SCALE_BITS = 40               # a format max further above the data is not drawn to

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

_NUM = Qt.ItemDataRole.UserRole + 1


def _short(name: str) -> str:
    """``blocks.3.ffn.router`` -> ``b3.ffn.router``: module names fit the axes."""
    return name.replace("blocks.", "b", 1) if name.startswith("blocks.") else name


def _block_groups(modules: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """Rows of one transformer block grouped under ``b3`` with short labels
    (``attn.qkv``), the embeddings under ``emb``, other modules (the head) standing
    alone: with many layers the group names stay readable when not every module's name
    fits (two embedding rows side by side left one of them unnamed)."""
    groups: list[tuple[str, int]] = []
    inner: list[str] = []
    for n in modules:
        short = _short(n)
        block, _, rest = short.partition(".")
        name = block if n.startswith("blocks.") and rest else ""
        inner.append(rest if name else short)
        if not name and short.endswith("_emb"):
            name = "emb"
        if groups and groups[-1][0] == name and name:
            groups[-1] = (name, groups[-1][1] + 1)
        else:
            groups.append((name, 1))
    return groups, inner


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
        self.scale_plot = CurvePlot("Loss scale", y_label="loss scale")
        self.scale_plot.set_log_y(True)
        self.scale_plot.set_hover_notes(self._scale_notes)
        self.absmax_plot = CurvePlot("Abs-max over time", y_label="max |x|")
        self.absmax_plot.set_log_y(True)
        self.overflow_plot = CurvePlot("Overflow share (%)", y_label="% of elements")
        self.underflow_plot = CurvePlot("Underflow share (%): subnormal + flushed",
                                        y_label="% of elements")
        self.heatmap = HeatmapPlot("Exponent histogram", "log2 |x|  (bin [2^e, 2^(e+1)))",
                                   "", colormap=plot_colors(dark)["colormap"],
                                   fixed_levels=HIST_LEVELS, value_label="share of elements",
                                   value_format=lambda v: f"10^{v:.1f}")
        self.heatmap.set_bar_ticks([(-6.0, "1e-6"), (-4.0, "1e-4"), (-2.0, "1 %"),
                                    (0.0, "100 %")])
        self.heatmap.set_mouse_pan(True, False)
        self.heatmap.set_hover_formatter(self._hover_cell)
        self.table_title = QLabel()
        self.table_model = QStandardItemModel(0, 9, self)
        self.table_model.setHorizontalHeaderLabels(
            ["module", "kind", "max |x|", "headroom", "min |x|", "footroom", "over %",
             "under %", "inf/NaN"])
        tips = ["", "act: output, grad: parameter gradient (× loss scale), weight",
                "largest finite magnitude", "log2(format max / max |x|): doublings left "
                "before overflow", "smallest non-zero magnitude", "log2(min |x| / format's "
                "min normal): halvings left before the subnormal range (negative: already "
                "below)", "share that would overflow the format", "share that would be "
                "subnormal or flushed to zero", "inf/NaN elements in the tensor"]
        for c, tip in enumerate(tips):
            if tip:
                self.table_model.horizontalHeaderItem(c).setToolTip(tip)
        self.table_proxy = QSortFilterProxyModel(self)
        self.table_proxy.setSourceModel(self.table_model)
        self.table_proxy.setSortRole(_NUM)
        self.table = QTableView()
        self.table.setModel(self.table_proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(3, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        f = self.table.font()
        f.setPointSizeF(max(7.0, f.pointSizeF() - 1.0))
        self.table.setFont(f)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        hh = self.table.horizontalHeader()
        # Every column as wide as its contents, module names whole (a narrow window
        # scrolls sideways rather than cutting them to "b1...."); the last one stretches.
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setStretchLastSection(True)
        hh.setMinimumSectionSize(36)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        table_box = QWidget()
        tl = QVBoxLayout(table_box)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(2)
        tl.addWidget(self.table_title)
        tl.addWidget(self.table, 1)

        self._time_plots = (self.scale_plot, self.absmax_plot, self.overflow_plot,
                            self.underflow_plot)
        self._markers: list[pg.InfiniteLine] = []
        for plot in self._time_plots:
            m = pg.InfiniteLine(angle=90, movable=False)
            m.setZValue(900)
            m.hide()
            plot.plot_item.addItem(m, ignoreBounds=True)
            self._markers.append(m)
        # Skipped steps: triangles on the loss-scale curve (at the scale that failed).
        self._skip_item = pg.PlotDataItem(pen=None, symbol="t", symbolSize=9)
        self._skip_item.setZValue(950)
        self.scale_plot.plot_item.addItem(self._skip_item)
        self._event_lines: list[pg.InfiniteLine] = []
        # Format maxima on the abs-max plot (log10 positions: the plot's y is log).
        self._max_lines: dict[str, pg.InfiniteLine] = {}
        # The chosen format's zones on the heatmap: flushed, subnormal, overflow.
        self._zones = {z: pg.LinearRegionItem(orientation="vertical", movable=False)
                       for z in ("flush", "subnormal", "overflow")}
        for z in self._zones.values():
            z.setZValue(-10)          # behind the cells: the data keeps its colours
            for line in z.lines:
                line.setPen(pg.mkPen(None))
            self.heatmap.plot_item.addItem(z, ignoreBounds=True)
        self._edge_lines = {k: pg.InfiniteLine(angle=90, movable=False, label="",
                                               labelOpts={"position": 0.04, "rotateAxis": (1, 0),
                                                          "anchors": [(0, 0), (0, 0)]})
                            for k in ("min_subnormal", "min_normal", "max")}
        for line in self._edge_lines.values():
            line.setZValue(700)
            font = line.label.textItem.font()
            font.setPointSizeF(max(7.0, font.pointSizeF() - 1.5))   # runs along a short axis
            line.label.setFont(font)
            self.heatmap.plot_item.addItem(line, ignoreBounds=True)

        fractions = QSplitter(Qt.Orientation.Vertical)
        for plot in (self.overflow_plot, self.underflow_plot):
            plot.set_minimum_plot_height(80)   # the histogram below needs a row per module
        fractions.addWidget(self.overflow_plot)
        fractions.addWidget(self.underflow_plot)
        top = QSplitter(Qt.Orientation.Horizontal)
        for w in (self.scale_plot, self.absmax_plot, fractions):
            top.addWidget(w)
        top.setSizes([420, 480, 420])
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.heatmap)
        bottom.addWidget(table_box)
        bottom.setSizes([640, 720])
        self.content = QSplitter(Qt.Orientation.Vertical)
        self.content.addWidget(top)
        self.content.addWidget(bottom)
        self.content.setSizes([360, 480])
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
        self._skip_item.setData([], [])
        for line in self._event_lines:
            line.hide()
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
                         [(_short(n), n) for n in d.modules])
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
        f = self.format()
        if f is None or f not in self.data.formats or f not in self.data.fmt_table:
            return None
        return self.data.formats.index(f), self.data.fmt_table[f]

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
                    self.absmax_plot.set_series(name, x, y, label=_short(name), color=r)
                    want_abs.add(name)
            if frac is not None and k is not None and fmt is not None:
                over = 100.0 * P.overflow_share(frac, fmt[0])[:, r, k]
                if np.isfinite(over).any():
                    under = 100.0 * P.underflow_share(frac, fmt[0])[:, r, k]
                    self.overflow_plot.set_series(name, x, over, label=_short(name), color=r)
                    self.underflow_plot.set_series(name, x, under, label=_short(name), color=r)
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
        where = _short(self.data.modules[rows[0]]) if single else "all modules"
        self.absmax_plot.set_title(f"Max |x| of {kind_text} · {where}")
        self.overflow_plot.set_title(f"Overflow in {fname} (% of elements)")
        self.underflow_plot.set_title(f"Underflow in {fname}: subnormal + flushed (%)")
        self._draw_format_lines(absmax, rows, k)
        for plot in (self.overflow_plot, self.underflow_plot):
            plot.plot_item.getViewBox().enableAutoRange(axis=pg.ViewBox.YAxis)
            plot.sync_range()
            if not _series_max(plot) > 0:   # all zero: a 0..1 % axis, not pyqtgraph's ±0.5
                plot.plot_item.getViewBox().setYRange(0.0, 1.0, padding=0.02)
        self._draw_scale()

    def _draw_format_lines(self, absmax, rows, k) -> None:
        """Each format's max as a horizontal line; the y range takes in the chosen
        format's line unless it sits far above the data (bf16)."""
        c = plot_colors(is_dark_palette(self.palette()))
        chosen = self.format()
        for f, spec in self.data.fmt_table.items():
            line = self._max_lines.get(f)
            if line is None:
                line = pg.InfiniteLine(angle=0, movable=False, label="",
                                       labelOpts={"position": 0.02, "anchors": [(0, 1), (0, 1)]})
                line.setZValue(400)
                font = line.label.textItem.font()
                font.setPointSizeF(max(7.0, font.pointSizeF() - 1.5))   # fits a narrow plot
                line.label.setFont(font)
                self.absmax_plot.plot_item.addItem(line, ignoreBounds=True)
                self._max_lines[f] = line
            mx = float(spec["max"])
            line.setPos(math.log10(mx))
            bold = f == chosen
            col = QColor(status_color("failed", is_dark_palette(self.palette())) if bold
                         else QColor(c["muted"]))
            line.setPen(pg.mkPen(col, width=1.6 if bold else 1,
                                 style=Qt.PenStyle.DashLine if bold else Qt.PenStyle.DotLine))
            line.label.setFormat(f"{FORMAT_LABELS.get(f, f)} max {fmt_num(mx)}")
            line.label.setColor(col)
            line.label.fill = pg.mkBrush(QColor(*c["legend_bg"]))
            line.show()
        # fp16 (65504) and e5m2 (57344) lie 0.05 decades apart: the plot's label keeper
        # puts the second label below its line, clear of the first (line_labels).
        vb = self.absmax_plot.plot_item.getViewBox()
        vb.enableAutoRange(axis=pg.ViewBox.YAxis)
        self.absmax_plot.sync_range()
        ys = [] if absmax is None or k is None else absmax[:, rows, k]
        finite = np.asarray(ys, np.float64)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        fmt = self._fmt()
        if finite.size and fmt is not None:
            lo, hi = math.log10(finite.min()), math.log10(finite.max())
            top = math.log10(float(fmt[1]["max"]))
            if top - hi <= _OFF_SCALE_BITS * math.log10(2):
                hi = max(hi, top)
            pad = max(0.15, 0.06 * (hi - lo))
            # Room above the top line for its label ("fp16 max 6.55e+04" sits above it,
            # e5m2's just below): the label's height in decades at this plot's height.
            top_pad = pad
            line = self._max_lines.get(self.format())
            vb_h = vb.boundingRect().height()
            if line is not None and vb_h > 0 and hi >= top:
                k = min(0.45, (line.label.boundingRect().height() + 6) / vb_h)
                top_pad = max(pad, k * (hi - lo + pad) / (1 - k))
            vb.setYRange(lo - pad, hi + top_pad, padding=0)
        self.absmax_plot.place_line_labels()   # new texts, perhaps the same view

    def _draw_scale(self) -> None:
        steps, scale = self.data.scale
        dark = is_dark_palette(self.palette())
        bad = status_color("failed", dark)
        if steps.size:
            self.scale_plot.set_series("scale", steps, scale, label="loss scale",
                                       color="foreground", smooth=False)
            self.scale_plot.set_placeholder("")
            self._power_of_two_ticks(scale)
            self.scale_plot.set_title(f"Loss scale · {self.data.skipped.size} skipped step"
                                      f"{'s' if self.data.skipped.size != 1 else ''}")
        else:
            self.scale_plot.clear_series()
            self.scale_plot.set_title("Loss scale")
            self.scale_plot.set_placeholder(
                f"No loss scaling: this run trains in {html.escape(self.data.mode)}.\n"
                "fp16 mode (precision.mode) scales the loss and skips steps whose "
                "gradients overflow.")
        # skipped steps: the scale in force when the step failed (before the backoff)
        if self.data.skipped.size and steps.size:
            i = np.clip(np.searchsorted(steps, self.data.skipped) - 1, 0, steps.size - 1)
            before = np.where(steps[i] < self.data.skipped, scale[i], scale[i] * 2.0)
            # raw values: the plot's log mode maps the item's y like its curves'
            self._skip_item.setData(self.data.skipped.astype(np.float64), before)
            self._skip_item.setSymbolBrush(pg.mkBrush(bad))
            self._skip_item.setSymbolPen(pg.mkPen(bad))
            self._skip_item.show()
        else:
            self._skip_item.setData([], [])
            self._skip_item.hide()
        # non-finite events: red lines through the loss-scale plot
        nf = [e for e in self.data.events if e["kind"] == "nonfinite"][:_MAX_EVENT_LINES]
        while len(self._event_lines) < len(nf):
            line = pg.InfiniteLine(angle=90, movable=False, label="",
                                   labelOpts={"position": 0.92, "anchors": [(1, 0), (1, 0)]})
            line.setZValue(800)
            self.scale_plot.plot_item.addItem(line, ignoreBounds=True)
            self._event_lines.append(line)
        pen = pg.mkPen(bad, width=1.3, style=Qt.PenStyle.DashLine)
        for j, (line, e) in enumerate(zip(self._event_lines, nf)):
            line.setPen(pen)
            line.setPos(e["step"])
            d = e["data"]
            what = d.get("module") or "loss"
            # One label (the first event): labels of neighbouring lines would overlap.
            line.label.setFormat(f"first inf/NaN: {_short(str(what))}" if j == 0 else "")
            line.label.setColor(bad)
            line.show()
        for line in self._event_lines[len(nf):]:
            line.hide()
        if nf and not steps.size:
            self.scale_plot.set_placeholder("")
            self.scale_plot.set_title(f"Non-finite events · {len(nf)}")
        self.scale_plot.sync_range()

    def _scale_notes(self, x: float) -> list[str]:
        """The hover read-out's lines for the skipped steps near data x (within 1 % of
        the shown steps): the backoff and what overflowed, as the engine recorded it."""
        if not self.data.skipped.size:
            return []
        (x0, x1), _ = self.scale_plot.plot_item.vb.viewRange()
        near = self.data.skipped[np.abs(self.data.skipped - x) <= max(0.5, 0.01 * (x1 - x0))]
        backoffs = {e["step"]: e["data"] for e in self.data.events
                    if e["kind"] == "loss_scale_backoff"}
        out = []
        for step in near[:3].tolist():
            d = backoffs.get(int(step), {})
            line = f"skipped step {step:,}"
            if "from" in d and "to" in d:
                line += f": scale {fmt_pow2(d['from'])} → {fmt_pow2(d['to'])}"
            if d.get("module"):
                line += (f", inf/NaN {d.get('kind', 'value')} nearest the loss in "
                         f"{_short(str(d['module']))}")
            out.append(line)
        if near.size > 3:
            out.append(f"… and {near.size - 3} more skipped steps here")
        return out

    def _power_of_two_ticks(self, scale: np.ndarray) -> None:
        """Loss scales are powers of two: label them so (2^16, not 6.55·10^4)."""
        pos = scale[np.isfinite(scale) & (scale > 0)]
        if not pos.size:
            return
        lo, hi = math.floor(math.log2(pos.min())) - 1, math.ceil(math.log2(pos.max())) + 1
        every = max(1, math.ceil((hi - lo) / 8))
        major = [(k * math.log10(2.0), f"2^{k}") for k in range(lo, hi + 1) if k % every == 0]
        self.scale_plot.plot_item.getAxis("left").setTicks([major, []])

    def _draw_step(self, idx: int | None) -> None:
        fmt = self._fmt()
        kind = self.kind()
        if idx is None or not self.data.t or fmt is None or kind not in self.data.kinds:
            self.heatmap.set_matrix(np.zeros((0, 0)))
            self._fill_table([])
            return
        k = self.data.kinds.index(kind)
        s = int(self.data.steps[idx])
        fname = FORMAT_LABELS.get(self.format(), self.format())
        hist = self.data.t[TENSORS[3]][idx, :, k]            # [n, B]
        counts = self.data.t[TENSORS[2]][idx, :, k]          # [n, 3]
        first, stop = P.bin_window(hist, self.data.edges, fmt[1])
        shares = P.histogram_shares(hist[:, first:stop], counts)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(shares > 0, np.log10(shares), np.nan)
        x0 = float(self.data.edges[first]) + 0.5
        x1 = float(self.data.edges[stop - 1]) + 0.5
        self._heat_window = (first, stop)
        self.heatmap.set_matrix(m, y_labels=[_short(n) for n in self.data.modules], x_range=(x0, x1))
        groups, inner = _block_groups(self.data.modules)
        self.heatmap.set_row_groups(groups, inner)
        self._set_title_later(self.heatmap, f"log2 |x|: {KIND_LABELS.get(kind, kind)}"
                                            f" · step {s:,} · {fname} zones")
        self._draw_zones(fmt[1], float(self.data.edges[first]), float(self.data.edges[stop]))
        rows = P.edge_table(self.data.modules, self.data.kinds, self.data.t[TENSORS[0]][idx],
                            self.data.t[TENSORS[1]][idx], self.data.t[TENSORS[2]][idx],
                            self.data.t[TENSORS[4]][idx], fmt[0], fmt[1])
        mod = self.module()
        if mod is not None:
            rows = [r for r in rows if r["module"] == mod]
        self._table_rows = rows
        self.table_title.setText(f"<b>Closest to the {html.escape(fname)} edges at step "
                                 f"{s:,}</b> (click a header to sort)")
        self._fill_table(rows)

    def _draw_zones(self, fmt: dict, left: float, right: float) -> None:
        r = P.format_log2_range(fmt)
        # Flushed: below half the smallest subnormal; subnormal: up to min normal;
        # overflow: past max (its rounding tie sits inside the top bin).
        zones = {"flush": (left, r["min_subnormal"] - 1.0),
                 "subnormal": (r["min_subnormal"] - 1.0, r["min_normal"]),
                 "overflow": (r["max"], max(right, r["max"] + 1.0))}
        for z, (a, b) in zones.items():
            self._zones[z].setRegion((a, b))
            self._zones[z].show()
        names = {"min_subnormal": "min subnormal", "min_normal": "min normal", "max": "max"}
        values = {k: float(fmt[k]) for k in names}
        for key, line in self._edge_lines.items():
            line.setPos(r[key])
            # the format is in the title ("fp16 zones"): the label along the line
            # must fit the plot's height
            line.label.setFormat(f"{names[key]} {fmt_num(values[key])}")
            line.show()

    def heat_window(self) -> tuple[int, int]:
        """The exponent bins the heatmap shows: ``(first, stop)``, a slice of the
        run's ``precision_log2_edges`` bins."""
        return self._heat_window

    def zones(self) -> dict[str, tuple[float, float]]:
        """The heatmap's shaded zones as log2 spans: flush, subnormal, overflow."""
        return {z: tuple(float(v) for v in item.getRegion()) for z, item in self._zones.items()}

    def edge_positions(self) -> dict[str, float]:
        """The heatmap's format edge lines (log2): min_subnormal, min_normal, max."""
        return {k: float(line.value()) for k, line in self._edge_lines.items()}

    def _fill_table(self, rows: list[dict]) -> None:
        dark = is_dark_palette(self.palette())
        bad, warn = status_color("failed", dark), status_color("interrupted", dark)
        model = self.table_model
        model.setRowCount(len(rows))
        # Each cell set would tell the sorting proxy and the view (columns sized to their
        # contents) on its own, about 3 ms each: seconds for a default model's table, at
        # every step while training. The cells change quietly; then one update.
        model.blockSignals(True)
        for i, row in enumerate(rows):
            cells = [(_short(row["module"]), row["module"]), (row["kind"], row["kind"]),
                     (fmt_num(row["absmax"]), row["absmax"]),
                     (("inf/NaN", -math.inf) if row["nonfinite"] else
                      (fmt_num(row["headroom_bits"]), row["headroom_bits"])),
                     (fmt_num(row["min_nonzero"]), row["min_nonzero"]),
                     (fmt_num(row["footroom_bits"]), row["footroom_bits"]),
                     (fmt_share(row["overflow"]), row["overflow"]),
                     (fmt_share(row["underflow"]), row["underflow"]),
                     (f"{row['nonfinite']:,}", row["nonfinite"])]
            for c, (text, value) in enumerate(cells):
                item = model.item(i, c)
                if item is None:
                    item = QStandardItem()
                    model.setItem(i, c, item)
                item.setText(text)
                if isinstance(value, float) and math.isnan(value):
                    value = math.inf           # unmeasured sorts last
                item.setData(value, _NUM)
                if c == 0:
                    item.setToolTip(row["module"])
                if c >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                color = None
                if c == 3 and (row["headroom_bits"] < 1 or row["nonfinite"]) \
                        or c == 6 and row["overflow"] > 0 \
                        or c == 8 and row["nonfinite"] > 0:
                    color = bad
                elif c == 3 and row["headroom_bits"] < 4 or c == 5 and row["footroom_bits"] < 0:
                    color = warn
                item.setForeground(color if color is not None else self.palette().text())
        model.blockSignals(False)
        if rows:
            model.dataChanged.emit(model.index(0, 0),
                                   model.index(len(rows) - 1, model.columnCount() - 1))
        self.table_proxy.invalidate()

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
            k = self.data.kinds.index(self.kind())
            n = int(self.data.t[TENSORS[3]][idx, row, k, first + col])
            total = int(self.data.t[TENSORS[2]][idx, row, k, 0])
            lines.append(f"{n:,} of {total:,} elements"
                         + (f" ({100.0 * n / total:.3g} %)" if total else ""))
        fmt = self._fmt()
        if fmt is not None:
            r = P.format_log2_range(fmt[1])
            fname = FORMAT_LABELS.get(self.format(), self.format())
            if e >= r["max"]:
                zone = "overflows"
            elif e + 1 > r["max"]:
                zone = "normal up to the max, beyond it overflows"
            elif e >= r["min_normal"]:
                zone = "normal"
            elif e >= r["min_subnormal"] - 1:
                zone = "subnormal (fewer significant bits)"
            else:
                zone = "flushed to zero"
            lines.append(f"in {html.escape(fname)}: {zone}")
        return lines

    # ------------------------------------------------------------------ theme / status
    def _style_lines(self) -> None:
        dark = is_dark_palette(self.palette())
        c = plot_colors(dark)
        pen = pg.mkPen(QColor(c["foreground"]), width=1.2, style=Qt.PenStyle.DashLine)
        for m in self._markers:
            m.setPen(pen)
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
        nf = [e for e in self.data.events if e["kind"] == "nonfinite"]
        if nf:
            d = nf[0]["data"]
            where = f": {d.get('kind')} of {d.get('module')}" if d.get("module") else ""
            parts.append(f'<span style="color:{status_color("failed", is_dark_palette(self.palette())).name()}">'
                         f"{len(nf)} non-finite event{'s' if len(nf) != 1 else ''} (first at step "
                         f"{nf[0]['step']:,}{html.escape(where)})</span>")
        return " · ".join(parts)
