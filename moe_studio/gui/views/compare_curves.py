"""Compare's curves: train loss, validation loss, load CV and one scalar of your choice,
one line per run or one mean line and band per group, with the legend on the left that
hides and shows a run (or group) in every plot at once."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem, QSplitter, QWidget

from ...store import compare as C
from ..theme import is_dark_palette, series_color
from ..widgets.plot_grid import PlotGrid
from .compare_data import ComparedRun, group_label, groups, x_of
from .compare_pair import swatch
from .inspection_runs import KIND as INSPECTION, NO_TRAINING
from .rank_series import rank_of
from .training import PLOTS as TRAINING_PLOTS

X_LABELS = ((C.X_STEP, "Step", "step"), (C.X_TOKENS, "Tokens", "tokens"),
            (C.X_WALL, "Wall time", "wall time (since the first run started)"),
            (C.X_RELATIVE, "Relative time", "time since each run's start"),
            (C.X_FLOPS, "Training FLOPs", "training FLOPs"))
# plot key -> (title, scalar name); "metric" is chosen in the controls
PLOTS = {"train": ("Train loss (nats/token)", "train/loss"),
         "val": ("Validation loss (nats/token)", "val/loss"),
         "balance": ("Load CV, mean over MoE layers", "moe/L*/load_cv"),
         "metric": ("", "tokens_per_s")}
MANY_CURVES = 8          # more curves per plot than this: CurvePlot.set_many_series
_SPARSE = {"val/loss"}             # evaluated every eval_every steps: dashed, dots, unsmoothed
# scalar -> plot title, from the Training dashboard's plots of one scalar (its tokens/s
# plot also draws each rank's of a distributed run: those do not make it two)
METRIC_TITLES = {main[0][0]: title for title, specs in TRAINING_PLOTS.values()
                 if len(main := [s for s in specs if rank_of(s[0]) is None]) == 1}
METRIC_TITLES.update({"val/acc": "Validation accuracy", "ens/gain": "Ensemble gain (nats/token)",
                      "precision/loss_scale": "fp16 loss scale"})


class CompareCurves(QSplitter):
    """The legend list (left) and the 2 x 2 grid of plots (right). ``draw`` shows the
    runs as the dashboard's controls say: grouping, band, x axis, chosen scalar."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.hidden_keys: set[str] = set()
        self.legend = QListWidget()
        self.legend.setObjectName("compareLegend")
        self.legend.setToolTip("Uncheck a run (or group) to hide it in every plot")
        self.legend.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.legend.setMinimumWidth(120)
        self.legend.itemChanged.connect(self._on_legend_item)
        self.grid = PlotGrid()
        for key, (r, c) in (("train", (0, 0)), ("val", (0, 1)), ("balance", (1, 0)),
                            ("metric", (1, 1))):
            p = self.grid.add_plot(key, PLOTS[key][0], r, c)
            p.set_legend_enabled(False)     # the list on the left is the legend
        for i, (w, stretch) in enumerate(((self.legend, 0), (self.grid, 1))):
            self.addWidget(w)
            self.setStretchFactor(i, stretch)
        self.setSizes([170, 1000])
        self._runs: Sequence[ComparedRun] = []
        self._group_by: str | None = None
        self._band = C.BAND_MINMAX
        self._x_mode = C.X_STEP
        self._metric = PLOTS["metric"][1]

    # ------------------------------------------------------------------ state
    def set_state(self, runs: Sequence[ComparedRun], group_by: str | None, band: str,
                  x_mode: str, metric: str | None) -> None:
        """What the next ``draw`` shows (no drawing here)."""
        self._runs, self._group_by, self._band = runs, group_by, band
        self._x_mode, self._metric = x_mode, metric or PLOTS["metric"][1]

    def groups(self) -> list[tuple[str, list[int]]]:
        return groups(self._runs, self._group_by)

    def curve(self, run_index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of scalar ``name`` of a run on the current x axis."""
        r = self._runs[run_index]
        s = r.metric(name)
        return x_of(self._runs, r, s, self._x_mode), s[1]

    def group_label(self, value: str, members: list[int]) -> str:
        return group_label(self._group_by, value, len(members))

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        """Legend and every plot."""
        self._fill_legend()
        for key in PLOTS:
            self.draw_plot(key)
        self.apply_visibility()

    def _metric_of(self, key: str) -> str:
        return self._metric if key == "metric" else PLOTS[key][1]

    def draw_plot(self, key: str) -> None:
        plot = self.grid.plot(key)
        name = self._metric_of(key)
        if key == "metric":
            plot.set_title(METRIC_TITLES.get(name, name))
        sparse = name in _SPARSE
        style = dict(dash=sparse, symbol="o" if sparse else None, smooth=not sparse)
        want: set[str] = set()
        grouped = self.groups()
        # Dozens of curves: thin lines, no raw traces (pan / zoom stay fluid with 50).
        plot.set_many_series((len(grouped) or len(self._runs)) > MANY_CURVES)
        if grouped:
            for gi, (value, members) in enumerate(grouped):
                curves = [self.curve(i, name) for i in members]
                curves = [c for c in curves if c[0].size]
                if not curves:
                    continue
                band = C.group_band(curves)
                k = f"group:{value}"
                want.add(k)
                plot.set_series(k, band["x"], band["mean"], label=self.group_label(value, members),
                                color=gi, **style)
                lo, hi = C.band_edges(band, self._band)
                if len(curves) > 1:
                    plot.set_band(k, band["x"], lo, hi)
                else:
                    plot.set_band(k, [], [], [])
        else:
            for r in self._runs:
                x, y = self.curve(r.index, name)
                if not x.size:
                    continue
                k = f"run:{r.index}"
                want.add(k)
                plot.set_series(k, x, y, label=r.label, color=r.index, **style)
        for k in plot.series_keys():
            if k not in want:
                plot.remove_series(k)
            else:
                plot.set_series_visible(k, k not in self.hidden_keys)
        if not want and key in ("train", "val") and self._runs \
                and all(r.meta.get("kind") == INSPECTION for r in self._runs):
            plot.set_placeholder(NO_TRAINING)
        elif not want and len(self._runs) >= 2:
            plot.set_placeholder("None of these runs recorded "
                                 + ("MoE layers" if key == "balance" else name))
        else:
            plot.set_placeholder("")
        plot.sync_range()

    def set_x_axis(self, mode: str) -> None:
        """The axes' label and number format of x axis ``mode``."""
        label = next(lbl for m, _, lbl in X_LABELS if m == mode)
        self.grid.set_x_label(label)
        self.grid.set_x_format("duration" if mode in (C.X_WALL, C.X_RELATIVE) else "number")

    # ------------------------------------------------------------------ legend
    def _fill_legend(self) -> None:
        dark = is_dark_palette(self.palette())
        grouped = self.groups()
        if grouped:
            entries = [(f"group:{v}", self.group_label(v, m), gi, ", ".join(
                self._runs[i].label for i in m)) for gi, (v, m) in enumerate(grouped)]
        else:
            entries = [(f"run:{r.index}", r.label, r.index, f"{r.path}\n{r.status}")
                       for r in self._runs]
        self.legend.blockSignals(True)
        self.legend.clear()
        for key, text, color, tip in entries:
            it = QListWidgetItem(swatch(series_color(color, dark)), text)
            it.setData(Qt.ItemDataRole.UserRole, key)
            it.setToolTip(tip)
            it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Unchecked if key in self.hidden_keys
                             else Qt.CheckState.Checked)
            self.legend.addItem(it)
        self.legend.blockSignals(False)

    def refill_legend(self) -> None:
        """The legend again (its swatches follow the theme)."""
        self._fill_legend()

    def legend_keys(self) -> list[str]:
        return [self.legend.item(i).data(Qt.ItemDataRole.UserRole)
                for i in range(self.legend.count())]

    def set_key_visible(self, key: str, visible: bool) -> None:
        """Show or hide a legend entry (``"run:<i>"`` or ``"group:<value>"``) everywhere."""
        for i in range(self.legend.count()):
            it = self.legend.item(i)
            if it.data(Qt.ItemDataRole.UserRole) == key:
                it.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
                return
        raise KeyError(key)

    def _on_legend_item(self, item: QListWidgetItem) -> None:
        key = item.data(Qt.ItemDataRole.UserRole)
        if item.checkState() == Qt.CheckState.Checked:
            self.hidden_keys.discard(key)
        else:
            self.hidden_keys.add(key)
        self.apply_visibility()

    def apply_visibility(self) -> None:
        for plot in self.grid.plots().values():
            for k in plot.series_keys():
                vis = k not in self.hidden_keys
                if plot.is_series_visible(k) != vis:
                    plot.set_series_visible(k, vis)

    def size_legend(self) -> None:
        """The legend as wide as its longest name (120 px to a quarter of the width)."""
        width = sum(self.sizes())
        if width > 0 and self.legend.count():
            fm = self.legend.fontMetrics()
            need = max(fm.horizontalAdvance(self.legend.item(i).text())
                       for i in range(self.legend.count())) + 56
            w = int(min(max(need, 120), 0.25 * width))
            self.setSizes([w, width - w])
