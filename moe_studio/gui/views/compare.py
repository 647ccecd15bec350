"""Compare: several runs overlaid, grouped, diffed and side by side.

The runs are the ones checked in the runs panel (recorded, sample or live). Every run
keeps one colour everywhere (its position in the selection, as in the Training
dashboard's overlay and the report header): in the curves, the legend on the left, the
tables and the side-by-side headings.

* Curves: train loss, validation loss, load CV (mean over MoE layers) and one scalar of
  your choice, one line per run, or grouped by a config key that differs among the runs
  (a mean line and a min-max or ±std band per group). x by step, tokens, wall time
  (since the first of the runs started) or relative time (since each run's own start).
  Resumed runs show the history of their last attempt (``store.compare.latest_attempt``).
* The legend on the left hides and shows runs (or groups) in every plot at once.
* Summary (final and best validation loss, throughput, parameters, balance, ensemble
  gain, skipped steps; sortable, CSV export) and config diff (only the keys that differ;
  cells that differ from the first run are highlighted).
* Side by side: two runs in the Routing or the Experts view, one step slider aligning
  both to their nearest recorded step.

The numbers come from the pure functions in ``moe_studio.store.compare``.
"""
from __future__ import annotations

import html
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel,
                               QListWidget, QListWidgetItem, QMessageBox,
                               QSizePolicy, QSlider, QSplitter, QStackedWidget,
                               QTableWidget, QTableWidgetItem, QTabWidget, QToolButton,
                               QVBoxLayout, QWidget)

from ..formats import format_summary
from ...store import Follower, RunReader
from ...store import compare as C
from ..run.follow_timer import FollowTimer, FramePacer, open_guarded, poll_guarded
from ..widgets.plots import PlotGrid
from ..theme import is_dark_palette, series_color, status_color
from .compare_pair import SideBySidePage, swatch
from .training import PLOTS as TRAINING_PLOTS

FRAME_MS = 250          # 4 Hz store polling while following (a comparison needs no more)
_MAX_DRAW_INTERVAL_S = 2.0

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
# scalar -> plot title, from the Training dashboard's plots of one scalar
METRIC_TITLES = {n: title for title, specs in TRAINING_PLOTS.values() if len(specs) == 1
                 for n, _, _ in specs}
METRIC_TITLES.update({"val/acc": "Validation accuracy", "ens/gain": "Ensemble gain (nats/token)",
                      "precision/loss_scale": "fp16 loss scale"})
_LAYER = re.compile(r"^moe/L\d+/")
HINT = ("<h3>Compare runs</h3><p>Check two or more runs in the <b>Runs panel</b> below "
        "(the boxes next to their names): recorded runs, sample runs or the run training "
        "now.</p><p>This view overlays their curves, groups them by a setting, lists what "
        "differs in their configs and shows two of them side by side.</p>")
@dataclass
class _Run:
    index: int
    path: Path
    reader: RunReader
    follower: Follower
    name: str
    label: str
    status: str
    config: dict
    meta: dict
    raw: pd.DataFrame = field(default_factory=pd.DataFrame)   # every row read so far
    rows: dict = field(default_factory=dict)   # by_name index of latest_attempt(raw)
    series: dict = field(default_factory=dict)  # scalar name -> series_arrays (cache)
    _start: float | None = None                 # start() (cache)

    def metric(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = C.series_arrays(self.rows, name)
        return s

    def ingest(self, df: pd.DataFrame) -> None:
        self.raw = df if not len(self.raw) else pd.concat([self.raw, df], ignore_index=True)
        self.rows = C.by_name(C.latest_attempt(self.raw))
        self.series = {}
        self._start = None

    def start(self) -> float:
        """Wall time of the run's first record (NaN before any)."""
        if self._start is None:
            walls = [r[3][0] for r in self.rows.values() if r[3].size]
            self._start = float(np.nanmin(walls)) if walls else math.nan
        return self._start


class _SortItem(QTableWidgetItem):
    """A table cell that sorts by a number (NaN last), not by its text."""

    def __lt__(self, other):  # noqa: D105
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            a = math.inf if a != a else a
            b = math.inf if b != b else b
            return a < b
        return str(self.text()).lower() < str(other.text()).lower()


def _splitter(orientation, *panes: tuple[QWidget, int, int]) -> QSplitter:
    """A splitter of ``(widget, stretch, initial size)`` panes."""
    sp = QSplitter(orientation)
    for i, (w, stretch, _) in enumerate(panes):
        sp.addWidget(w)
        sp.setStretchFactor(i, stretch)
    sp.setSizes([size for _, _, size in panes])
    return sp


KEY_JOIN = " + "   # a grouping by several config keys at once: "moe.top_k + moe.aux_loss_coef"


def _select(combo: QComboBox, data: Any, problem: str) -> None:
    """Select the item of ``combo`` holding ``data``; ValueError(problem) if none does."""
    i = combo.findData(data)
    if i < 0:
        raise ValueError(problem)
    combo.setCurrentIndex(i)


class CompareDashboard(QWidget):
    """Overlay, group, diff and pair the runs given to ``set_runs`` (two or more)."""

    statusChanged = Signal(str)
    report_aspect = 0.8
    report_min_runs = 2     # the report leaves this view out for a single run

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._runs: list[_Run] = []
        self._errors: list[str] = []
        self._hidden_keys: set[str] = set()
        self._summary: list[dict[str, Any]] = []
        self._diff = pd.DataFrame()
        self._dirty = False
        self._pacer = FramePacer(_MAX_DRAW_INTERVAL_S)
        self._follow = FollowTimer(self, FRAME_MS, self._on_tick, self.refresh,
                                   name="compareFollowTimer")

        # -- controls
        self.group_combo = QComboBox()
        self.group_combo.setToolTip("Group the runs by a config key that differs among them: "
                                    "one mean line and band per group")
        self.group_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.band_combo = QComboBox()
        self.band_combo.addItem("min–max", C.BAND_MINMAX)
        self.band_combo.addItem("± std", C.BAND_STD)
        self.band_combo.setToolTip("The band around each group's mean")
        self.x_combo = QComboBox()
        for mode, text, _ in X_LABELS:
            self.x_combo.addItem(text, mode)
        self.x_combo.setToolTip("Step: optimizer steps. Tokens: training tokens seen. Wall "
                                "time: since the first of these runs started. Relative time: "
                                "since each run's own start.")
        self.metric_combo = QComboBox()
        self.metric_combo.setToolTip("The scalar shown in the fourth plot")
        self.metric_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.smooth_slider = QSlider(Qt.Orientation.Horizontal)
        self.smooth_slider.setRange(0, 99)
        self.smooth_slider.setValue(60)
        # The slider gives up width first: a narrow window keeps the combos' choices whole.
        self.smooth_slider.setMinimumWidth(50)
        self.smooth_slider.setMaximumWidth(110)
        self.smooth_slider.setToolTip("Debiased exponential moving average (as in TensorBoard)")
        self.log_check = QCheckBox("Log y")
        fit = QToolButton()
        fit.setText("Fit")
        fit.setToolTip("Zoom every plot out to all of its data")
        fit.clicked.connect(self.fit)
        self.status = QLabel()
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._bar = QWidget()
        bar = QHBoxLayout(self._bar)
        bar.setContentsMargins(6, 4, 6, 0)
        bar.setSpacing(8)
        for w in (QLabel("Group by"), self.group_combo, self.band_combo, QLabel("X axis"),
                  self.x_combo, QLabel("Plot"), self.metric_combo):
            bar.addWidget(w)
        bar.addWidget(self.status, 1)
        # How the curves are drawn sits beside the inner tabs (whose row is mostly empty):
        # one row for everything did not fit a 1280-px window with the experiment panel
        # docked, and squeezed the combos to "train.snap".
        self._look = QWidget()
        look = QHBoxLayout(self._look)
        look.setContentsMargins(6, 0, 6, 0)
        look.setSpacing(8)
        for w in (QLabel("Smoothing"), self.smooth_slider, self.log_check, fit):
            look.addWidget(w)

        # -- curves, with the legend on the left
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
        top = self._top = _splitter(Qt.Orientation.Horizontal, (self.legend, 0, 170),
                                    (self.grid, 1, 1000))

        # -- tables
        self.summary_table = QTableWidget()
        self.summary_table.setObjectName("compareSummary")
        # in the runs' order until a header is clicked
        self.summary_table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.summary_table.setSortingEnabled(True)
        self.summary_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary_table.verticalHeader().setVisible(False)
        self.summary_table.setAlternatingRowColors(True)
        self.diff_table = QTableWidget()
        self.diff_table.setObjectName("compareDiff")
        self.diff_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.diff_table.setAlternatingRowColors(True)
        self.export_button = QToolButton()
        self.export_button.setText("Export CSV…")
        self.export_button.setToolTip("Save the summary table as CSV")
        self.export_button.clicked.connect(self._ask_csv)
        self._summary_title = QLabel("<b>Summary</b>")
        self._diff_title = QLabel("<b>Config differences</b>")
        self._diff_title.setToolTip("Only the keys whose values differ; highlighted: "
                                    "different from the first run")
        sbox, dbox = QWidget(), QWidget()
        sl, dl = QVBoxLayout(sbox), QVBoxLayout(dbox)
        for lay in (sl, dl):
            lay.setContentsMargins(0, 0, 0, 0)
            lay.setSpacing(2)
        head = QHBoxLayout()
        head.addWidget(self._summary_title)
        head.addStretch(1)
        head.addWidget(self.export_button)
        sl.addLayout(head)
        sl.addWidget(self.summary_table, 1)
        dl.addWidget(self._diff_title)
        dl.addWidget(self.diff_table, 1)
        tables = self._tables = _splitter(Qt.Orientation.Horizontal, (sbox, 3, 800),
                                          (dbox, 2, 400))
        overview = self._overview = _splitter(Qt.Orientation.Vertical, (top, 3, 520),
                                              (tables, 2, 300))
        self._size_pending = False
        self._report = False
        overview.installEventFilter(self)

        # -- side by side (its own module); the names tests and the report use stay here
        self.pair_page = SideBySidePage()
        self.pair_controls = self.pair_page.pair_controls
        self.pair_view = self.pair_page.pair_view

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(overview, "Curves and tables")
        self.tabs.addTab(self.pair_page, "Side by side")
        self.tabs.setCornerWidget(self._look, Qt.Corner.TopRightCorner)
        self.hint = QLabel(HINT)
        self.hint.setTextFormat(Qt.TextFormat.RichText)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setMaximumWidth(560)
        self.hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        hint_page = QWidget()
        hl = QHBoxLayout(hint_page)
        hl.addWidget(self.hint)
        self.stack = QStackedWidget()
        self.stack.addWidget(hint_page)
        self.stack.addWidget(self.tabs)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addWidget(self._bar)
        lay.addWidget(self.stack, 1)

        self.group_combo.currentIndexChanged.connect(lambda _i: self._redraw_all())
        self.band_combo.currentIndexChanged.connect(lambda _i: self._redraw_all())
        self.metric_combo.currentIndexChanged.connect(lambda _i: self._redraw_plot("metric"))
        self.x_combo.currentIndexChanged.connect(self._on_x_mode)
        self.smooth_slider.valueChanged.connect(
            lambda v: self.grid.set_smoothing(v / 100.0))
        self.log_check.toggled.connect(
            lambda on: self.grid.set_log_y(on, keys=("train", "val", "balance")))
        self.tabs.currentChanged.connect(self._on_tab)
        self.grid.set_smoothing(self.smooth_slider.value() / 100.0)
        self._bar.setVisible(False)      # until there are two runs to compare
        self._update_status()

    # ------------------------------------------------------------------ dashboard API
    def set_runs(self, paths) -> None:
        """Compare these runs (two or more; fewer shows how to pick them). Reads what
        they hold now."""
        self._close_runs()
        for p in self.grid.plots().values():
            p.clear_series()
        self._errors = []
        self._hidden_keys = set()
        names = []
        for path in [Path(p) for p in paths]:
            opened = open_guarded(path, self._errors)
            if opened is None:
                continue
            reader, follower = opened
            name = reader.name or path.name
            names.append(name)
            self._runs.append(_Run(
                index=len(self._runs), path=path, reader=reader, follower=follower, name=name,
                label=name, status=reader.status,
                config=reader.config if isinstance(reader.config, dict) else {},
                meta=dict(reader.meta or {})))
        for r in self._runs:
            if names.count(r.name) > 1:   # a re-run keeps its name: tell them apart by id
                r.label = f"{r.name} ({r.reader.run_id})"
        self._poll()
        self._rebuild()
        self._size_pending = True     # again once the page has its real size
        self._size_panes()
        self.fit()

    def runs(self) -> list[Path]:
        return [r.path for r in self._runs]

    def start_follow(self) -> None:
        """Poll the runs at 4 Hz until ``stop_follow()`` (paused while hidden)."""
        self._follow.start()

    def stop_follow(self) -> None:
        self._follow.stop()
        self.pair_page.stop_follow()

    def is_following(self) -> bool:
        return self._follow.wanted()

    def refresh(self) -> bool:
        """Read what the runs gained and redraw what changed. True if anything did."""
        changed = self._poll()
        if changed:
            self._rebuild()
        self.pair_page.refresh()
        return changed

    def set_report_mode(self, on: bool) -> None:
        """For ``moe-studio report``: no controls, no tab bar, no export button."""
        self._report = bool(on)
        self._bar.setVisible(not on and len(self._runs) >= 2)
        self.tabs.tabBar().setVisible(not on)
        self._look.setVisible(not on and self.tabs.currentIndex() == 0)
        self.export_button.setVisible(not on)
        if on:
            self.tabs.setCurrentIndex(0)

    # ------------------------------------------------------------------ options
    def group_keys(self) -> list[str]:
        """The config keys offered for grouping: those that differ among the runs."""
        return [k for k in self.group_choices() if KEY_JOIN not in k]

    def group_choices(self) -> list[str]:
        """Every grouping offered: each differing key, and (with two or more besides the
        seed) all of them at once, written ``"moe.top_k + moe.aux_loss_coef"``."""
        return [self.group_combo.itemData(i) for i in range(1, self.group_combo.count())]

    def set_group_by(self, key: str | None) -> None:
        _select(self.group_combo, key,
                f"cannot group by {key!r} (offered: {', '.join(self.group_choices())})")

    def group_by(self) -> str | None:
        return self.group_combo.currentData()

    def set_band(self, kind: str) -> None:
        kinds = [self.band_combo.itemData(i) for i in range(self.band_combo.count())]
        _select(self.band_combo, kind, f"band must be one of {', '.join(map(str, kinds))}; "
                                       f"got {kind!r}")

    def set_x_mode(self, mode: str) -> None:
        _select(self.x_combo, mode, f"x axis must be one of {', '.join(C.X_MODES)}; got {mode!r}")

    def x_mode(self) -> str:
        return self.x_combo.currentData()

    def set_metric(self, name: str) -> None:
        _select(self.metric_combo, name, f"no scalar {name!r} in these runs")

    def set_smoothing(self, weight: float) -> None:
        self.smooth_slider.setValue(int(round(float(weight) * 100)))

    def plot(self, key: str):
        """One of the plots: "train", "val", "balance", "metric"."""
        return self.grid.plot(key)

    def summary_rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._summary]

    def config_diff(self) -> pd.DataFrame:
        return self._diff.copy()

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

    def export_summary_csv(self, path) -> Path:
        """Write the summary table (as sorted on screen) to ``path`` as CSV."""
        path = Path(path)
        order = []
        for row in range(self.summary_table.rowCount()):
            it = self.summary_table.item(row, 0)
            order.append(int(it.data(Qt.ItemDataRole.UserRole + 1)))
        C.write_summary_csv([self._summary[i] for i in order], path)
        return path

    def status_text(self) -> str:
        return self.status.text()

    def fit(self) -> None:
        self.grid.auto_range()

    # ------------------------------------------------------------------ data
    def _poll(self) -> bool:
        changed = False
        for r in self._runs:
            n_errors = len(self._errors)
            upd = poll_guarded(r.follower, self._errors)
            if upd is None:
                changed = changed or len(self._errors) > n_errors
                continue
            if upd.status and upd.status != r.status:
                r.status, changed = upd.status, True
                r.reader.refresh()      # a run that ended may have added to its meta
                r.meta = dict(r.reader.meta or {})
            if len(upd.scalars):
                r.ingest(upd.scalars)
                changed = True
        return changed

    def _on_tick(self) -> None:
        if self._poll():
            self._dirty = True
        if self._dirty and self._pacer.due():
            t0 = time.perf_counter()
            self._dirty = False
            self._rebuild()
            self._pacer.drawn(time.perf_counter() - t0)
        if self.tabs.currentIndex() == 1:
            self.pair_page.refresh()

    def _rebuild(self) -> None:
        """Everything from the runs' data: options, legend, curves, tables, pair."""
        enough = len(self._runs) >= 2
        self.stack.setCurrentIndex(1 if enough else 0)
        self._bar.setVisible(enough and not self._report)
        self._diff = C.config_diff([r.config for r in self._runs],
                                   [r.label for r in self._runs])
        self._fill_group_combo()
        self._fill_metric_combo()
        self._summary = [C.summary_row(r.rows, r.meta, run=r.label, status=r.status)
                         for r in self._runs]
        C.add_equal_cost(self._summary, [r.rows for r in self._runs])
        self._redraw_all()
        self._fill_summary()
        self._fill_diff()
        self.pair_page.set_runs(self._runs)
        self._update_status()

    def _fill_group_combo(self) -> None:
        keep = self.group_combo.currentData()
        want = [None] + list(self._diff.index)
        have = [self.group_combo.itemData(i) for i in range(self.group_combo.count())]
        if want == [k for k in have if k is None or KEY_JOIN not in k]:
            return
        self.group_combo.blockSignals(True)
        self.group_combo.clear()
        self.group_combo.addItem("no grouping", None)
        for k in want[1:]:
            self.group_combo.addItem(k, k)
        # Every differing key but the seed at once: a sweep's grid points, each a group
        # whose seeds make its band.
        combined = [k for k in want[1:] if k != "train.seed"]
        if len(combined) >= 2:
            self.group_combo.addItem(f"all {len(combined)} keys at once", KEY_JOIN.join(combined))
            self.group_combo.setItemData(self.group_combo.count() - 1, KEY_JOIN.join(combined),
                                         Qt.ItemDataRole.ToolTipRole)
        self.group_combo.setCurrentIndex(max(0, self.group_combo.findData(keep)))
        self.group_combo.blockSignals(False)

    def _fill_metric_combo(self) -> None:
        names: set[str] = set()
        for r in self._runs:
            names.update(_LAYER.sub("moe/L*/", n) for n in r.rows)
        want = sorted(names)
        have = [self.metric_combo.itemData(i) for i in range(self.metric_combo.count())]
        if want == have:
            return
        keep = self.metric_combo.currentData() or PLOTS["metric"][1]
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for n in want:
            self.metric_combo.addItem(n, n)
        i = self.metric_combo.findData(keep)
        if i < 0:
            i = self.metric_combo.findData(PLOTS["metric"][1])
        self.metric_combo.setCurrentIndex(max(0, i))
        self.metric_combo.blockSignals(False)

    # ------------------------------------------------------------------ curves
    def groups(self) -> list[tuple[str, list[int]]]:
        """``[(value, [run indices])]`` of the current grouping ([] without one)."""
        key = self.group_by()
        if key is None:
            return []
        keys = key.split(KEY_JOIN)
        configs = [C.flatten_config(r.config) for r in self._runs]
        if len(keys) == 1:
            return C.group_runs([c.get(key) for c in configs])
        return C.group_runs([", ".join(f"{k.rsplit('.', 1)[-1]}={C.value_text(c.get(k))}"
                                       for k in keys) for c in configs])

    def _x(self, r: _Run, s: tuple[np.ndarray, ...]) -> np.ndarray:
        mode = self.x_mode()
        if mode == C.X_TOKENS:
            return C.x_of(s, mode, tokens=r.metric("tokens"))
        if mode == C.X_FLOPS:
            return C.x_of(s, mode, flops=r.metric("cost/train_flops"))
        if mode == C.X_WALL:
            origin = np.nanmin([q.start() for q in self._runs] or [math.nan])
            return C.x_of(s, mode, origin=origin)
        return C.x_of(s, mode, run_start=r.start())

    def curve(self, run_index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of scalar ``name`` of a run on the current x axis."""
        r = self._runs[run_index]
        s = r.metric(name)
        return self._x(r, s), s[1]

    def _metric_of(self, key: str) -> str:
        if key == "metric":
            return self.metric_combo.currentData() or PLOTS["metric"][1]
        return PLOTS[key][1]

    def _redraw_all(self) -> None:
        self._fill_legend()
        for key in PLOTS:
            self._redraw_plot(key)
        self._apply_visibility()

    def _redraw_plot(self, key: str) -> None:
        plot = self.grid.plot(key)
        name = self._metric_of(key)
        if key == "metric":
            plot.set_title(METRIC_TITLES.get(name, name))
        sparse = name in _SPARSE
        style = dict(dash=sparse, symbol="o" if sparse else None, smooth=not sparse)
        want: set[str] = set()
        groups = self.groups()
        # Dozens of curves: thin lines, no raw traces (pan / zoom stay fluid with 50).
        plot.set_many_series((len(groups) or len(self._runs)) > MANY_CURVES)
        if groups:
            kind = self.band_combo.currentData()
            for gi, (value, members) in enumerate(groups):
                curves = [self.curve(i, name) for i in members]
                curves = [c for c in curves if c[0].size]
                if not curves:
                    continue
                band = C.group_band(curves)
                k = f"group:{value}"
                want.add(k)
                plot.set_series(k, band["x"], band["mean"], label=self._group_label(value,
                                members), color=gi, **style)
                lo, hi = C.band_edges(band, kind)
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
                plot.set_series_visible(k, k not in self._hidden_keys)
        if not want and len(self._runs) >= 2:
            plot.set_placeholder("None of these runs recorded "
                                 + ("MoE layers" if key == "balance" else name))
        else:
            plot.set_placeholder("")
        plot.sync_range()

    def _group_label(self, value: str, members: list[int]) -> str:
        key = (self.group_by() or "").rsplit(".", 1)[-1]
        n = len(members)
        runs = f"({n} run{'s' if n != 1 else ''})"
        if KEY_JOIN in (self.group_by() or ""):
            return f"{value}  {runs}"      # the value names its keys: "top_k=2, aux_loss_coef=0"
        return f"{key} = {value or '—'}  {runs}"

    def _fill_legend(self) -> None:
        dark = is_dark_palette(self.palette())
        groups = self.groups()
        if groups:
            entries = [(f"group:{v}", self._group_label(v, m), gi, ", ".join(
                self._runs[i].label for i in m)) for gi, (v, m) in enumerate(groups)]
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
            it.setCheckState(Qt.CheckState.Unchecked if key in self._hidden_keys
                             else Qt.CheckState.Checked)
            self.legend.addItem(it)
        self.legend.blockSignals(False)

    def _on_legend_item(self, item: QListWidgetItem) -> None:
        key = item.data(Qt.ItemDataRole.UserRole)
        if item.checkState() == Qt.CheckState.Checked:
            self._hidden_keys.discard(key)
        else:
            self._hidden_keys.add(key)
        self._apply_visibility()

    def _apply_visibility(self) -> None:
        for plot in self.grid.plots().values():
            for k in plot.series_keys():
                vis = k not in self._hidden_keys
                if plot.is_series_visible(k) != vis:
                    plot.set_series_visible(k, vis)

    def _on_x_mode(self, _i: int) -> None:
        mode = self.x_mode()
        label = next(lbl for m, _, lbl in X_LABELS if m == mode)
        self.grid.set_x_label(label)
        self.grid.set_x_format("duration" if mode in (C.X_WALL, C.X_RELATIVE) else "number")
        self._redraw_all()
        self.fit()

    # ------------------------------------------------------------------ tables
    def _fill_summary(self) -> None:
        t = self.summary_table
        dark = is_dark_palette(self.palette())
        sort_col = t.horizontalHeader().sortIndicatorSection()
        sort_order = t.horizontalHeader().sortIndicatorOrder()
        t.setSortingEnabled(False)
        t.clear()
        t.setColumnCount(len(C.SUMMARY_COLUMNS))
        t.setRowCount(len(self._summary))
        t.setHorizontalHeaderLabels([h for _, h in C.SUMMARY_COLUMNS])
        for col, (key, _) in enumerate(C.SUMMARY_COLUMNS):
            t.horizontalHeaderItem(col).setToolTip(C.SUMMARY_HELP.get(key, ""))
        for row, rec in enumerate(self._summary):
            for col, (key, _) in enumerate(C.SUMMARY_COLUMNS):
                v = rec.get(key)
                it = _SortItem(format_summary(key, v))
                it.setData(Qt.ItemDataRole.UserRole, v)
                if key == "run":
                    it.setIcon(swatch(series_color(row, dark)))
                    it.setData(Qt.ItemDataRole.UserRole + 1, row)
                    it.setToolTip(str(self._runs[row].path))
                elif key == "status":
                    c = status_color(str(v), dark)
                    if c is not None:
                        it.setForeground(QBrush(c))
                else:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                t.setItem(row, col, it)
        for col, (key, _) in enumerate(C.SUMMARY_COLUMNS):
            # a figure none of these runs records (ensemble gain without ensembles)
            # would only push the others out of view; the CSV keeps every column
            empty = all(format_summary(key, r.get(key)) == "" for r in self._summary)
            t.setColumnHidden(col, empty and key != "run")
        t.setSortingEnabled(True)
        if 0 <= sort_col < t.columnCount():
            t.sortByColumn(sort_col, sort_order)
        else:
            t.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        t.resizeColumnsToContents()
        t.horizontalHeader().setStretchLastSection(True)

    def _fill_diff(self) -> None:
        t = self.diff_table
        d = self._diff
        dark = is_dark_palette(self.palette())
        t.clear()
        t.setColumnCount(len(self._runs))
        t.setHorizontalHeaderLabels([r.label for r in self._runs])
        for c in range(len(self._runs)):
            t.horizontalHeaderItem(c).setIcon(swatch(series_color(c, dark)))
        if not len(d):
            t.setRowCount(1)
            t.setVerticalHeaderLabels([""])
            if self._runs:
                it = QTableWidgetItem("the same config (apart from the names)")
                it.setForeground(QBrush(self.palette().color(QPalette.ColorRole.PlaceholderText)))
                t.setItem(0, 0, it)
            return
        t.setRowCount(len(d))
        t.setVerticalHeaderLabels(list(d.index))
        hl = QColor(self.palette().color(QPalette.ColorRole.Highlight))
        hl.setAlpha(70 if dark else 45)
        bold = QFont(self.font())
        bold.setBold(True)
        for row, key in enumerate(d.index):
            vals = list(d.loc[key])
            for col, v in enumerate(vals):
                it = QTableWidgetItem(C.value_text(v))
                it.setToolTip(f"{key} = {C.value_text(v)!r}")
                if col > 0 and not C.same_value(v, vals[0]):
                    it.setBackground(QBrush(hl))
                    it.setFont(bold)
                t.setItem(row, col, it)
        t.resizeColumnsToContents()
        t.horizontalHeader().setStretchLastSection(True)

    def _size_panes(self) -> None:
        """Give the tables the height their rows need (12-45 % of the view; the plots
        keep the rest, and a report shows no empty table area), the config diff the width
        its columns need (at most half), the legend the width of its longest name."""
        total = sum(self._overview.sizes())
        if total > 0:
            rows = max(self.summary_table.rowCount(), self.diff_table.rowCount(), 1)
            row_h = max(self.summary_table.verticalHeader().defaultSectionSize(),
                        self.diff_table.verticalHeader().defaultSectionSize())
            head = self.summary_table.horizontalHeader().sizeHint().height()
            title = max(self.export_button.sizeHint().height(),
                        self._summary_title.sizeHint().height())
            scroll = self.summary_table.horizontalScrollBar().sizeHint().height()
            need = title + head + rows * row_h + scroll + 12
            h = int(min(max(need, 0.12 * total), 0.45 * total))
            self._overview.setSizes([total - h, h])
        width = sum(self._tables.sizes())
        if width > 0:
            t = self.diff_table
            need = (t.verticalHeader().width() + t.frameWidth() * 2 + 4
                    + sum(t.columnWidth(c) for c in range(t.columnCount())))
            w = int(min(need, 0.5 * width))
            self._tables.setSizes([width - w, w])
        width = sum(self._top.sizes())
        if width > 0 and self.legend.count():
            fm = self.legend.fontMetrics()
            need = max(fm.horizontalAdvance(self.legend.item(i).text())
                       for i in range(self.legend.count())) + 56
            w = int(min(max(need, 120), 0.25 * width))
            self._top.setSizes([w, width - w])

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if (obj is self._overview and event.type() == QEvent.Type.Resize
                and self._size_pending):
            self._size_pending = False   # first real layout after set_runs
            self._size_panes()
        return super().eventFilter(obj, event)

    def _ask_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export summary", "compare-summary.csv",
                                              "CSV (*.csv)")
        if not path:
            return
        if not path.lower().endswith(".csv"):
            path += ".csv"
        try:
            self.export_summary_csv(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export summary", f"Could not write {path}:\n{exc}")

    # ------------------------------------------------------------------ side by side
    def _on_tab(self, index: int) -> None:
        self._look.setVisible(index == 0 and not self._report)   # the curves' look only
        if index == 1:
            self.pair_page.ensure_built()

    def pair(self) -> list[QWidget]:
        """The two views of the side-by-side tab (built when first shown)."""
        return self.pair_page.pair()

    def set_pair(self, left: int, right: int, view: str = "Routing") -> None:
        """Show runs ``left`` and ``right`` side by side in ``view`` ("Routing", "Experts")."""
        self.pair_page.set_pair(left, right, view)

    # ------------------------------------------------------------------ status, lifetime
    def _update_status(self) -> None:
        dark = is_dark_palette(self.palette())
        n = len(self._runs)
        running = sum(r.status == "running" for r in self._runs)
        text = (f"{n} run{'s' if n != 1 else ''}" + (f" · {running} running" if running else "")
                if n else "")
        if self.groups():
            text += f" · {len(self.groups())} groups"
        if self._errors:
            err = html.escape(self._errors[-1])
            text = (text + " · " if text else "") + \
                f'<span style="color:{status_color("failed", dark).name()}">{err}</span>'
        if text != self.status.text():
            self.status.setText(text)
            self.status.setToolTip("\n".join(self._errors))
            self.statusChanged.emit(text)
        if n < 2:
            extra = "".join(f"<p>{html.escape(e)}</p>" for e in self._errors)
            self.hint.setText(HINT + extra)

    def _close_runs(self) -> None:
        for r in self._runs:
            r.reader.close()
        self._runs = []

    def closeEvent(self, event) -> None:
        self.stop_follow()
        self.pair_page.close_pair()
        self._close_runs()
        super().closeEvent(event)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            if self._runs:
                self._fill_legend()
                self._fill_summary()
                self._fill_diff()
                self.pair_page.set_runs(self._runs, force=True)   # the swatches follow the theme
            self._update_status()

