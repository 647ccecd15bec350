"""The one way the GUI runs work off its thread: ``BackgroundTask``, one plain function at
a time in its own QThread, with cooperative cancel.

The function must not touch Qt widgets. Its return value arrives with ``succeeded``, an
exception with ``failed`` (message, traceback); ``finished`` follows either. Started with
``cancellable=True`` the function gets ``cancel=``, a :class:`CancelToken` it checks
between pieces of work (``cancel.check()`` raises :class:`Cancelled`, or it reads
``cancel.cancelled`` and returns early); ``cancel()`` sets the token, and the run ends
with ``cancelled`` instead of a result (then ``finished``). Nothing is interrupted from
outside: a function that never looks is waited for, as Orange's ``TaskState`` and
superqt's workers do it.

Every task (and training controller, :mod:`.worker`) is registered weakly, so that tests
and the app can check that no thread outlives its window (:func:`running_controllers`).
"""
from __future__ import annotations

import threading
import traceback
import weakref
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QThread, Signal, Slot

from ...engine.loop import describe

# Every controller and background task ever made (weakly).
_controllers: "weakref.WeakSet[QObject]" = weakref.WeakSet()


def register(obj: QObject) -> None:
    """Count ``obj`` (anything with a ``busy`` property) among the running controllers."""
    _controllers.add(obj)


def running_controllers() -> list[QObject]:
    """Training controllers and background tasks whose thread has not been joined yet."""
    return [c for c in list(_controllers) if c.busy]


class Cancelled(Exception):
    """Raised inside a task by ``CancelToken.check()`` once cancel was requested."""


class CancelToken:
    """A cancel request shared between the GUI thread (``cancel``) and a task (``check``)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


# (worker, thread) pairs whose thread outlived a join timeout: kept referenced (a QThread
# destroyed while it runs aborts the process) until a later release_worker finds it done.
_lingering: list[tuple[QObject | None, QThread]] = []


def release_worker(worker: QObject | None, thread: QThread | None) -> None:
    """Free a worker QObject and its QThread from the GUI thread once the thread has
    ended. The worker still belongs to its (finished) thread, where deleteLater() would
    never run; with the thread gone nothing else can touch it, so it is deleted here.
    Should a join have timed out, both stay referenced and are freed by a later call
    once the thread has really ended."""
    for pair in [p for p in _lingering if p[1].isFinished()]:
        _lingering.remove(pair)
        release_worker(*pair)
    if thread is not None and not thread.isFinished():
        _lingering.append((worker, thread))
        return
    if worker is not None:
        shiboken6.delete(worker)
    if thread is not None:
        thread.deleteLater()


class _CallWorker(QObject):
    done = Signal(int, str, object, str, str)  # gen, outcome, result, message, traceback

    def __init__(self, gen: int, fn: Callable[..., Any], args: tuple, kwargs: dict):
        super().__init__()
        self._gen, self._fn, self._args, self._kwargs = gen, fn, args, kwargs

    @Slot()
    def run(self) -> None:
        outcome, result, message, tb = "failed", None, "", ""
        try:
            result = self._fn(*self._args, **self._kwargs)
            outcome = "ok"
        except Cancelled:
            outcome = "cancelled"
        except Exception as exc:  # noqa: BLE001  any error of the task goes to its failed signal
            message, tb = describe(exc), traceback.format_exc()
        finally:
            # No moveToThread() back to the GUI thread here: PySide keeps the GIL through
            # that call while Qt takes its signal-slot locks (a deadlock seen once in CI).
            # The worker is freed by the GUI thread after the join (release_worker).
            self.done.emit(self._gen, outcome, result, message, tb)


class BackgroundTask(QObject):
    """Runs one function at a time in its own QThread (see the module docstring)."""

    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, parent: QObject | None = None, name: str = "task"):
        super().__init__(parent)
        self._name = name
        self._gen = 0
        self._thread: QThread | None = None
        self._worker: _CallWorker | None = None
        self._token: CancelToken | None = None
        register(self)

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, fn: Callable[..., Any], *args: Any, cancellable: bool = False,
              **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` off the GUI thread; with ``cancellable`` it also
        gets ``cancel=`` (a :class:`CancelToken`)."""
        if self.busy:
            raise RuntimeError(f"{self._name} is already running")
        self._gen += 1
        self._token = CancelToken()
        if cancellable:
            kwargs["cancel"] = self._token
        worker = _CallWorker(self._gen, fn, args, kwargs)
        thread = QThread()
        thread.setObjectName(f"moe-studio-{self._name}-{self._gen}")
        worker.moveToThread(thread)
        worker.done.connect(self._on_done)
        thread.started.connect(worker.run)
        self._worker, self._thread = worker, thread
        thread.start()

    def cancel(self) -> None:
        """Ask the running function to stop (it must check its token); returns at once.
        Its result, should it still return one, is dropped: ``cancelled`` follows."""
        if self._token is not None:
            self._token.cancel()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the running function has returned (its signals still arrive
        through the event loop); True when none is running."""
        thread = self._thread
        return thread is None or thread.wait(int(timeout_ms))

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel the running function and wait for it (at most ``timeout_ms``); True
        when none is left. No signal follows."""
        if not self.busy:
            return True
        self.cancel()
        thread = self._thread
        assert thread is not None
        thread.quit()
        if not thread.wait(int(timeout_ms)):
            return False
        self._wrap_up()
        return True

    @Slot(int, str, object, str, str)
    def _on_done(self, gen: int, outcome: str, result: Any, message: str, tb: str) -> None:
        if gen != self._gen or not self.busy:
            return
        thread, token = self._thread, self._token
        assert thread is not None
        thread.quit()
        thread.wait(5000)  # run() has returned: this join is immediate
        self._wrap_up()
        if outcome == "cancelled" or (token is not None and token.cancelled):
            self.cancelled.emit()
        elif outcome == "ok":
            self.succeeded.emit(result)
        else:
            self.failed.emit(message, tb)
        self.finished.emit()

    def _wrap_up(self) -> None:
        thread, worker = self._thread, self._worker
        self._thread = self._worker = self._token = None
        self._gen += 1
        release_worker(worker, thread)
