"""The live training view: losses, router losses, learning rate and throughput.

Data flow (see DESIGN.md, "One way for data"): each shown run has a store follower;
while following, a timer polls it at 8 Hz and appends only the new rows to per-series
numpy buffers; the grown arrays go into the existing plot items with ``setData``, as
often as a frame budget allows (every frame on a fast machine). A run that is not
growing costs one cheap poll per frame.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QToolButton, QVBoxLayout, QWidget)

from ...store import Follower, RunFileError, RunReader, open_run
from .cost_text import cost_parts
from ..widgets.fitting_label import FittingLabel
from ..run.follow_timer import FollowTimer, FramePacer, error_text, poll_guarded
from .inspection_runs import NO_TRAINING, is_inspection
from ..formats import format_rate
from ..run.live_run import hub as live_hub, live_status
from ..widgets.plots import CurvePlot, PlotGrid
from .rank_series import rank_of, rank_series_specs
from .dashboard import moe_blocks_of
from ..widgets.stage_marks import StageMarks, stage_boundaries
from ..theme import is_dark_palette, plot_colors, status_color

FRAME_MS = 50   # 20 Hz: how often the stores are polled (an idle poll costs ~0.2 ms);
                # a fast run's curves can move at 20 frames/s, paced by a FramePacer
_MAX_DRAW_INTERVAL_S = 1.0

X_STEP, X_TOKENS, X_WALL = "step", "tokens", "wall"
_X_MODES = ((X_STEP, "Step", "step"), (X_TOKENS, "Tokens", "tokens"),
            (X_WALL, "Wall time", "wall time"))

# plot key -> (title, [(scalar name, short label, per-member?)])
PLOTS: dict[str, tuple[str, list[tuple[str, str, bool]]]] = {
    "loss": ("Loss (nats/token)", [("train/loss", "train", True), ("val/loss", "val", True)]),
    "aux": ("Load-balancing loss", [("train/aux_loss", "aux", True)]),
    "z": ("Router z-loss", [("train/z_loss", "z", True)]),
    "lr": ("Learning rate", [("lr", "lr", False)]),
    "tokens_per_s": ("Tokens per second", [("tokens_per_s", "tokens/s", False)]
                     + rank_series_specs()),
}
LOG_Y_PLOTS = ("loss", "aux", "z", "lr")
EMPTY_HINT = ("No run to show yet.\n\nPress Train (F5) to train the experiment on the left, "
              "or double-click a run or a sample run in the Runs panel to open it.")  # what the Log y box switches
_PLOT_OF = {name: key for key, (_, specs) in PLOTS.items() for name, _, _ in specs}
_SPARSE = {"val/loss"}          # evaluated every eval_every steps: dashed, dots, unsmoothed
_TOKENS = "tokens"              # run-wide cumulative tokens, the x of the Tokens axis
_NAME_SET = frozenset(_PLOT_OF) | {_TOKENS}


def series_key(run_index: int, name: str, member: int) -> str:
    """The CurvePlot series key of scalar ``name`` of ``member`` in the ``run_index``-th run."""
    return f"{run_index}|{name}|{member}"


class _Buffer:
    """Append-only columns (step, value, wall time) with amortised O(1) growth."""

    __slots__ = ("step", "value", "wall", "n")

    def __init__(self) -> None:
        self.step = np.empty(64)
        self.value = np.empty(64)
        self.wall = np.empty(64)
        self.n = 0

    def extend(self, step: np.ndarray, value: np.ndarray, wall: np.ndarray) -> None:
        k = step.size
        if self.n + k > self.step.size:
            cap = max(2 * self.step.size, self.n + k)
            for name in ("step", "value", "wall"):
                grown = np.empty(cap)
                grown[:self.n] = getattr(self, name)[:self.n]
                setattr(self, name, grown)
        sl = slice(self.n, self.n + k)
        self.step[sl], self.value[sl], self.wall[sl] = step, value, wall
        out_of_order = self.n > 0 and k > 0 and step[0] < self.step[self.n - 1]
        self.n += k
        if out_of_order or (k > 1 and np.any(np.diff(step) < 0)):
            order = np.argsort(self.step[:self.n], kind="stable")
            for name in ("step", "value", "wall"):
                col = getattr(self, name)
                col[:self.n] = col[:self.n][order]

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.step[:self.n], self.value[:self.n], self.wall[:self.n]


_ROUTING_PLOTS = ("aux", "z")
DENSE_HINT = "No router: dense model"


@dataclass
class _RunTrack:
    index: int
    path: Path
    reader: RunReader
    follower: Follower
    name: str
    label: str            # legend prefix in an overlay ("" for a single run)
    members: int
    total_steps: int | None
    status: str
    dense: bool = False   # no MoE layer: no router, no routing losses to plot
    buffers: dict[tuple[str, int], _Buffer] = field(default_factory=dict)
    t0: float = float("inf")  # wall time of the run's first record

    def close(self) -> None:
        self.reader.close()

    def tokens_at(self, steps: np.ndarray) -> np.ndarray:
        """Cumulative tokens at ``steps``: the run-wide ``tokens`` record joined by step,
        interpolated between records, proportional to step outside them."""
        buf = self.buffers.get((_TOKENS, -1))
        if buf is None or buf.n == 0:
            return np.full(steps.shape, np.nan)
        s, t, _ = buf.view()
        out = np.interp(steps, s, t)
        if s[0] > 0:
            lo = steps < s[0]
            out[lo] = steps[lo] * (t[0] / s[0])
        if s[-1] > 0:
            hi = steps > s[-1]
            out[hi] = steps[hi] * (t[-1] / s[-1])
        return out

    def last_step(self) -> int | None:
        steps = [b.step[b.n - 1] for b in self.buffers.values() if b.n]
        return int(max(steps)) if steps else None

    def last_value(self, name: str, member: int) -> float | None:
        buf = self.buffers.get((name, member))
        return float(buf.value[buf.n - 1]) if buf is not None and buf.n else None


class TrainingDashboard(QWidget):
    """Live (or recorded) training curves of one run, or several overlaid.

    ``set_runs([path])`` shows one run; several paths overlay their curves, one stable
    colour per run (members as shades of it) and the run name in the legend.
    ``start_follow()`` polls at 8 Hz until ``stop_follow()`` or close.
    """

    statusChanged = Signal(str)   # the one-line summary shown top right

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._tracks: list[_RunTrack] = []
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
        paths = [Path(p) for p in paths]
        names: list[str] = []
        for path in paths:
            try:
                reader = open_run(path)
                follower = reader.follower()
            except (RunFileError, OSError) as exc:
                self._errors.append(error_text(exc))
                continue
            cfg = reader.config if isinstance(reader.config, dict) else {}
            members = int((cfg.get("ensemble") or {}).get("members") or 1)
            total = (cfg.get("train") or {}).get("steps")
            name = reader.name or path.name
            names.append(name)
            self._tracks.append(_RunTrack(
                index=len(self._tracks), path=path, reader=reader, follower=follower,
                name=name, label="", members=members,
                total_steps=int(total) if total else None, status=reader.status,
                dense=not moe_blocks_of(reader)))
        if len(self._tracks) > 1:
            for t in self._tracks:
                # Two runs of one name (a re-run) stay apart by their run id.
                dup = names.count(t.name) > 1
                t.label = f"{t.name} ({t.reader.run_id})" if dup else t.name
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
            if df is not None and len(df):
                changed = self._ingest(t, df)
                if changed:
                    self._pending.setdefault(t.index, set()).update(changed)
                    new_rows = True
        if status_changed:
            self._status_dirty = True
            if self._follow_extent:
                self._extent_dirty = True   # a run that ended no longer needs room to grow
        return new_rows or status_changed

    def _take_one_plot(self) -> dict[int, set]:
        """The pending keys of one plot, the next in turn after the last one drawn;
        the others stay pending. Plots repaint as a whole, and five at once cost one long
        frame (tens of ms with thousands of points); one per frame keeps every frame
        short while each plot still refreshes several times a second."""
        order = list(PLOTS)
        waiting = {_PLOT_OF.get(name) for keys in self._pending.values() for name, _ in keys}
        start = (order.index(self._last_plot) + 1) if self._last_plot in order else 0
        chosen = next((order[(start + i) % len(order)] for i in range(len(order))
                       if order[(start + i) % len(order)] in waiting), None)
        self._last_plot = chosen
        take, keep = {}, {}
        for index, keys in self._pending.items():
            mine = {k for k in keys if _PLOT_OF.get(k[0]) == chosen}
            rest = {k for k in keys if k not in mine and _PLOT_OF.get(k[0]) is not None}
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
        if self._x_mode == X_WALL:
            return None
        ends = []
        for t in self._tracks:
            if t.status != "running" or not t.total_steps:
                continue
            last = float(max(t.total_steps, t.last_step() or 0))
            if self._x_mode == X_STEP:
                ends.append(last)
            else:
                end = t.tokens_at(np.array([last]))[0]
                if np.isfinite(end):
                    ends.append(float(end))
        return max(ends) if ends else None

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

    def status_text(self) -> str:
        return self._status.text()

    # ------------------------------------------------------------------ data
    def _ingest(self, t: _RunTrack, df: pd.DataFrame) -> set[tuple[str, int]]:
        """Append the rows of ``df`` this view plots to ``t``'s buffers; return the
        (name, member) keys whose series must be redrawn."""
        wall = (df["wall_time"].to_numpy(dtype=np.float64) if "wall_time" in df
                else np.full(len(df), np.nan))
        t0_moved = False
        if wall.size and np.isfinite(wall).any():
            first = float(np.nanmin(wall))
            if first < t.t0:
                t.t0, t0_moved = first, True
        # Plain numpy from here: a live frame brings a few dozen rows, for which pandas'
        # per-call overhead (groupby, frame construction) would cost more than the data.
        names = df["name"]
        if isinstance(names.dtype, pd.CategoricalDtype):
            codes = names.cat.codes.to_numpy()
            cats = names.cat.categories
        else:
            codes, cats = pd.factorize(names)
        wanted = np.array([i for i, c in enumerate(cats) if c in _NAME_SET], dtype=codes.dtype)
        changed: set[tuple[str, int]] = set()
        if wanted.size:
            keep = np.isin(codes, wanted)
            if keep.any():
                codes = codes[keep].astype(np.int64)
                member = df["member"].to_numpy(dtype=np.int64)[keep]
                step = df["step"].to_numpy(dtype=np.float64)[keep]
                value = df["value"].to_numpy(dtype=np.float64)[keep]
                wall = wall[keep]
                group = codes * 1024 + (member + 1)        # members are -1..15
                order = np.argsort(group, kind="stable")   # keeps each series' row order
                group = group[order]
                starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
                ends = np.r_[starts[1:], group.size]
                for a, b in zip(starts.tolist(), ends.tolist()):
                    rows = order[a:b]
                    key = (str(cats[int(group[a] // 1024)]), int(group[a] % 1024) - 1)
                    t.buffers.setdefault(key, _Buffer()).extend(step[rows], value[rows],
                                                                wall[rows])
                    changed.add(key)
        # Every x changes when the axis it is measured on moves.
        if ((self._x_mode == X_TOKENS and (_TOKENS, -1) in changed)
                or (self._x_mode == X_WALL and t0_moved)):
            changed |= set(t.buffers)
        changed.discard((_TOKENS, -1))
        return changed

    def _x_of(self, t: _RunTrack, buf: _Buffer) -> np.ndarray:
        step, _, wall = buf.view()
        if self._x_mode == X_TOKENS:
            return t.tokens_at(step)
        if self._x_mode == X_WALL:
            return wall - t.t0
        return step

    def _x_at_steps(self, t: _RunTrack, steps: np.ndarray) -> np.ndarray:
        """x of the current axis at arbitrary steps (wall time interpolated between records)."""
        if self._x_mode == X_WALL:
            buf = max(t.buffers.values(), key=lambda b: b.n, default=None)
            if buf is None or buf.n == 0:
                return np.full(steps.shape, np.nan)
            s, _, wall = buf.view()
            return np.interp(steps, s, wall) - t.t0
        return t.tokens_at(steps) if self._x_mode == X_TOKENS else steps

    def _draw(self, t: _RunTrack, keys) -> set[str]:
        """Push the buffers of ``keys`` ((name, member) pairs) into their plots; returns
        the keys of the plots touched."""
        overlay = len(self._tracks) > 1
        touched = set()
        for name, member in sorted(keys, key=lambda k: (k[0], k[1] if k[1] >= 0 else 1 << 30)):
            plot_key = _PLOT_OF.get(name)
            if plot_key is None or (t.dense and plot_key in _ROUTING_PLOTS):
                continue
            buf = t.buffers[(name, member)]
            label, color = self._style(t, name, member, overlay)
            sparse = name in _SPARSE
            self._grid.plot(plot_key).set_series(
                series_key(t.index, name, member), self._x_of(t, buf), buf.view()[1],
                label=label, color=color, dash=sparse, symbol="o" if sparse else None,
                smooth=not sparse)
            touched.add(plot_key)
        if touched and len(self._tracks) == 1:   # an overlay's stages would be ambiguous
            self._stage_marks.show([self._grid.plot(k) for k in touched],
                                   stage_boundaries(t.reader.meta), lambda s: self._x_at_steps(t, s))
        return touched

    def _style(self, t: _RunTrack, name: str, member: int, overlay: bool):
        """Legend label and colour of one series. The plot title names the metric, so
        labels name only what tells the curves of one plot apart: train / val (the
        loss plot), the member, the run (overlays)."""
        plot_key = _PLOT_OF[name]
        specs = PLOTS[plot_key][1]
        short = next(s for n, s, _ in specs if n == name)
        rank = rank_of(name)
        if rank is not None:   # a distributed run's ranks: one colour (shade) each
            if overlay:
                return f"{t.label} · {short}", (t.index, rank + 1)
            return short, rank + 1
        specs = [sp for sp in specs if rank_of(sp[0]) is None]
        multi = t.members > 1
        if member < 0:
            who = "ensemble" if name in _SPARSE and multi else ""
        else:
            who = f"m{member}" if multi else ""
        kind = short if len(specs) > 1 else ""
        text = " ".join(p for p in (kind, who) if p)
        if overlay:
            # One colour per run; its members (and the ensemble) as shades of it.
            if member < 0:
                shade = min(t.members, 4) if who == "ensemble" else 0
            else:
                shade = member if multi else 0
            return (f"{t.label} · {text}" if text else t.label), (t.index, shade)
        text = text or short
        if member < 0:
            return text, ("ensemble" if name in _SPARSE and multi else 0)
        if multi:
            return text, member
        # One model: train and validation loss in two clearly different colours.
        return text, (1 if name in _SPARSE else 0)

    # ------------------------------------------------------------------ controls
    def _on_smoothing(self, value: int) -> None:
        w = value / 100.0
        self._smooth_label.setText(f"{w:.2f}")
        self._grid.set_smoothing(w)

    def _on_log_y(self, on: bool) -> None:
        # Throughput hovers within one decade: a log axis would only lose its labels.
        self._grid.set_log_y(on, keys=LOG_Y_PLOTS)

    def _on_x_mode(self, _index: int) -> None:
        mode = self._x_combo.currentData()
        if mode == self._x_mode:
            return
        self._x_mode = mode
        axis_label = next(lbl for m, _, lbl in _X_MODES if m == mode)
        self._grid.set_x_label(axis_label)
        self._grid.set_x_format("duration" if mode == X_WALL else "number")
        for t in self._tracks:
            self._draw(t, [k for k in t.buffers if k[0] in _PLOT_OF])
        self.fit()

    def _on_live_changed(self, path: str) -> None:
        # Paused, the run records nothing and no poll would notice: say it at once.
        if path and any(Path(path) == t.path for t in self._tracks):
            self._update_status()

    def _update_status(self) -> None:
        dark = is_dark_palette(self.palette())
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
            parts += cost_parts(getattr(t.reader, "meta", None), tps)
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
        for key in _ROUTING_PLOTS:
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
