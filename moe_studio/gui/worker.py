"""The one bridge between Qt and the engine.

``TrainingController`` lives in the GUI thread. ``start()`` makes a ``QThread`` and a
worker object moved to it; the worker builds the ``Trainer`` inside that thread (model
construction and the torch import are heavy), then calls ``trainer.step()`` in a loop and
checks pause/stop between steps. Everything it tells the GUI crosses threads as queued
signals with small payloads (a ``StepInfo``, a state name, an error text); metric data
never does: views read it from the run store.
"""
from __future__ import annotations

import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from ..config import ExperimentConfig, copy_config

STATES = ("idle", "starting", "running", "paused", "stopping", "finished", "stopped", "failed")
TERMINAL = ("finished", "stopped", "failed")
PROGRESS_MIN_INTERVAL_S = 0.05  # at most 20 progress signals per second

TrainerFactory = Callable[[ExperimentConfig, Path], Any]

# Every controller and background task ever made (weakly): lets tests and the app check
# that no thread outlives its window.
_controllers: "weakref.WeakSet[QObject]" = weakref.WeakSet()


def running_controllers() -> list[QObject]:
    """Training controllers and background tasks whose thread has not been joined yet."""
    return [c for c in list(_controllers) if c.busy]


def _engine_trainer(config: ExperimentConfig, runs_dir: Path):
    # Imported here, in the worker thread, so that the GUI starts without loading torch.
    from ..engine.trainer import Trainer
    return Trainer(config, runs_dir)


class _Control:
    """Pause / stop flags shared by the GUI thread (writes) and the worker (reads)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stop = False

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    @property
    def stop_requested(self) -> bool:
        with self._cond:
            return self._stop

    def between_steps(self, on_pause: Callable[[], None], on_resume: Callable[[], None]) -> bool:
        """Called by the worker between steps: blocks while paused. False = stop now."""
        with self._cond:
            if self._stop:
                return False
            if not self._paused:
                return True
        on_pause()
        with self._cond:
            while self._paused and not self._stop:
                self._cond.wait()
            stopped = self._stop
        if not stopped:
            on_resume()
        return not stopped


class _Worker(QObject):
    """Runs one training run in its thread. Every signal carries the run's generation
    number so the controller can ignore a late signal from a run it already wrapped up."""

    ready = Signal(int, object)      # run facts: dict(run_dir, run_id, device, total_steps, step)
    progress = Signal(int, object)   # StepInfo
    state = Signal(int, str)
    failed = Signal(int, str, str)   # message, traceback
    done = Signal(int, str)          # final status

    def __init__(self, gen: int, factory: TrainerFactory, config: ExperimentConfig,
                 runs_dir: Path, control: _Control):
        super().__init__()
        self._gen, self._factory, self._config = gen, factory, config
        self._runs_dir, self._control = runs_dir, control
        self.final_status = "failed"  # read by the controller after the thread is joined

    @Slot()
    def run(self) -> None:
        gen, ctl = self._gen, self._control
        trainer = None
        status = "failed"
        try:
            trainer = self._factory(self._config, self._runs_dir)
            self.ready.emit(gen, {
                "run_dir": str(trainer.run_dir), "run_id": str(trainer.run_id),
                "device": str(trainer.device), "total_steps": int(trainer.total_steps),
                "step": int(trainer.step_count)})
            self.state.emit(gen, "running")
            last_emit = 0.0
            unsent = None

            def paused() -> None:
                nonlocal unsent
                if unsent is not None:  # show exactly where it paused
                    self.progress.emit(gen, unsent)
                    unsent = None
                self.state.emit(gen, "paused")

            def resumed() -> None:
                self.state.emit(gen, "running")

            while not trainer.done:
                if not ctl.between_steps(paused, resumed):
                    break
                info = trainer.step()
                now = time.monotonic()
                if now - last_emit >= PROGRESS_MIN_INTERVAL_S:
                    self.progress.emit(gen, info)
                    last_emit, unsent = now, None
                else:
                    unsent = info
            if unsent is not None:
                self.progress.emit(gen, unsent)
            status = "finished" if trainer.done else "stopped"
            trainer.close(status)
        except Exception as exc:  # any engine error ends this run, never the app
            status = "failed"
            tb = traceback.format_exc()
            if trainer is None:
                message = f"The run could not start: {_describe(exc)}"
            else:
                done_steps = getattr(trainer, "step_count", None)
                where = f"in step {done_steps + 1}" if isinstance(done_steps, int) else ""
                message = f"Training failed {where}: {_describe(exc)}".replace("  ", " ")
                try:
                    trainer.close("failed", error=tb)
                except Exception:
                    tb += "\nWhile marking the run failed, another error:\n" + traceback.format_exc()
            self.failed.emit(gen, message, tb)
        finally:
            self.final_status = status
            # Back to the GUI thread, so deleteLater() works once this thread has ended.
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.done.emit(gen, status)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    from ..config import ConfigError
    if isinstance(exc, ConfigError) and text:
        return text  # already a sentence that names the field
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class TrainingController(QObject):
    """Starts, pauses, resumes and stops one training run at a time, off the GUI thread.

    States: idle → starting → running ⇄ paused → stopping → finished | stopped | failed.
    A terminal state (finished, stopped, failed) is idle again: ``start()`` may be called.
    """

    started = Signal(str)          # run folder, once the Trainer has created it
    progress = Signal(object)      # StepInfo, at most ~20 per second
    stateChanged = Signal(str)
    failed = Signal(str, str)      # readable message, traceback
    finished = Signal(str)         # final status: finished | stopped | failed

    def __init__(self, parent: QObject | None = None, trainer_factory: TrainerFactory | None = None):
        super().__init__(parent)
        self._factory = trainer_factory or _engine_trainer
        self._state = "idle"
        self._gen = 0
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._control: _Control | None = None
        self.run_dir: str = ""
        self.run_id: str = ""
        self.device: str = ""
        self.total_steps: int = 0
        self.last_info: Any = None
        _controllers.add(self)

    # ---------------------------------------------------------------- state
    @property
    def state(self) -> str:
        return self._state

    @property
    def busy(self) -> bool:
        """True from ``start()`` until the worker thread has been joined."""
        return self._thread is not None

    @property
    def paused(self) -> bool:
        return self._state == "paused"

    def _set_state(self, s: str) -> None:
        if s != self._state:
            self._state = s
            self.stateChanged.emit(s)

    # ---------------------------------------------------------------- commands
    def start(self, config: ExperimentConfig, runs_dir: str | Path) -> None:
        """Start a run of ``config`` under ``runs_dir``. Returns at once; the Trainer
        is built in the worker thread (``started`` fires when its run folder exists)."""
        if self.busy:
            raise RuntimeError("a run is already in progress; stop it first")
        self._gen += 1
        gen = self._gen
        self.run_dir = self.run_id = self.device = ""
        self.total_steps = int(getattr(getattr(config, "train", None), "steps", 0) or 0)
        self.last_info = None
        self._control = _Control()
        # A copy: edits in the form after Train must not reach the running engine.
        worker = _Worker(gen, self._factory, copy_config(config), Path(runs_dir), self._control)
        thread = QThread()
        thread.setObjectName(f"moe-studio-training-{gen}")
        worker.moveToThread(thread)
        worker.ready.connect(self._on_ready)
        worker.progress.connect(self._on_progress)
        worker.state.connect(self._on_state)
        worker.failed.connect(self._on_failed)
        worker.done.connect(self._on_done)
        thread.started.connect(worker.run)
        self._worker, self._thread = worker, thread
        self._set_state("starting")
        thread.start()

    def pause(self) -> None:
        """Pause after the current step (``stateChanged('paused')`` once it has)."""
        if self.busy and self._state in ("starting", "running") and self._control:
            self._control.pause()

    def resume(self) -> None:
        if self.busy and self._control:
            self._control.resume()

    def toggle_pause(self) -> None:
        if self._state == "paused":
            self.resume()
        else:
            self.pause()

    def stop(self) -> None:
        """Stop after the current step; the trainer saves a checkpoint and the run is
        marked 'stopped'. Returns at once; ``finished('stopped')`` follows."""
        if self.busy and self._control and self._state not in ("stopping",):
            self._control.stop()
            self._set_state("stopping")

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Stop and wait for the worker thread (at most ``timeout_ms``). True when no
        thread is left running. For closing windows and tests; blocks the caller."""
        if not self.busy:
            return True
        self.stop()
        thread, worker = self._thread, self._worker
        assert thread is not None and worker is not None
        thread.quit()
        if not thread.wait(int(timeout_ms)):
            return False
        self._wrap_up(worker.final_status)
        return True

    # ---------------------------------------------------------------- worker signals
    @Slot(int, object)
    def _on_ready(self, gen: int, facts: dict) -> None:
        if gen != self._gen or not self.busy:
            return
        self.run_dir, self.run_id = facts["run_dir"], facts["run_id"]
        self.device, self.total_steps = facts["device"], facts["total_steps"]
        self.started.emit(self.run_dir)

    @Slot(int, object)
    def _on_progress(self, gen: int, info: Any) -> None:
        if gen != self._gen or not self.busy:
            return
        self.last_info = info
        self.progress.emit(info)

    @Slot(int, str)
    def _on_state(self, gen: int, state: str) -> None:
        if gen != self._gen or not self.busy:
            return
        if self._state == "stopping":  # a stop already requested wins over running/paused
            return
        self._set_state(state)

    @Slot(int, str, str)
    def _on_failed(self, gen: int, message: str, tb: str) -> None:
        if gen != self._gen or not self.busy:
            return
        self.failed.emit(message, tb)

    @Slot(int, str)
    def _on_done(self, gen: int, status: str) -> None:
        if gen != self._gen or not self.busy:
            return
        thread = self._thread
        assert thread is not None
        thread.quit()
        # The worker emitted 'done' as the last thing its run() does, so this join
        # takes microseconds; it guarantees the thread is gone before 'finished'.
        thread.wait(5000)
        self._wrap_up(status)

    def _wrap_up(self, status: str) -> None:
        thread, worker = self._thread, self._worker
        self._thread = self._worker = self._control = None
        self._gen += 1  # anything still queued from that run is now stale
        if worker is not None:
            worker.deleteLater()
        if thread is not None:
            if thread.isFinished():
                thread.deleteLater()
            else:  # only if a join timed out: delete it once it really ends
                thread.finished.connect(thread.deleteLater)
        self._set_state(status)
        self.finished.emit(status)


# ---------------------------------------------------------------------------------------
# Store work that may take a while (export): one plain function at a time, off the GUI
# thread, result or error delivered by queued signal.

class _CallWorker(QObject):
    done = Signal(int, bool, object, str, str)  # gen, ok, result, message, traceback

    def __init__(self, gen: int, fn: Callable[..., Any], args: tuple, kwargs: dict):
        super().__init__()
        self._gen, self._fn, self._args, self._kwargs = gen, fn, args, kwargs

    @Slot()
    def run(self) -> None:
        ok, result, message, tb = False, None, "", ""
        try:
            result = self._fn(*self._args, **self._kwargs)
            ok = True
        except Exception as exc:
            message, tb = _describe(exc), traceback.format_exc()
        finally:
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.done.emit(self._gen, ok, result, message, tb)


class BackgroundTask(QObject):
    """Runs one function at a time in its own QThread. The function must not touch Qt
    widgets; its return value arrives with ``succeeded``, an exception with ``failed``
    (message, traceback); ``finished`` follows either. It cannot be cancelled, only
    waited for (``shutdown``)."""

    succeeded = Signal(object)
    failed = Signal(str, str)
    finished = Signal()

    def __init__(self, parent: QObject | None = None, name: str = "task"):
        super().__init__(parent)
        self._name = name
        self._gen = 0
        self._thread: QThread | None = None
        self._worker: _CallWorker | None = None
        _controllers.add(self)

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.busy:
            raise RuntimeError(f"{self._name} is already running")
        self._gen += 1
        worker = _CallWorker(self._gen, fn, args, kwargs)
        thread = QThread()
        thread.setObjectName(f"moe-studio-{self._name}-{self._gen}")
        worker.moveToThread(thread)
        worker.done.connect(self._on_done)
        thread.started.connect(worker.run)
        self._worker, self._thread = worker, thread
        thread.start()

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Wait for the running function (at most ``timeout_ms``); True when none is left."""
        if not self.busy:
            return True
        thread = self._thread
        assert thread is not None
        thread.quit()
        if not thread.wait(int(timeout_ms)):
            return False
        self._wrap_up()
        return True

    @Slot(int, bool, object, str, str)
    def _on_done(self, gen: int, ok: bool, result: Any, message: str, tb: str) -> None:
        if gen != self._gen or not self.busy:
            return
        thread = self._thread
        assert thread is not None
        thread.quit()
        thread.wait(5000)  # run() has returned: this join is immediate
        self._wrap_up()
        if ok:
            self.succeeded.emit(result)
        else:
            self.failed.emit(message, tb)
        self.finished.emit()

    def _wrap_up(self) -> None:
        thread, worker = self._thread, self._worker
        self._thread = self._worker = None
        self._gen += 1
        if worker is not None:
            worker.deleteLater()
        if thread is not None:
            if thread.isFinished():
                thread.deleteLater()
            else:
                thread.finished.connect(thread.deleteLater)
