"""FollowTimer: poll a store at a fixed rate while a view wants it and is visible;
FramePacer: redraw only as often as keeps drawing to a share of the GUI thread;
``poll_guarded`` / ``open_guarded``: a read error becomes a line, never a crash.

A dashboard's ``start_follow()`` / ``stop_follow()`` say whether it should follow its
runs; while the widget is hidden (another tab, a minimised window) polling pauses, and
on show the view catches up at once and polling resumes. The timer is a child of the
widget, so closing or deleting the widget never leaves it running.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget

from ...store import RunFileError, open_run

DUTY = 0.3   # while following, redrawing takes at most about this share of the GUI thread


class FramePacer:
    """When a following view may redraw: a frame that cost ``c`` seconds (drawing, and
    painting where the view measures it) is followed by at least ``c / duty`` seconds
    without one, capped at ``max_interval_s``. A live run whose views cost tens of ms
    to draw so keeps the GUI's share of the CPU near ``duty``, and the trainer (often on
    the same cores) and the rest of the app keep running smoothly. Qt-free."""

    def __init__(self, max_interval_s: float, duty: float = DUTY):
        self.duty, self.max_interval_s = float(duty), float(max_interval_s)
        self.last = 0.0
        self.interval = 0.0

    def due(self, now: float | None = None) -> bool:
        """Whether a redraw may happen now."""
        return (time.perf_counter() if now is None else now) - self.last >= self.interval

    def drawn(self, cost_s: float, now: float | None = None) -> None:
        """A redraw that cost ``cost_s`` seconds ended at ``now`` (default: now)."""
        self.interval = min(self.max_interval_s, cost_s / self.duty)
        self.last = time.perf_counter() if now is None else now


class FollowTimer(QObject):
    """Calls ``on_tick`` every ``interval_ms`` between ``start()`` and ``stop()`` while
    ``widget`` is shown; ``on_resume`` (default ``on_tick``) when it is shown again
    after being hidden while following."""

    def __init__(self, widget: QWidget, interval_ms: int, on_tick: Callable[[], object],
                 on_resume: Callable[[], object] | None = None, name: str = "followTimer"):
        super().__init__(widget)
        self._timer = QTimer(widget)
        self._timer.setObjectName(name)
        self._timer.setInterval(int(interval_ms))
        self._timer.timeout.connect(on_tick)
        self._on_resume = on_resume or on_tick
        self._wanted = False
        self._hidden = False   # hidden by Qt (a hide event), not merely never shown
        widget.installEventFilter(self)

    def start(self) -> None:
        self._wanted = True
        if not self._hidden and not self._timer.isActive():
            self._timer.start()

    def stop(self) -> None:
        self._wanted = False
        self._timer.stop()

    def wanted(self) -> bool:
        """True between ``start()`` and ``stop()`` (also while paused, hidden)."""
        return self._wanted

    def is_active(self) -> bool:
        return self._timer.isActive()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        t = event.type()
        if t == QEvent.Type.Hide:
            self._hidden = True
            self._timer.stop()
        elif t == QEvent.Type.Show:
            self._hidden = False
            if self._wanted and not self._timer.isActive():
                self._on_resume()   # catch up: the view has been out of date while hidden
                self._timer.start()
        return False


def poll_guarded(follower: Any, errors: list[str]) -> Any:
    """``follower.poll()``, or None if it raised: a run folder deleted under the view, a
    transient SQLite error. The one-line reason joins ``errors`` (once); what is drawn
    stays, and the next frame tries again. A frame must never take the GUI down."""

    try:
        return follower.poll()
    except Exception as exc:  # noqa: BLE001
        msg = error_text(exc)
        if msg not in errors:
            errors.append(msg)
        return None


def open_guarded(path: Any, errors: list[str]) -> Any:
    """``(reader, follower)`` of the run at ``path``, or None when it cannot be read (the
    store's one-line reason joins ``errors``)."""
    try:
        reader = open_run(path)
        return reader, reader.follower()
    except (RunFileError, OSError) as exc:
        errors.append(error_text(exc))
        return None


def error_text(exc: BaseException) -> str:
    """A read error in one line: the run folder and the problem (no traceback)."""
    if isinstance(exc, RunFileError):
        where = exc.path.parent.name if exc.path.suffix else exc.path.name
        return f"{where}: {exc.problem}"
    return " ".join(str(exc).split())
