"""Following a run without Qt: ``FramePacer`` (redraw only as often as keeps drawing to a
share of the GUI thread) and ``poll_guarded`` / ``open_guarded`` / ``error_text`` (a read
error becomes one line, never a crash). ``follow_timer.FollowTimer`` drives them in the
views; the views' Qt-free readers (``views/*_data.py``) can use them too.
"""
from __future__ import annotations

import time
from typing import Any

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
