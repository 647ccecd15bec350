"""FollowTimer: poll a store at a fixed rate while a view wants it and is visible (the
Qt-free rest of following a run: ``polling.py``).

A dashboard's ``start_follow()`` / ``stop_follow()`` say whether it should follow its
runs; while the widget is hidden (another tab, a minimised window) polling pauses, and
on show the view catches up at once and polling resumes. The timer is a child of the
widget, so closing or deleting the widget never leaves it running.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget

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
