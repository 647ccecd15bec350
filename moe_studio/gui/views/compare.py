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

The numbers come from the pure functions in ``moe_studio.store.compare``; the runs are
read by ``compare_data``, drawn by ``compare_curves`` and ``compare_tables``, paired by
``compare_pair``.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import pandas as pd
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSizePolicy, QSlider,
                               QStackedWidget, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from ...store import compare as C
from ..run.follow_timer import FollowTimer
from ..run.polling import FramePacer, open_guarded, poll_guarded
from ..theme import is_dark_palette, status_color
from .compare_curves import METRIC_TITLES, PLOTS, X_LABELS, CompareCurves  # noqa: F401 - re-exported
from .compare_data import KEY_JOIN, ComparedRun, group_choices, label_duplicates, metric_names
from .compare_pair import SideBySidePage
from .compare_tables import CompareTables, splitter

FRAME_MS = 250          # 4 Hz store polling while following (a comparison needs no more)
_MAX_DRAW_INTERVAL_S = 2.0

HINT = ("<h3>Compare runs</h3><p>Check two or more runs in the <b>Runs panel</b> below "
        "(the boxes next to their names): recorded runs, sample runs or the run training "
        "now.</p><p>This view overlays their curves, groups them by a setting, lists what "
        "differs in their configs and shows two of them side by side.</p>")


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
        self._runs: list[ComparedRun] = []
        self._errors: list[str] = []
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

        # -- curves, with the legend on the left; the tables below them
        self.curves = CompareCurves()
        self.legend, self.grid = self.curves.legend, self.curves.grid
        self.tables = CompareTables()
        self.summary_table, self.diff_table = self.tables.summary_table, self.tables.diff_table
        self.export_button = self.tables.export_button
        overview = self._overview = splitter(Qt.Orientation.Vertical, (self.curves, 3, 520),
                                             (self.tables, 2, 300))
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
        self.curves.hidden_keys = set()
        for path in [Path(p) for p in paths]:
            opened = open_guarded(path, self._errors)
            if opened is not None:
                self._runs.append(ComparedRun.of(len(self._runs), path, *opened))
        label_duplicates(self._runs)
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
        return self.curves.legend_keys()

    def set_key_visible(self, key: str, visible: bool) -> None:
        """Show or hide a legend entry (``"run:<i>"`` or ``"group:<value>"``) everywhere."""
        self.curves.set_key_visible(key, visible)

    def export_summary_csv(self, path) -> Path:
        """Write the summary table (as sorted on screen) to ``path`` as CSV."""
        return self.tables.export_summary_csv(path)

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
            changed = r.apply(upd) or changed
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
        labels = [r.label for r in self._runs]
        self._diff = C.config_diff([r.config for r in self._runs], labels)
        self._fill_group_combo()
        self._fill_metric_combo()
        self._summary = [C.summary_row(r.rows, r.meta, run=r.label, status=r.status)
                         for r in self._runs]
        C.add_equal_cost(self._summary, [r.rows for r in self._runs])
        self._redraw_all()
        self.tables.fill(self._summary, self._diff, labels, [r.path for r in self._runs])
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
        for text, key in group_choices(want[1:]):
            self.group_combo.addItem(text, key)
            if KEY_JOIN in key:
                self.group_combo.setItemData(self.group_combo.count() - 1, key,
                                             Qt.ItemDataRole.ToolTipRole)
        self.group_combo.setCurrentIndex(max(0, self.group_combo.findData(keep)))
        self.group_combo.blockSignals(False)

    def _fill_metric_combo(self) -> None:
        want = metric_names(self._runs)
        have = [self.metric_combo.itemData(i) for i in range(self.metric_combo.count())]
        if want == have:
            return
        keep = self.metric_combo.currentData() or PLOTS["metric"][1]
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for n in want:   # a scalar the Training view titles reads so; the rest by name
            self.metric_combo.addItem(METRIC_TITLES.get(n, n), n)
            self.metric_combo.setItemData(self.metric_combo.count() - 1, n,
                                          Qt.ItemDataRole.ToolTipRole)
        i = self.metric_combo.findData(keep)
        if i < 0:
            i = self.metric_combo.findData(PLOTS["metric"][1])
        self.metric_combo.setCurrentIndex(max(0, i))
        self.metric_combo.blockSignals(False)

    # ------------------------------------------------------------------ curves
    def _sync_curves(self) -> None:
        self.curves.set_state(self._runs, self.group_by(), self.band_combo.currentData(),
                              self.x_mode(), self.metric_combo.currentData())

    def groups(self) -> list[tuple[str, list[int]]]:
        """``[(value, [run indices])]`` of the current grouping ([] without one)."""
        self._sync_curves()
        return self.curves.groups()

    def curve(self, run_index: int, name: str):
        """(x, y) of scalar ``name`` of a run on the current x axis."""
        self._sync_curves()
        return self.curves.curve(run_index, name)

    def _redraw_all(self) -> None:
        self._sync_curves()
        self.curves.draw()

    def _redraw_plot(self, key: str) -> None:
        self._sync_curves()
        self.curves.draw_plot(key)

    def _on_x_mode(self, _i: int) -> None:
        self.curves.set_x_axis(self.x_mode())
        self._redraw_all()
        self.fit()

    # ------------------------------------------------------------------ sizes
    def _size_panes(self) -> None:
        """Give the tables the height their rows need (12-45 % of the view; the plots
        keep the rest, and a report shows no empty table area), the config diff the width
        its columns need (at most half), the legend the width of its longest name."""
        total = sum(self._overview.sizes())
        if total > 0:
            h = int(min(max(self.tables.needed_height(), 0.12 * total), 0.45 * total))
            self._overview.setSizes([total - h, h])
        self.tables.size_diff()
        self.curves.size_legend()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if (obj is self._overview and event.type() == QEvent.Type.Resize
                and self._size_pending):
            self._size_pending = False   # first real layout after set_runs
            self._size_panes()
        return super().eventFilter(obj, event)

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
            r.close()
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
                self.curves.refill_legend()
                self.tables.fill(self._summary, self._diff, [r.label for r in self._runs],
                                 [r.path for r in self._runs])
                self.pair_page.set_runs(self._runs, force=True)   # the swatches follow the theme
            self._update_status()
