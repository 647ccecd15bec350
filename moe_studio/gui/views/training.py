"""The live training view: losses, router losses, learning rate and throughput.

Data flow (see DESIGN.md, "One way for data"): each shown run has a store follower;
while following, a timer polls it at 8 Hz and appends only the new rows to per-series
numpy buffers; the grown arrays go into the existing plot items with ``setData``, as
often as a frame budget allows (every frame on a fast machine). A run that is not
growing costs one cheap poll per frame. The buffers, the x axes and the curves' names
and colours are ``training_data``'s (no Qt there): this module only draws.
"""
from __future__ import annotations

import html
import math
import time
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QToolButton, QVBoxLayout, QWidget)

from ...store import RunFileError, open_run
from .cost_text import cost_parts
from ..widgets.fitting_label import FittingLabel
from ..widgets.line_labels import ReferenceLine, hold_side
from ..run.follow_timer import FollowTimer
from ..run.polling import FramePacer, error_text, poll_guarded
from .inspection_runs import NO_TRAINING, is_inspection
from ..formats import format_rate
from ..run.live_run import hub as live_hub, live_status
from ..widgets.plot_grid import PlotGrid
from ..widgets.plots import CurvePlot
from .run_data import moe_blocks_of
from ..widgets.stage_marks import StageMarks, stage_boundaries
from ..theme import is_dark_palette, plot_colors, status_color
from . import training_data as TD
from .training_data import PLOT_OF, PLOTS, ROUTING_PLOTS, X_STEP, X_TOKENS, X_WALL, RunTrack, series_key


FRAME_MS = 50   # 20 Hz: how often the stores are polled (an idle poll costs ~0.2 ms);
                # a fast run's curves can move at 20 frames/s, paced by a FramePacer
_MAX_DRAW_INTERVAL_S = 1.0

_X_MODES = ((X_STEP, "Step", "step"), (X_TOKENS, "Tokens", "tokens"),
            (X_WALL, "Wall time", "wall time"))

LOG_Y_PLOTS = ("loss", "aux", "z", "lr")   # what the Log y box switches
EMPTY_HINT = ("No run to show yet.\n\nPress Train (F5) to train the experiment on the left, "
              "or double-click a run or a sample run in the Runs panel to open it.")
DENSE_HINT = "No router: dense model"


class TrainingDashboard(QWidget):
    """Live (or recorded) training curves of one run, or several overlaid.

    ``set_runs([path])`` shows one run; several paths overlay their curves, one stable
    colour per run (members as shades of it) and the run name in the legend.
    ``start_follow()`` polls at 8 Hz until ``stop_follow()`` or close.
    """

    statusChanged = Signal(str)   # the one-line summary shown top right

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._tracks: list[RunTrack] = []
        self._x_mode = X_STEP
        self._follow_extent = True
        self._errors: list[str] = []
        # polls while following and shown; on show after a pause it catches up at once
        self._follow = FollowTimer(self, FRAME_MS, self._on_tick, self.refresh)
        self._pending: dict[int, set[tuple[str, int]]] = {}
        self._status_dirty = False
        self._extent_dirty = False
        self._pacer = FramePacer(_MAX_DRAW_INTERVAL_S)
        self._last_plot: str | None = None   # the plot the last one-plot frame drew

        # -- controls
        self._smooth_slider = QSlider(Qt.Orientation.Horizontal)
        self._smooth_slider.setRange(0, 99)
        self._smooth_slider.setValue(60)
        self._smooth_slider.setFixedWidth(160)
        self._smooth_slider.setToolTip("Debiased exponential moving average, as in "
                                       "TensorBoard. The raw curve stays faint behind.")
        self._smooth_label = QLabel()
        self._smooth_label.setMinimumWidth(32)
        self._x_combo = QComboBox()
        for mode, text, _ in _X_MODES:
            self._x_combo.addItem(text, mode)
        self._x_combo.setToolTip("Step: optimizer steps. Tokens: training tokens seen "
                                 "(all members). Wall time: since the run's first record.")
        self._log_check = QCheckBox("Log y")
        self._fit_button = QToolButton()
        self._fit_button.setText("Fit")
        self._fit_button.setToolTip("Zoom every plot out to all of its data and keep "
                                    "following it")
        # Leaves out its last parts when narrow (never cuts letters, never pushes the
        # controls); the whole line on hover.
        self._status = FittingLabel()
        self._status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._status.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        # What one run costs (FLOPs per token, achieved FLOP/s, memory of a step): a line
        # of its own under the controls, shown for one run that recorded it (the status
        # line beside the controls has no room for it at 1280 px).
        self._cost = FittingLabel()
        self._cost.setObjectName("costLine")
        self._cost.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._cost.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._cost.hide()
        live_hub().changed.connect(self._on_live_changed)

        bar = QHBoxLayout()
        bar.setContentsMargins(6, 4, 6, 0)
        bar.setSpacing(8)
        bar.addWidget(QLabel("Smoothing"))
        bar.addWidget(self._smooth_slider)
        bar.addWidget(self._smooth_label)
        bar.addSpacing(12)
        bar.addWidget(QLabel("X axis"))
        bar.addWidget(self._x_combo)
        bar.addSpacing(12)
        bar.addWidget(self._log_check)
        bar.addWidget(self._fit_button)
        bar.addWidget(self._status, 1)

        # -- plots: the loss wide on top, the four smaller ones below
        self._grid = PlotGrid()
        self._stage_marks = StageMarks()
        self._grid.add_plot("loss", PLOTS["loss"][0], 0, 0, 1, 4)
        for col, key in enumerate(("aux", "z", "lr", "tokens_per_s")):
            self._grid.add_plot(key, PLOTS[key][0], 1, col)
        self._grid.set_row_stretch(0, 3)
        self._grid.set_row_stretch(1, 2)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(bar)
        lay.addWidget(self._cost)
        lay.addWidget(self._grid, 1)

        self._smooth_slider.valueChanged.connect(self._on_smoothing)
        self._x_combo.currentIndexChanged.connect(self._on_x_mode)
        self._log_check.toggled.connect(self._on_log_y)
        self._fit_button.clicked.connect(self.fit)
        for plot in self._grid.plots().values():
            plot.userChangedRange.connect(self._on_user_range)
        # The planned last step of a running run: a faint line (outside the data's
        # bounds, so the axis follows the curves) and the number in the axis label.
        self._plan_lines: dict[str, pg.InfiniteLine] = {}
        for key, plot in self._grid.plots().items():
            line = pg.InfiniteLine(angle=90, movable=False, label="planned end",
                                   labelOpts={"position": 0.9, "anchors": [(1, 0), (1, 0)]})
            line.setZValue(-10)
            line.hide()
            plot.plot_item.addItem(line, ignoreBounds=True)
            self._plan_lines[key] = line
        # The load-balancing loss is summed over the MoE layers, each about 1 when
        # balanced (E * sum_i f_i P_i, Switch): a dotted line at the number of layers
        # reads "4.2" as "a little above balanced" rather than "4x too high". Its label
        # sits under it, where a curve of top-k routing does not go.
        self._balanced = ReferenceLine(angle=0, movable=False, label="",
                                       labelOpts={"position": 0.03, "anchors": [(0, -0.1)] * 2})
        hold_side(self._balanced)
        self._balanced.hide()
        self._grid.plot("aux").plot_item.addItem(self._balanced, ignoreBounds=False)
        self._grid.plot("aux").plot_item.setToolTip(
            "Switch load-balancing loss E * sum_i f_i * P_i (f: share of the tokens sent to "
            "expert i, P: its mean router probability),\nsummed over the MoE layers: 1 per "
            "layer when both are spread evenly (the dotted line), up to E when one expert "
            "takes everything.")
        self._style_plan_lines()
        self._on_smoothing(self._smooth_slider.value())
        self._update_status()

    # ------------------------------------------------------------------ public API
    def set_runs(self, paths: list[Path] | list[str]) -> None:
        """Show these runs (one: that run; several: overlaid). Reads what they hold now."""
        self._close_tracks()
        for plot in self._grid.plots().values():
            plot.clear_series()
        self._errors = []
        self._pending = {}
        for path in (Path(p) for p in paths):
            try:
                reader = open_run(path)
                follower = reader.follower()
            except (RunFileError, OSError) as exc:
                self._errors.append(error_text(exc))
                continue
            self._tracks.append(RunTrack.of(len(self._tracks), path, reader, follower,
                                            moe_layers=len(moe_blocks_of(reader))))
        TD.label_overlay(self._tracks)
        self._place_balanced()
        self.refresh()
        self._update_status()
        self.fit()

    def runs(self) -> list[Path]:
        return [t.path for t in self._tracks]

    def start_follow(self) -> None:
        """Poll the runs' stores at 8 Hz until ``stop_follow()`` or close. While the
        dashboard is hidden (another tab, a minimised window) polling pauses; on show it
        resumes and catches up with everything written meanwhile."""
        self._follow.start()

    def stop_follow(self) -> None:
        self._follow.stop()

    def is_following(self) -> bool:
        """True between ``start_follow()`` and ``stop_follow()`` / close (also while
        paused because the dashboard is hidden)."""
        return self._follow.wanted()

    def refresh(self) -> bool:
        """Read the rows the runs gained since the last call and update the plots in place.

        Returns True if anything changed. With nothing new it costs one poll per run.
        """
        changed = self._poll()
        self._draw_pending()
        return changed

    def _on_tick(self) -> None:
        """Timer frame: always read what is new (cheap); redraw when the frame budget
        allows. Drawing thousands of points in five plots can cost tens of ms on a slow
        machine; pacing keeps the GUI's share of the CPU near its duty so the trainer
        (often on the same CPU) and the rest of the app keep running smoothly."""
        self._poll()
        if self._pending and self._pacer.due():
            self._draw_pending(one_plot=True)

    def _poll(self) -> bool:
        status_changed = False
        new_rows = False
        for t in self._tracks:
            n_errors = len(self._errors)
            upd = poll_guarded(t.follower, self._errors)
            if upd is None:
                status_changed = status_changed or len(self._errors) > n_errors
                continue
            status = getattr(upd, "status", None)
            if status and status != t.status:
                t.status, status_changed = status, True
            df = getattr(upd, "scalars", None)
            if getattr(upd, "restarted", False):
                self._restart(t, df)
                new_rows = status_changed = True
            elif df is not None and len(df):
                changed = TD.ingest(t, df, self._x_mode)
                if changed:
                    self._pending.setdefault(t.index, set()).update(changed)
                    new_rows = True
        if status_changed:
            self._status_dirty = True
            if self._follow_extent:
                self._extent_dirty = True   # a run that ended no longer needs room to grow
        return new_rows or status_changed

    def _restart(self, t: RunTrack, df) -> None:
        """``t``'s run was continued from a checkpoint: ``df`` is its whole history now.
        Every curve of the run is drawn from it again; a series it no longer has goes."""
        held = t.restart()
        if df is not None and len(df):
            TD.ingest(t, df, self._x_mode)
        for name, member in held - set(t.buffers):
            if name in PLOT_OF:
                self._grid.plot(PLOT_OF[name]).remove_series(series_key(t.index, name, member))
        self._pending[t.index] = {k for k in t.buffers if k[0] in PLOT_OF}
        if self._follow_extent:
            self._extent_dirty = True     # the planned end may have moved (more steps)

    def _take_one_plot(self) -> dict[int, set]:
        """The pending keys of one plot, the next in turn after the last one drawn;
        the others stay pending. Plots repaint as a whole, and five at once cost one long
        frame (tens of ms with thousands of points); one per frame keeps every frame
        short while each plot still refreshes several times a second."""
        order = list(PLOTS)
        waiting = {PLOT_OF.get(name) for keys in self._pending.values() for name, _ in keys}
        start = (order.index(self._last_plot) + 1) if self._last_plot in order else 0
        chosen = next((order[(start + i) % len(order)] for i in range(len(order))
                       if order[(start + i) % len(order)] in waiting), None)
        self._last_plot = chosen
        take, keep = {}, {}
        for index, keys in self._pending.items():
            mine = {k for k in keys if PLOT_OF.get(k[0]) == chosen}
            rest = {k for k in keys if k not in mine and PLOT_OF.get(k[0]) is not None}
            if mine:
                take[index] = mine
            if rest:
                keep[index] = rest
        self._pending = keep
        return take

    def _draw_pending(self, one_plot: bool = False) -> None:
        if not (self._pending or self._status_dirty or self._extent_dirty):
            return
        t_start = time.perf_counter()
        touched: set[str] = set()
        if one_plot:
            pending = self._take_one_plot()
        else:
            pending, self._pending = self._pending, {}
        for index, keys in pending.items():
            touched |= self._draw(self._tracks[index], keys)
        if self._extent_dirty:
            self._extent_dirty = False
            self._apply_x_extent()
        for key in touched:
            self._grid.plot(key).sync_range()
        self._status_dirty = False
        self._update_status()
        # The next frame may come when this one's cost (drawing now + painting, as the
        # last paint took) is at most the pacer's duty of the time in between.
        now = time.perf_counter()
        plots = ([self._grid.plot(k) for k in touched] if one_plot
                 else list(self._grid.plots().values()))
        cost = (now - t_start) + sum(p.last_paint_s() for p in plots)
        self._pacer.drawn(cost, now)

    def fit(self) -> None:
        """Show all data in every plot and follow it as it grows. While a run is still
        running (and x is step or tokens), its planned end is a faint line and a number
        in the x label: the curves fill the width from the first steps on, the plan is
        still in sight."""
        self._follow_extent = True
        self._grid.auto_range()
        self._apply_x_extent()

    def x_extent(self) -> float | None:
        """The planned end of the running runs on the current x axis, or None."""
        return TD.planned_end(self._tracks, self._x_mode)

    def _apply_x_extent(self) -> None:
        end = self.x_extent()
        for key, plot in self._grid.plots().items():
            # The axis caption: the quantity (x_label()) and, while running, the plan.
            plan = f" · planned {end:,.0f}" if end is not None else ""
            plot.set_x_caption(plot.x_label() + plan, plot.x_label())
            plot.auto_range()
            line = self._plan_lines[key]
            if end is not None:
                line.setPos(end)
            line.setVisible(end is not None)

    def _style_plan_lines(self) -> None:
        muted = QColor(plot_colors(is_dark_palette(self.palette()))["muted"])
        for line in self._plan_lines.values():
            line.setPen(pg.mkPen(muted, width=1, style=Qt.PenStyle.DashLine))
            line.label.setColor(muted)
        self._balanced.setPen(pg.mkPen(muted, width=1, style=Qt.PenStyle.DotLine))
        self._balanced.label.setColor(muted)

    def _place_balanced(self) -> None:
        """The balanced aux-loss line at the MoE layers' count, when every MoE run shown
        has the same count (an overlay of 2- and 4-layer runs has no one line)."""
        counts = {t.moe_layers for t in self._tracks if not t.dense}
        line = self._balanced
        if len(counts) != 1:
            line.hide()
            return
        n = counts.pop()
        line.show()           # (its label only re-renders while visible)
        line.setPos(math.log10(n) if self._log_check.isChecked() else float(n))
        # (short: it must fit a quarter of the window's width; the plot's tooltip says why)
        line.label.setFormat(f"balanced: {n}")
        self._grid.plot("aux").place_line_labels()

    def balanced_line(self) -> tuple[float, str] | None:
        """(y, label) of the aux plot's balanced line as drawn (log10 on a log axis), or
        None while it is hidden."""
        line = self._balanced
        return (float(line.value()), line.label.toPlainText()) if line.isVisible() else None

    def _on_user_range(self) -> None:
        self._follow_extent = False   # the user's zoom stands until Fit

    def smoothing(self) -> float:
        return self._smooth_slider.value() / 100.0

    def set_smoothing(self, weight: float) -> None:
        self._smooth_slider.setValue(int(round(float(weight) * 100)))

    def x_mode(self) -> str:
        return self._x_mode

    def set_x_mode(self, mode: str) -> None:
        """"step", "tokens" or "wall" (seconds since the run's first record)."""
        i = self._x_combo.findData(mode)
        if i < 0:
            raise ValueError(f"x mode must be one of step, tokens, wall; got {mode!r}")
        self._x_combo.setCurrentIndex(i)

    def set_log_y(self, on: bool) -> None:
        self._log_check.setChecked(bool(on))

    def plot(self, key: str) -> CurvePlot:
        """One of the plots: "loss", "aux", "z", "lr", "tokens_per_s"."""
        return self._grid.plot(key)

    def plots(self) -> dict[str, CurvePlot]:
        return self._grid.plots()

    def cost_text(self) -> str:
        """The cost line of one run ("cost: 5.3 MFLOP/token · ..."), "" when none shows."""
        return self._cost.text()

    def status_text(self) -> str:
        return self._status.text()

    # ------------------------------------------------------------------ drawing
    def _draw(self, t: RunTrack, keys) -> set[str]:
        """Push the buffers of ``keys`` ((name, member) pairs) into their plots; returns
        the keys of the plots touched."""
        overlay = len(self._tracks) > 1
        touched = set()
        for name, member in sorted(keys, key=lambda k: (k[0], k[1] if k[1] >= 0 else 1 << 30)):
            plot_key = PLOT_OF.get(name)
            if plot_key is None or (t.dense and plot_key in ROUTING_PLOTS):
                continue
            buf = t.buffers[(name, member)]
            label, color = TD.series_style(t, name, member, overlay)
            sparse = name in TD.SPARSE
            self._grid.plot(plot_key).set_series(
                series_key(t.index, name, member), TD.x_of(t, buf, self._x_mode), buf.view()[1],
                label=label, color=color, dash=sparse, symbol="o" if sparse else None,
                smooth=not sparse)
            touched.add(plot_key)
        if touched and len(self._tracks) == 1:   # an overlay's stages would be ambiguous
            self._stage_marks.show([self._grid.plot(k) for k in touched],
                                   stage_boundaries(t.reader.meta),
                                   lambda s: TD.x_at_steps(t, s, self._x_mode))
        return touched

    # ------------------------------------------------------------------ controls
    def _on_smoothing(self, value: int) -> None:
        w = value / 100.0
        self._smooth_label.setText(f"{w:.2f}")
        self._grid.set_smoothing(w)

    def _on_log_y(self, on: bool) -> None:
        # Throughput hovers within one decade: a log axis would only lose its labels.
        self._grid.set_log_y(on, keys=LOG_Y_PLOTS)
        self._place_balanced()

    def _on_x_mode(self, _index: int) -> None:
        mode = self._x_combo.currentData()
        if mode == self._x_mode:
            return
        self._x_mode = mode
        axis_label = next(lbl for m, _, lbl in _X_MODES if m == mode)
        self._grid.set_x_label(axis_label)
        self._grid.set_x_format("duration" if mode == X_WALL else "number")
        for t in self._tracks:
            self._draw(t, [k for k in t.buffers if k[0] in PLOT_OF])
        self.fit()

    def _on_live_changed(self, path: str) -> None:
        # Paused, the run records nothing and no poll would notice: say it at once.
        if path and any(Path(path) == t.path for t in self._tracks):
            self._update_status()

    def _update_status(self) -> None:
        dark = is_dark_palette(self.palette())
        cost = ""
        if not self._tracks:
            text = "No run" if not self._errors else ""
        elif len(self._tracks) == 1:
            t = self._tracks[0]
            # The app's own run: its state and rate as the status bar shows them.
            live = live_status(t.path)
            status = live.status if live is not None else t.status
            c = status_color(status, dark)
            dot = f'<span style="color:{c.name()}">●</span> ' if c is not None else ""
            parts = [f"<b>{_esc(t.name)}</b>", f"{dot}{_esc(status or 'unknown')}"]
            last = live.step if live is not None else t.last_step()
            if last is not None:
                parts.append(f"step {last:,}" + (f" / {t.total_steps:,}" if t.total_steps else ""))
            tps = live.tokens_per_s if live is not None else \
                (t.last_value("tokens_per_s", -1) if t.status == "running" else None)
            if tps is not None:
                parts.append(format_rate(tps))
            val = t.last_value("val/loss", -1 if t.members > 1 else 0)
            if val is not None:
                parts.append(f"val {val:.4f}")
            cost = " · ".join(cost_parts(getattr(t.reader, "meta", None), tps))
            text = " · ".join(parts)
        else:
            running = sum(t.status == "running" for t in self._tracks)
            text = f"{len(self._tracks)} runs overlaid" + (f" · {running} running" if running
                                                           else "")
        if self._errors:
            err = _esc(self._errors[-1])
            text = (text + " · " if text else "") + \
                f'<span style="color:{status_color("failed", dark).name()}">{err}</span>'
        self._update_placeholder()
        line = f"cost: {cost}" if cost else ""
        if line != self._cost.text():
            self._cost.setText(line)
            self._cost.setToolTip("Training FLOPs per token (matmuls, 2 per multiply-add, "
                                  "3 x forward), achieved FLOP/s at the current rate, and the "
                                  "measured memory of one step")
        self._cost.setVisible(bool(cost))
        if text != self._status.text():
            self._status.setText(text)
            self._status.setToolTip("\n".join(self._errors))
            self.statusChanged.emit(text)

    def _update_placeholder(self) -> None:
        loss = self._grid.plot("loss")
        if not self._tracks:
            hint = "" if self._errors else EMPTY_HINT
        elif all(is_inspection(t.reader) for t in self._tracks):
            hint = NO_TRAINING
        elif not loss.series_keys() and not self._pending:
            hint = "Waiting for the first recorded step…" if any(
                t.status == "running" for t in self._tracks) else "These runs recorded no losses."
        else:
            hint = ""
        if hint != loss.placeholder():
            loss.set_placeholder(hint)
        dense = bool(self._tracks) and all(t.dense for t in self._tracks)
        for key in ROUTING_PLOTS:
            plot = self._grid.plot(key)
            text = DENSE_HINT if dense else ""
            if text != plot.placeholder():
                plot.set_placeholder(text)

    # ------------------------------------------------------------------ lifetime
    def _close_tracks(self) -> None:
        for t in self._tracks:
            t.close()
        self._tracks = []

    def closeEvent(self, event) -> None:
        self.stop_follow()
        self._close_tracks()
        super().closeEvent(event)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._update_status()   # the status colours follow the theme
            if hasattr(self, "_plan_lines"):
                self._style_plan_lines()


def _esc(text: str) -> str:
    return html.escape(str(text))
