"""Gates: how sure the routers are, per MoE layer, over training.

* the router-probability distribution over time as TensorBoard-style percentile bands
  (from the ``router_probs/L{i}`` histograms; all layers pooled in the overview);
* the histogram at the selected step, with the uniform probability 1/E marked;
* mean router entropy and mean top-1 probability over time (``moe/L{i}/entropy``,
  ``moe/L{i}/top1_prob``), with their uniform-router references;
* router-logit magnitude, mean and max |logit| (``moe/L{i}/logit_absmean`` /
  ``logit_absmax``): what the z-loss keeps small.

Every plot marks the selected step; everything is read from the run store.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGridLayout, QWidget

from ...metrics.routing import histogram_percentiles
from ...store import RunReader
from ..widgets.bars import BandPlot, BarPlot
from ..widgets.plots import CurvePlot
from .dashboard import DENSE_STATUS, RunDashboard, moe_blocks_of, move_step_markers
from ..theme import is_dark_palette, plot_colors

CURVES = ("entropy", "top1_prob", "logit_absmean", "logit_absmax")


class GateDashboard(RunDashboard):
    """Router-probability bands, histogram, entropy, top-1 probability, logit size."""

    routes_tokens = True

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._blocks: list[int] = []
        self._n_experts = 0
        self._hist: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._scal: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._drawn_curves: tuple | None = None
        self._drawn_bands: tuple | None = None
        self._pooled = (np.zeros(0, np.int64), np.linspace(0, 1, 51), np.zeros((0, 50)))
        self._version = 0

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
                # entropy's reference is its maximum (text below it); top-1's its minimum
                below = [(0, 0), (0, 0)] if key == "entropy" else [(0, 1), (0, 1)]
                ref = pg.InfiniteLine(angle=0, movable=False, label="",
                                      labelOpts={"position": 0.97, "anchors": [(1, below[0][1])] * 2})
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
        self._blocks = []
        self._hist = {}
        self._scal = {}
        self._drawn_curves = None
        self._drawn_bands = None
        self._version += 1
        for plot in self._curve_plots.values():
            plot.clear_series()
        self.bands.set_bands([], np.zeros((0, 9)))
        self.histogram.set_bars(np.zeros((1, 0)))

    def _load(self, reader: RunReader) -> None:
        self.controls.set_members(self._members_of(reader))
        self._blocks = moe_blocks_of(reader)
        cfg = reader.config if isinstance(reader.config, dict) else {}
        self._n_experts = int((cfg.get("moe") or {}).get("n_experts") or 0)
        self.controls.set_layers(self._blocks)
        self._read_histograms(reader)
        names = [f"moe/L{b}/{c}" for b in self._blocks for c in CURVES]
        self._add_scalars(reader.scalars(names, member=self.member()))
        self._update_steps()

    def _ingest(self, upd) -> bool:
        changed = False
        if upd.new_histograms:
            self._read_histograms(self._reader)
            changed = True
        df = upd.scalars
        if len(df):
            df = df[(df["member"] == self.member()) & df["name"].astype(str).str.startswith("moe/L")]
            if len(df):
                changed |= self._add_scalars(df)
        if changed:
            self._update_steps()
        return changed

    def _read_histograms(self, reader: RunReader) -> None:
        m = self.member()
        for b in self._blocks:
            steps, edges, counts = reader.histogram_series(f"router_probs/L{b}", member=m)
            if steps.size:
                self._hist[b] = (steps, edges, counts)
        self._version += 1

    def _add_scalars(self, df: pd.DataFrame) -> bool:
        if not len(df):
            return False
        added = False
        for name, g in df.groupby(df["name"].astype(str), sort=False):
            parts = name.split("/")
            if len(parts) != 3 or parts[2] not in CURVES:
                continue
            key = (int(parts[1][1:]), parts[2])
            g = g.sort_values("step")
            s, v = g["step"].to_numpy(np.int64), g["value"].to_numpy(np.float64)
            old = self._scal.get(key)
            if old is not None:
                s, v = np.concatenate([old[0], s]), np.concatenate([old[1], v])
                if np.any(np.diff(s) < 0):
                    o = np.argsort(s, kind="stable")
                    s, v = s[o], v[o]
            self._scal[key] = (s, v)
            added = True
        if added:
            self._version += 1
        return added

    def _update_steps(self) -> None:
        steps = [h[0] for h in self._hist.values()]
        if steps:
            self.controls.set_steps(np.unique(np.concatenate(steps)))
        else:   # no histograms (statistics off): scrub the scalar steps instead
            s = [v[0] for v in self._scal.values()]
            self.controls.set_steps(np.unique(np.concatenate(s)) if s else [])

    # ------------------------------------------------------------------ derived
    def pooled_histogram(self, layer: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, edges, counts [S, B])`` of one layer, or of all layers pooled (the
        steps every layer recorded)."""
        blocks = self._blocks if layer is None else [layer]
        have = [self._hist[b] for b in blocks if b in self._hist]
        if not have:
            return np.zeros(0, np.int64), np.linspace(0, 1, 51), np.zeros((0, 50))
        if len(have) == 1:
            return have[0]
        common = have[0][0]
        for h in have[1:]:
            common = np.intersect1d(common, h[0])
        counts = sum(h[2][np.searchsorted(h[0], common)].astype(np.float64) for h in have)
        edges = have[0][1]
        return common, (edges if edges.ndim == 1 else edges[np.searchsorted(have[0][0], common)]), counts

    def percentile_bands(self, layer: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [S], percentiles [S, 9])`` of the router probabilities shown."""
        steps, edges, counts = self.pooled_histogram(layer)
        return steps, histogram_percentiles(edges, counts)

    # ------------------------------------------------------------------ drawing
    def _show(self) -> None:
        layer, step = self.layer(), self.step()
        where = "all layers pooled" if layer is None else f"layer {layer}"
        bkey = (layer, self.member(), self._version)
        if bkey != self._drawn_bands:   # only the step marker moves while scrubbing
            self._drawn_bands = bkey
            self._pooled = self.pooled_histogram(layer)
            self.bands.set_title(f"Router probabilities over time · {where}")
            self.bands.set_bands(self._pooled[0], histogram_percentiles(self._pooled[1],
                                                                        self._pooled[2]))
        steps, edges, counts = self._pooled
        if steps.size and step is not None:
            i = int(np.argmin(np.abs(steps - step)))
            e = edges if edges.ndim == 1 else edges[i]
            c = counts[i].astype(np.float64)
            share = 100.0 * c / c.sum() if c.sum() > 0 else c
            self._set_title_later(self.histogram, f"Histogram at step {int(steps[i]):,} · {where}")
            self.histogram.set_bars(share, x=(e[:-1] + e[1:]) / 2, width=float(np.min(np.diff(e))),
                                    group_names=[where])
        else:
            self.histogram.set_bars(np.zeros((1, 0)))
        if self._n_experts:
            self.histogram.set_references([(1.0 / self._n_experts, f"uniform 1/{self._n_experts}")],
                                          vertical=True)
        key = (layer, self.member(), self._version)
        if key != self._drawn_curves:
            self._drawn_curves = key
            self._draw_curves(layer)
        self._set_markers(step)

    def _move_markers(self, step: int | None) -> None:
        self.bands.set_marker(step)
        move_step_markers(self._markers.values(), step)

    def _draw_curves(self, layer: int | None) -> None:
        blocks = self._blocks if layer is None else [layer]
        single = len(blocks) == 1
        want: dict[CurvePlot, set[str]] = {p: set() for p in self._curve_plots.values()}
        for j, b in enumerate(blocks):
            color = self._blocks.index(b) if b in self._blocks else j
            for name, plot, label, dash in (
                    ("entropy", self.entropy, f"L{b}", False),
                    ("top1_prob", self.top1, f"L{b}", False),
                    ("logit_absmean", self.logits, "mean" if single else f"L{b} mean", False),
                    ("logit_absmax", self.logits, "max" if single else f"L{b} max", True)):
                data = self._scal.get((b, name))
                if data is None:
                    continue
                k = f"L{b}|{name}"
                plot.set_series(k, data[0], data[1], label=label,
                                color=(color if not single else (1 if dash else 0)), dash=dash)
                want[plot].add(k)
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
        E = self._n_experts
        if E:
            self._set_ref("entropy", math.log(E), f"uniform router ln {E} = {math.log(E):.2f}")
            self._set_ref("top1_prob", 1.0 / E, f"uniform 1/{E}")

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
        if self._loaded and not self._blocks:
            return DENSE_STATUS
        return f"{len(self._blocks)} MoE layers × {self._n_experts} experts"
