"""Experts: how evenly the experts are used, per MoE layer, over training.

From ``moe/tokens_per_expert`` (and ``moe/dropped_per_expert``, ``moe/bias``):

* tokens per expert at the selected step, as bars with the uniform load marked (all
  layers: one bar group per layer) and dead experts outlined;
* a layer x expert heatmap of load / uniform at the selected step;
* an expert x step heatmap of load / uniform over the whole run;
* balance over time: coefficient of variation, max / mean load, share dropped by
  capacity, dead experts (no tokens in the last N steps) and, with the aux-loss-free
  balancer, the router biases.

Clicking a heatmap cell lists the probe tokens that expert received at the nearest
recorded probe snapshot. Everything is read through ``experts_data.ExpertsData`` (no
Qt there): this module only draws.
"""
from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QGridLayout, QLabel, QSpinBox, QSplitter, QTabWidget, QVBoxLayout,
                               QWidget)

from ...store import RunReader
from .experts_data import DEFAULT_DEAD_WINDOW, ExpertsData, probe_choices
from ..widgets.bars import BarPlot
from .coselect_view import CoSelectionView
from .domain_load_view import DomainLoadView
from ..widgets.heatmap import HeatmapPlot
from ..widgets.plots import CurvePlot
from ..widgets.routed_text import TokenListPanel, token_rows
from .row_drops import show_row_drops
from .dashboard import DENSE_STATUS, RunDashboard, move_step_markers
from .run_data import PROBE_ARRAYS, SnapshotCache, moe_blocks_of
from ..widgets.stage_marks import StageMarks, stage_boundaries
from ..theme import diverging_colormap, is_dark_palette, plot_colors, series_color


class ExpertsDashboard(RunDashboard):
    """Expert load: bars, layer x expert and expert x step heatmaps, balance curves."""

    routes_tokens = True

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.data = ExpertsData()    # what is drawn, read without Qt
        self._drawn: tuple | None = None
        self._snaps: SnapshotCache | None = None

        self.dead_window = QSpinBox()
        self.dead_window.setRange(1, 1_000_000)
        self.dead_window.setValue(DEFAULT_DEAD_WINDOW)
        self.dead_window.setSuffix(" steps")
        self.dead_window.setToolTip("An expert is dead when it received no tokens in any "
                                    "record of this many most recent steps")
        self.controls.add_widget(QLabel("Dead after"))
        self.controls.add_widget(self.dead_window)

        self.bars = BarPlot("Tokens per expert", "expert", "tokens (all k choices)")
        self.bars.set_value_format(lambda v: f"{v:,.0f}")
        self.layer_map = HeatmapPlot("Load ÷ uniform, layer × expert", "expert", "layer",
                                     colormap=self._diverging(), fixed_levels=(0.0, 2.0),
                                     annotate=True,
                                     value_format=lambda v: f"{v:.2f}")
        self.step_map = HeatmapPlot("Load ÷ uniform over time", "step", "expert",
                                    colormap=self._diverging(), fixed_levels=(0.0, 2.0),
                                    value_label="load ÷ uniform",
                                    value_format=lambda v: f"{v:.2f}")
        self.step_map.set_mouse_pan(True, False)
        for h in (self.layer_map, self.step_map):
            h.set_bar_ticks([(0.0, "0"), (0.5, "0.5"), (1.0, "1"), (1.5, "1.5"), (2.0, "2")])
        self.cv = CurvePlot("Load CV (σ ÷ mean)")
        self.max_mean = CurvePlot("Max ÷ mean load")
        self.dropped = CurvePlot("Dropped tokens (%)")
        self.dead = CurvePlot("Dead experts")
        self.bias = CurvePlot("Balancing bias")
        self.bias.hide()   # only routers with balancing biases record them (_draw shows it)
        self.tokens = TokenListPanel()
        for plot in (self.dropped, self.dead):
            plot.plot_item.getViewBox().setLimits(yMin=-0.05)
        self._curves = {"cv": self.cv, "max_mean": self.max_mean, "dropped": self.dropped,
                        "dead": self.dead, "bias": self.bias}
        self._stage_marks = StageMarks()
        self._markers = {}
        for key, plot in self._curves.items():
            m = pg.InfiniteLine(angle=90, movable=False)
            m.setZValue(900)
            m.hide()
            plot.plot_item.addItem(m, ignoreBounds=True)
            self._markers[key] = m

        # Which colour is which layer, under the bars (a key inside would cover bars).
        self.bars_key = QLabel()
        self.bars_key.setObjectName("barsKey")
        self.bars_key.setTextFormat(Qt.TextFormat.RichText)
        self.bars_key.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.bars_key.setWordWrap(True)
        self.bars_key.hide()
        bars_box = QWidget()
        bl = QVBoxLayout(bars_box)
        bl.setContentsMargins(0, 0, 0, 2)
        bl.setSpacing(0)
        bl.addWidget(self.bars, 1)
        bl.addWidget(self.bars_key)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(bars_box)
        top.addWidget(self.layer_map)
        top.addWidget(self.tokens)
        top.setStretchFactor(0, 5)
        top.setStretchFactor(1, 4)
        top.setStretchFactor(2, 3)
        top.setSizes([400, 370, 240])
        curves = QGridLayout()
        curves.setSpacing(6)
        for c, plot in enumerate(self._curves.values()):
            curves.addWidget(plot, 0, c)
        box = QWidget()
        box.setLayout(curves)
        curves.setContentsMargins(0, 0, 0, 0)
        # Inspections also recorded whole-corpus totals, beside the time map: the load of
        # each domain and which expert pairs fire together (hidden for training runs).
        self.domain_load = DomainLoadView()
        self.coselect = CoSelectionView()
        self.totals = QTabWidget()
        self.totals.setObjectName("inspectionTotals")
        self.totals.setDocumentMode(True)
        self.totals.addTab(self.domain_load, "Load per domain")
        self.totals.addTab(self.coselect, "Expert pairs")
        self.totals.hide()
        middle = QSplitter(Qt.Orientation.Horizontal)
        middle.addWidget(self.step_map)
        middle.addWidget(self.totals)
        middle.setSizes([600, 400])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(middle)
        split.addWidget(box)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 3)
        split.setSizes([330, 240, 230])
        self._layout.addWidget(split, 1)

        self.dead_window.valueChanged.connect(self._on_window)
        self.layer_map.cellClicked.connect(self._on_layer_cell)
        self.step_map.cellClicked.connect(self._on_step_cell)
        self.layer_map.set_hover_formatter(self._hover_layer_cell)
        self.step_map.set_hover_formatter(self._hover_step_cell)
        self._style_lines()

    def _diverging(self) -> str:
        return diverging_colormap(self.palette())

    # ------------------------------------------------------------------ data
    def _reset(self) -> None:
        super()._reset()
        self.data.reset()
        self._drawn = None
        self._snaps = None
        self.dropped.set_placeholder("")
        for plot in self._curves.values():
            plot.clear_series()
        self.tokens.clear("Click a heatmap cell to list the probe tokens that expert received")
        self.totals.hide()

    def _load(self, reader: RunReader) -> None:
        self.controls.set_members(self._members_of(reader))
        blocks = moe_blocks_of(reader)
        self.controls.set_layers(blocks)
        m = self.member()
        self.data.dead_window = self.dead_window.value()
        self.data.load(reader, m, blocks)
        # A flat zero line alone would not say whether nothing was dropped or nothing measured.
        self.dropped.set_placeholder("Dropless (capacity_factor 0): no token is ever dropped"
                                     if self.data.dropless else "")
        self._snaps = SnapshotCache(reader, member=m, required=PROBE_ARRAYS)
        self._read_totals(reader, m)
        self.controls.set_steps(self.data.steps)

    def _ingest(self, upd) -> bool:
        if upd.new_snapshots and self._snaps is not None:
            self._snaps.refresh_steps()
        if not upd.new_tensor_steps:
            return False
        r, m = self._reader, self.member()
        if not self.coselect.has_data():   # an inspection writes them when it ends
            self._read_totals(r, m)
        if not self.data.ingest(r, m):
            return False
        self.controls.set_steps(self.data.steps)
        return True

    def _read_totals(self, reader, member: int) -> None:
        shown = self.domain_load.set_reader(reader, member)
        shown = self.coselect.set_reader(reader, member) or shown
        self.totals.setVisible(shown)

    def _on_window(self, v: int) -> None:
        self.data.set_dead_window(v)
        self._draw()

    # ------------------------------------------------------------------ queries
    def step_index(self, step: int | None = None) -> int | None:
        return self.data.step_index(self.step() if step is None else step)

    def tokens_per_expert(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(steps [S], tokens [S, n_blocks, E])`` as read from the store."""
        return self.data.steps, self.data.tokens()

    def derived(self, key: str) -> np.ndarray | None:
        """A balance series: "cv", "max_mean", "dropped" (%), "dead", "dead_mask",
        "over_uniform" ([S, n_blocks(, E)])."""
        return self.data.derived(key)

    # ------------------------------------------------------------------ drawing
    def _set_bars_key(self, names: list[str], colors: list[int], reference: str) -> None:
        """One line under the bars: the layer colours of the bar groups (several layers)
        and what the dashed line marks. On the plot, the line's label sat on the bars
        (every expert near the uniform load has a bar through it) and hid their tops."""
        dark = is_dark_palette(self.palette())
        parts = []
        if names:
            parts.append("layer " + " ".join(
                f'<span style="color:{series_color(c, dark)}">■</span>&nbsp;{html.escape(n)}'
                for n, c in zip(names, colors)))
        if reference:
            parts.append(f"╌╌ {html.escape(reference)}")
        text = " · ".join(parts)
        if self.bars_key.text() != text:
            self.bars_key.setText(text)
        self.bars_key.setVisible(bool(parts))

    def _show(self) -> None:
        data = self.data
        tpe = data.tokens()
        layer = self.layer()
        idx = self.step_index()
        if tpe is None or idx is None or layer not in (None, *data.blocks):
            return
        rows = data.rows(layer)
        E = tpe.shape[-1]
        where = "all layers" if layer is None else f"layer {layer}"
        s = int(data.steps[idx])
        experts = data.names(E)
        # bars: tokens per expert at the step
        vals, dead, uniform = data.at_step(idx, rows)
        names = [f"L{data.blocks[r]}" for r in rows]
        self._set_title_later(self.bars, f"Tokens per expert · step {s:,} · {where}")
        colors = [r if layer is None else 0 for r in rows]
        self.bars.set_bars(vals, group_names=names, x_labels=experts, colors=colors,
                           highlight=dead)
        n_dead = int(dead.sum())
        self._set_bars_key(names if len(rows) > 1 else [], colors,
                           f"uniform {uniform:,.0f}" + (f" · {n_dead} dead" if n_dead else ""))
        self.bars.set_references([(uniform, "")])
        # layer x expert at the step
        self._set_title_later(self.layer_map, f"Load ÷ uniform · step {s:,}")
        self.layer_map.set_matrix(data.derived("over_uniform")[idx], x_labels=experts,
                                  y_labels=[f"L{b}" for b in data.blocks])
        # expert x step over the run
        key = (layer, self.member(), data.version)
        if key != self._drawn:
            self._drawn = key
            self._draw_series(layer, rows, E)
        self._set_markers(s)

    def _move_markers(self, step: int | None) -> None:
        self.step_map.set_marker(step)
        move_step_markers(self._markers.values(), step)

    def _draw_series(self, layer: int | None, rows: list[int], E: int) -> None:
        data = self.data
        blocks, steps = data.blocks, data.steps
        mat, labels = data.over_time(layer)   # [rows*E, S]
        self.step_map.set_title("Load ÷ uniform over time · " +
                                ("all layers" if layer is None else f"layer {layer}"))
        lo, hi = (int(steps[0]), int(steps[-1])) if steps.size else (0, 1)
        self.step_map.set_matrix(mat, y_labels=labels, x_range=(lo, hi))
        self.step_map.set_separators(rows=[E * k for k in range(1, len(rows))])
        self.step_map.set_row_groups([(f"L{blocks[r]}", E) for r in rows]
                                     if layer is None else None,
                                     [n for _ in rows for n in data.names(E)])
        single = layer is not None
        for key, plot in self._curves.items():
            if key == "bias":
                continue
            series = data.derived(key)
            want = set()
            for r in rows:
                k = f"L{blocks[r]}"
                plot.set_series(k, steps, series[:, r].astype(np.float64), label=k,
                                color=0 if single else r)
                want.add(k)
            for k in plot.series_keys():
                if k not in want:
                    plot.remove_series(k)
            # One key is enough: every balance plot colours the layers alike (as the bars).
            if plot is not self.cv and plot.plot_item.legend is not None:
                plot.plot_item.legend.setVisible(False)
            plot.sync_range()
        show_row_drops(self.dropped, self._reader, self.member(), rows)
        self._stage_marks.show(self._curves.values(), stage_boundaries(self._reader.meta)
                               if self._reader is not None else [], lambda s: s)
        bias = data.bias_series(layer)
        self.bias.setVisible(bool(bias))
        if bias:
            want = set()
            for k, color, y in bias:
                self.bias.set_series(k, steps, y, label=k, color=color)
                want.add(k)
            self.bias.set_title(f"Balancing bias per expert · layer {layer}" if single
                                else "Balancing bias spread (max − min)")
            for k in self.bias.series_keys():
                if k not in want:
                    self.bias.remove_series(k)
            self.bias.sync_range()

    # ------------------------------------------------------------------ hover / click
    def _hover_layer_cell(self, row: int, col: int, v: float) -> list[str]:
        idx = self.step_index()
        tpe = self.data.tokens()
        n = tpe[idx, row, col] if tpe is not None and idx is not None else float("nan")
        dead = bool(self.data.derived("dead_mask")[idx, row, col]) if idx is not None else False
        return [f"<b>layer {self.data.blocks[row]} · expert {col}</b>",
                f"{n:,.0f} tokens · {v:.2f} × uniform" + (" · <b>dead</b>" if dead else ""),
                "click: the probe tokens it received"]

    def _hover_step_cell(self, row: int, col: int, v: float) -> list[str]:
        r, e, s = self.data.cell_of_step_map(row, col, self.layer())
        tpe = self.data.tokens()
        n = tpe[col, r, e] if tpe is not None else float("nan")
        return [f"<b>step {s:,} · layer {self.data.blocks[r]} · expert "
                f"{self.data.names(self.data.n_experts or e + 1)[e]}</b>",
                f"{n:,.0f} tokens · {v:.2f} × uniform"]

    def _on_layer_cell(self, row: int, col: int) -> None:
        self.list_tokens(row, col, self.step())

    def _on_step_cell(self, row: int, col: int) -> None:
        r, e, s = self.data.cell_of_step_map(row, col, self.layer())
        self.list_tokens(r, e, s)

    def list_tokens(self, block_row: int, expert: int, step: int | None) -> list[int]:
        """List the probe tokens routed to ``expert`` (any of their k choices) in MoE
        block ``block_row`` (an index into the run's MoE blocks) at the probe snapshot
        nearest ``step``."""
        snap = self._snaps.get(step) if self._snaps is not None else None
        if snap is None:
            self.tokens.clear("No probe snapshot recorded yet")
            return []
        a = snap.arrays
        got = probe_choices(a, block_row, expert)
        hits = np.fromiter(got, np.int64, len(got))

        def note(i: int) -> str:
            k, w = got[i]
            return f"choice {k + 1}, w {w:.2f}"

        n = a["tokens"].size
        self.tokens.show_tokens(
            f"<b>Layer {self.data.blocks[block_row]}, expert {expert}</b> · probe at step "
            f"{snap.step:,}: {hits.size} of {n} tokens ({100.0 * hits.size / max(n, 1):.1f} %)",
            token_rows(a["tokens"], hits, note))
        return hits.tolist()

    # ------------------------------------------------------------------ theme / status
    def _style_lines(self) -> None:
        c = plot_colors(is_dark_palette(self.palette()))
        pen = pg.mkPen(QColor(c["foreground"]), width=1.2, style=Qt.PenStyle.DashLine)
        for m in self._markers.values():
            m.setPen(pen)

    def _palette_changed(self) -> None:
        self._style_lines()
        self.layer_map.set_colormap(self._diverging())
        self.step_map.set_colormap(self._diverging())
        if self.data.tokens() is not None:
            self._show()          # the key's colours follow the bars'

    def _status_extra(self) -> str:
        if self._loaded and not self.data.blocks:
            return DENSE_STATUS
        parts = [f"{len(self.data.blocks)} MoE layers × {self.data.n_experts} experts"]
        if self.data.router:
            parts.append(f"router {html.escape(self.data.router)}")
        return " · ".join(parts)
