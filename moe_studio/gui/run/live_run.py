"""The one source of a live run's state and rate, for every place that shows them.

The store knows what a run recorded; only the controller knows that the app's own run
is paused this moment, or being stopped, and how fast its steps come now. Without one
place for that, the status bar (the controller's progress), the dashboards' status
lines and the runs panel (the store) said different things: "running" with a live
tok/s while paused, two different rates, an ETA jumping 52 -> 15 -> 22 -> 6 min.

``LiveRun`` follows a ``TrainingController`` and holds its run's state, step, rate and
ETA; every view asks :func:`live_status` for a run folder and shows what it says when
that is the live run, the store's status otherwise. :class:`RateMeter` (no Qt) is the
rate: steps over wall time, the last minutes weighted most, evaluation pauses included,
so the ETA is what the clock will show, steady from the first second on.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

TAU_S = 120.0       # the rate forgets older steps with this time constant
MIN_SPAN_S = 1.0    # ... and is shown once the reports span at least this long
# Members trained one after another: a step trains one model (engine.ensemble.SEQUENTIAL).
_SEQUENTIAL = ("snapshot", "boosting")
# Controller states during which a run is in progress, as a run status in views.
LIVE_STATES = ("starting", "running", "paused", "stopping")


class RateMeter:
    """Steps per second from ``(time_s, step)`` reports: the steps over the wall time
    between reports, each interval weighted by ``exp(-age / tau_s)``. Evaluation pauses
    count (they are part of what the clock will show), but one of them moves the rate
    only by its share of ~``tau_s`` seconds, never the whole estimate at once.

    A pause is not slowness: ``pause()`` drops the interval across it, so the rate
    after a resume goes on from where it was."""

    def __init__(self, tau_s: float = TAU_S, min_span_s: float = MIN_SPAN_S):
        self.tau_s, self.min_span_s = float(tau_s), float(min_span_s)
        self.reset()

    def reset(self) -> None:
        self._last: tuple[float, int] | None = None
        self._steps = 0.0     # weighted steps
        self._time = 0.0      # weighted seconds
        self._span = 0.0      # seconds measured (unweighted)

    def pause(self) -> None:
        self._last = None

    def add(self, t: float, step: int) -> None:
        t, step = float(t), int(step)
        if self._last is not None:
            t0, s0 = self._last
            if step <= s0 or t <= t0:
                return
            dt = t - t0
            decay = math.exp(-dt / self.tau_s)
            self._steps = self._steps * decay + (step - s0)
            self._time = self._time * decay + dt
            self._span += dt
        self._last = (t, step)

    @property
    def steps_per_s(self) -> float | None:
        if self._span < self.min_span_s or self._time <= 0:
            return None
        return self._steps / self._time

    def eta_s(self, step: int, total: int) -> float | None:
        """Seconds to ``total`` at the measured rate; None until there is one."""
        rate = self.steps_per_s
        if rate is None or rate <= 0:
            return None
        return max(0, total - step) / rate


def tokens_per_step(config: Any) -> int:
    """Tokens one optimizer step trains on, all members together."""
    d, ens = config.data, config.ensemble
    models = 1 if ens.method in _SEQUENTIAL else max(1, int(ens.members))
    return int(d.batch_size) * int(d.context) * models


@dataclass(frozen=True)
class LiveStatus:
    """What every view shows for the live run."""
    status: str                 # starting | running | paused | stopping
    step: int                   # steps completed (0 before the first)
    total_steps: int
    tokens_per_s: float | None  # None while paused or not measured yet
    eta_s: float | None


class LiveRun(QObject):
    """Follows a controller: the live run's state, step, rate and ETA. ``changed`` fires
    on every state change and on progress (at most as often as the controller's)."""

    changed = Signal()

    def __init__(self, controller: QObject, parent: QObject | None = None):
        super().__init__(parent)
        self._ctl = controller
        self.meter = RateMeter()
        self._tokens_per_step = 0
        self.step = 0
        self.total_steps = 0
        self.last_run_dir = ""       # also after the run ended (the status bar's run)
        controller.stateChanged.connect(self._on_state)
        controller.progress.connect(self._on_progress)
        controller.started.connect(self._on_started)
        _registry.append(weakref.ref(self))

    def begin(self, config: Any) -> None:
        """A run of ``config`` is about to start: forget the last one."""
        self.meter.reset()
        self._tokens_per_step = tokens_per_step(config)
        self.step, self.total_steps = 0, int(config.train.steps)
        self.last_run_dir = ""

    @property
    def state(self) -> str:
        return self._ctl.state

    def status(self) -> LiveStatus | None:
        """The live run's status, or None when no run is in progress."""
        st = self._ctl.state
        if not self._ctl.busy or st not in LIVE_STATES:
            return None
        running = st == "running"
        sps = self.meter.steps_per_s if running else None
        return LiveStatus(st, self.step, self.total_steps,
                          sps * self._tokens_per_step if sps is not None else None,
                          self.meter.eta_s(self.step, self.total_steps) if running else None)

    def run_dir(self) -> str:
        return str(getattr(self._ctl, "run_dir", "") or "")

    def _on_started(self, run_dir: str) -> None:
        self.last_run_dir = run_dir
        self.total_steps = int(getattr(self._ctl, "total_steps", 0) or self.total_steps)
        self.changed.emit()

    def _on_state(self, state: str) -> None:
        if state != "running":
            self.meter.pause()
        self.changed.emit()
        hub().changed.emit(self.run_dir() or self.last_run_dir)

    def _on_progress(self, info: Any) -> None:
        import time
        self.step = int(info.step)
        self.total_steps = int(getattr(info, "total_steps", 0) or self.total_steps)
        if self._ctl.state == "running":
            self.meter.add(time.monotonic(), self.step)
        self.changed.emit()


class _Hub(QObject):
    """Tells views that a live run's state changed (a paused run writes nothing, so a
    view polling the store would not notice)."""
    changed = Signal(str)   # the run folder


_registry: list[weakref.ref] = []
_hub: _Hub | None = None


def hub() -> _Hub:
    global _hub
    if _hub is None:
        _hub = _Hub()
    return _hub


def live_status(path: str | Path | None) -> LiveStatus | None:
    """The live status of the run at ``path`` if an app's controller is training it
    now, else None (then the store's status is the truth)."""
    if not path:
        return None
    want = str(Path(path))
    for ref in list(_registry):
        lr = ref()
        if lr is None:
            _registry.remove(ref)
            continue
        try:
            rd = lr.run_dir()
            if rd and str(Path(rd)) == want:
                return lr.status()
        except RuntimeError:   # its window (and controller) have been deleted
            _registry.remove(ref)
    return None
