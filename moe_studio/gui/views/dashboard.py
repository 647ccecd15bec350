"""``RunDashboard``: the base of the views that show one run step by step (Gates,
Experts, Routing, Precision, Ensemble), and what they share.

It offers the main window's dashboard API (``set_runs``, ``start_follow``,
``stop_follow``, ``refresh``), owns the run's reader and follower and the shared
``RunControls``, and polls at 8 Hz while following; subclasses read what they show in
``_load`` / ``_ingest`` and draw in ``_show``; ``move_step_markers`` moves the step
lines of their over-time plots. What they read from any run without Qt is in
``run_data.py``.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ...store import Follower, RunFileError, RunReader, open_run
from ..run.follow_timer import FollowTimer
from ..run.polling import FramePacer, error_text
from ..run.live_run import hub as live_hub, live_status
from ..theme import is_dark_palette, status_color
from ..widgets.run_controls import RunControls
from .run_data import moe_blocks_of

FRAME_MS = 125   # 8 Hz store polling while following
MARKER_MS = 150  # step markers on the over-time plots move at most this often while scrubbing
_MAX_DRAW_INTERVAL_S = 2.0


DENSE_REASON = "dense model: no MoE layers"
DENSE_STATUS = DENSE_REASON + ", nothing is routed"
DENSE_NOTICE = ("<h3>Dense model: nothing is routed</h3>"
                "<p>This run has no MoE layer, so there are no router probabilities, expert "
                "loads or routing decisions to show. Open an MoE run (the sample runs "
                "<i>moe-top2</i> and <i>switch-top1</i>, say), or set <b>model.moe_layers</b> "
                "in the setup panel and train one.</p>")


class RunDashboard(QWidget):
    """Base of the routing dashboards: one run (the first of ``set_runs``), its reader
    and follower, the shared controls, and 8 Hz polling while following.

    Subclasses implement ``_reset()`` (forget the old run's data), ``_load(reader)``
    (read what the run holds, called by the first refresh), ``_ingest(update) -> bool``
    (read what a poll found new; True if anything shown changed) and ``_show()``
    (draw the selected layer and step from what was read).
    """

    statusChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.controls = RunControls()
        self._reader: RunReader | None = None
        self._follower: Follower | None = None
        self._path: Path | None = None
        self._n_runs = 0
        self._errors: list[str] = []
        self._run_status = ""
        self._loaded = False
        # polls while following and shown (not while another tab is in front or the
        # window is minimised); on show after a pause it catches up at once
        self._follow = FollowTimer(self, FRAME_MS, self._on_tick, self.refresh)
        self._dense: bool | None = None     # is_dense_run() of the shown run (cache)
        # Over the plots of a router view when the run has no router: empty axes alone
        # read as broken.
        self._notice = QLabel(self)
        self._notice.setObjectName("denseNotice")
        self._notice.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._notice.setWordWrap(True)
        self._notice.setAutoFillBackground(True)
        self._notice.setText(DENSE_NOTICE)
        self._notice.hide()
        # Step markers on the over-time plots: moving one repaints that whole plot, so
        # while the slider is dragged or playing they follow at most every MARKER_MS
        # (first move at once, the last one always lands).
        self._marker_timer = QTimer(self)
        self._marker_timer.setObjectName("markerTimer")
        self._marker_timer.setSingleShot(True)
        self._marker_timer.setInterval(MARKER_MS)
        self._marker_timer.timeout.connect(self._apply_markers)
        self._marker_step: int | None = None
        self._late_titles: dict = {}      # plot -> title, set with the markers
        self._last_markers = 0.0
        self._dirty = False           # read but not drawn yet (frame pacing)
        self._pacer = FramePacer(_MAX_DRAW_INTERVAL_S)
        self._reading = False         # inside _poll: a new step is drawn once, after it
        self.controls.layerChanged.connect(lambda _b: self._draw())
        self.controls.stepChanged.connect(self._on_step)
        self.controls.memberChanged.connect(self._on_member)
        # The notice over the plots starts under the controls, however tall they are now.
        self.controls.resized.connect(self._place_notice)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self._layout.setSpacing(4)
        self._layout.addWidget(self.controls)
        live_hub().changed.connect(self._on_live_changed)

    def _on_live_changed(self, path: str) -> None:
        # A paused run records nothing, so no poll would notice: say it at once.
        if self._path is not None and path and Path(path) == self._path:
            self._update_status()

    def _shown_status(self) -> str:
        """The app's own live run's state (paused, stopping, ...) or the store's."""
        live = live_status(self._path)
        return live.status if live is not None else self._run_status

    # ------------------------------------------------------------------ dashboard API
    def set_runs(self, paths) -> None:
        """Show the first of ``paths`` (routing views show one run; the rest are named in
        the status line). Reads what it holds now."""
        self._close_reader()
        self._errors = []
        self._dense = None
        self._reset()
        paths = [Path(p) for p in paths]
        self._n_runs = len(paths)
        if paths:
            try:
                self._reader = open_run(paths[0])
                self._follower = self._reader.follower()
                self._path = paths[0]
                self._run_status = self._reader.status
            except (RunFileError, OSError) as exc:
                self._errors.append(error_text(exc))
        self.refresh()
        self._update_status()

    def runs(self) -> list[Path]:
        return [self._path] if self._path is not None else []

    def reader(self) -> RunReader | None:
        return self._reader

    def start_follow(self) -> None:
        """Poll the run at 8 Hz until ``stop_follow()`` or close, pausing while hidden."""
        self._follow.start()

    def stop_follow(self) -> None:
        self._follow.stop()
        self.controls.pause()
        if self._marker_timer.isActive():
            self._marker_timer.stop()
            self._apply_markers()

    def is_following(self) -> bool:
        """True between ``start_follow()`` and ``stop_follow()`` (also while paused)."""
        return self._follow.wanted()

    def refresh(self) -> bool:
        """Read what the run gained since the last call and update the views in place.
        True if anything changed. With nothing new it costs one cheap poll."""
        changed = self._poll()
        if changed or self._dirty:
            self._draw()
        return changed

    def _on_tick(self) -> None:
        """Timer frame: always read what is new (cheap); redraw when the frame budget
        allows, so a live run whose views cost tens of ms to draw keeps the GUI's share
        of the CPU near its duty (the trainer often runs on the same cores)."""
        if self._poll():
            self._dirty = True
        if self._dirty and self._pacer.due():
            self._draw()

    def _draw(self) -> None:
        t0 = time.perf_counter()
        self._dirty = False
        if self._reader is not None and self._loaded:
            try:
                self._show()
            except (RunFileError, OSError) as exc:  # a damaged record met while drawing
                msg = error_text(exc)            # (a snapshot scrubbed to): said, not raised
                if msg not in self._errors:
                    self._errors.append(msg)
        self._update_status()
        now = time.perf_counter()
        self._pacer.drawn(now - t0, now)

    def _on_step(self, _step: int) -> None:
        if self._reading:
            # The slider followed a new last step while reading: drawing it now and again
            # when the read is done doubled the cost of every live refresh.
            self._dirty = True
        else:
            self._draw()

    def _poll(self) -> bool:
        """Read what is new into the view's data (no drawing); True if anything changed."""
        if self._reader is None or self._follower is None:
            return False
        self._reading = True
        try:
            return self._poll_once()
        finally:
            self._reading = False

    def _poll_once(self) -> bool:
        try:
            upd = self._follower.poll()
            if not self._loaded or getattr(upd, "restarted", False):
                # First read, or the run was continued from a checkpoint and what this
                # view holds past it may have been replaced: read the run afresh.
                if self._loaded:
                    self._reader.refresh()
                    self._reset()
                self._loaded = True
                self._load(self._reader)
                changed = True
            else:
                changed = bool(self._ingest(upd))
        except Exception as exc:  # noqa: BLE001 - a frame must never take the GUI down
            msg = error_text(exc)
            if msg not in self._errors:
                self._errors.append(msg)
                self._update_status()
            return False
        status_changed = upd.status != self._run_status
        self._run_status = upd.status
        if status_changed and not changed:
            self._update_status()
        return bool(changed or status_changed)

    def member(self) -> int:
        return self.controls.member()

    def layer(self) -> int | None:
        return self.controls.layer()

    def step(self) -> int | None:
        return self.controls.step()

    def status_text(self) -> str:
        return self.controls.status.text()

    # ------------------------------------------------------------------ hooks
    def _reset(self) -> None:
        self._loaded = False

    def _load(self, reader: RunReader) -> None:  # pragma: no cover - overridden
        pass

    def _ingest(self, upd: Any) -> bool:  # pragma: no cover - overridden
        return False

    def _show(self) -> None:  # pragma: no cover - overridden
        pass

    def _set_markers(self, step: int | None) -> None:
        """Move the step markers to ``step`` now, or within MARKER_MS while scrubbing."""
        self._marker_step = step
        if self._marker_timer.isActive():
            return
        if time.perf_counter() - self._last_markers >= MARKER_MS / 1000.0:
            self._apply_markers()
        else:
            self._marker_timer.start()

    def _set_title_later(self, plot, title: str) -> None:
        """Set a title that changes with the step (a new title re-lays its plot out)
        together with the step markers, i.e. at most every MARKER_MS while scrubbing."""
        self._late_titles[plot] = title

    def _apply_markers(self) -> None:
        self._last_markers = time.perf_counter()
        titles, self._late_titles = self._late_titles, {}
        for plot, title in titles.items():
            plot.set_title(title)
        self._move_markers(self._marker_step)

    def settle(self) -> None:
        """Apply what scrubbing deferred (step markers, titles) now."""
        self._marker_timer.stop()
        self._apply_markers()

    def _move_markers(self, step: int | None) -> None:
        """Subclasses move their over-time plots' step markers here."""

    def _on_member(self, _m: int) -> None:
        if self._reader is not None:
            self._reset()
            self._loaded = True
            self._load(self._reader)
            self._draw()

    def _members_of(self, reader: RunReader) -> int:
        cfg = reader.config if isinstance(reader.config, dict) else {}
        return int((cfg.get("ensemble") or {}).get("members") or 1)

    def _status_extra(self) -> str:
        return ""

    # A view of the router (Gates, Experts, Routing): nothing to show for a dense model.
    routes_tokens = False

    def is_dense_run(self) -> bool:
        """The shown run has been read and has no MoE layer (nothing is routed)."""
        if self._reader is None or not self._loaded:
            return False
        if self._dense is None:
            self._dense = not moe_blocks_of(self._reader)
        return self._dense

    def _place_notice(self) -> None:
        show = self.routes_tokens and self.is_dense_run()
        if show:
            top = self.controls.geometry().bottom() + 4
            self._notice.setGeometry(0, top, self.width(), max(0, self.height() - top))
            self._notice.raise_()
        self._notice.setVisible(show)

    def dense_notice(self) -> str:
        """The message over the plots ("" when it is not shown)."""
        return self._notice.text() if not self._notice.isHidden() else ""

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place_notice()

    def report_empty_reason(self) -> str:
        """Why a report leaves this view out ("" when it has something to show)."""
        return DENSE_REASON if self.routes_tokens and self.is_dense_run() else ""

    def _update_status(self) -> None:
        self._place_notice()
        dark = is_dark_palette(self.palette())
        parts = []
        status = self._shown_status()
        if self._reader is not None:
            c = status_color(status, dark)
            dot = f'<span style="color:{c.name()}">●</span> ' if c is not None else ""
            parts.append(f"<b>{html.escape(self._reader.name)}</b>")
            parts.append(f"{dot}{html.escape(status or 'unknown')}")
            if self._n_runs > 1:
                parts.append(f"first of {self._n_runs} runs")
            extra = self._status_extra()
            if extra:
                parts.append(extra)
        elif not self._errors:
            parts.append("No run")
        text = " · ".join(parts)
        if self._errors:
            err = html.escape(self._errors[-1])
            text = (text + " · " if text else "") + \
                f'<span style="color:{status_color("failed", dark).name()}">{err}</span>'
        if text != self.controls.status.text():
            self.controls.status.setText(text)
            # the whole line on hover: a narrow window cuts it at the left
            plain = " · ".join([p for p in (self._reader.name if self._reader else "",
                                             status if self._reader else "",
                                             self._status_extra() if self._reader else "") if p])
            self.controls.status.setToolTip("\n".join(([plain] if plain else []) + self._errors))
            self.statusChanged.emit(text)

    # ------------------------------------------------------------------ lifetime
    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = self._follower = self._path = None
        self._loaded = False

    def closeEvent(self, event) -> None:
        self.stop_follow()
        self._marker_timer.stop()
        self._close_reader()
        super().closeEvent(event)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._update_status()
            self._palette_changed()

    def _palette_changed(self) -> None:
        """Subclasses re-colour what they draw themselves (text views)."""


def move_step_markers(markers, step: int | None) -> None:
    """Put the vertical step-marker lines (``pg.InfiniteLine``) of over-time plots at
    ``step``, or hide them for None."""
    for m in markers:
        if step is None:
            m.hide()
        else:
            m.setPos(step)
            m.show()
