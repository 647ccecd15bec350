"""The one bridge between Qt and the engine.

``TrainingController`` lives in the GUI thread and runs one training run at a time in
one of two engine modes, behind the same API and signals:

- ``"process"`` (the app's default): a supervising ``QThread`` starts the engine as
  ``python -m moe_studio.engine.loop`` and talks JSON lines with it: the job and
  then pause / resume / stop go down its stdin, progress (<= 20 small dicts a second)
  and state come back on its stdout and are re-emitted as the same queued signals.
  Metric data never crosses: the dashboards read the run store, which the child writes
  exactly as ``moe-studio train`` does. Stop is an explicit ``"stop"`` line; if the
  app goes away instead (crash, ``kill -9``), the child's stdin closes without one: it
  finishes the step, saves a checkpoint and leaves the run reading *interrupted*, as a
  killed headless run does, never *stopped*, which means a person stopped it. If the child
  dies (a crash, the OOM killer), the run fails with a message and the app goes on;
  the store shows the run as interrupted. (A subprocess rather than
  ``multiprocessing``: spawn re-imports the caller's ``__main__``, which breaks any
  script that builds the app without an ``if __name__ == "__main__"`` guard.)
- ``"thread"``: a worker object in a ``QThread`` builds the ``Trainer`` and steps it
  in that thread. Used when a ``trainer_factory`` is given (the tests drive fake
  engines this way), in a frozen app (no ``python -m``), or on request
  (``mode="thread"``, ``moe-studio-gui --engine thread``, ``MOE_STUDIO_ENGINE=thread``).

Why a process by default -- measured with ``moe-studio bench gui`` (offscreen window
1400 x 900, default experiment, on a 2-core machine that other work kept at a load
average of 4-5): with the dashboard *not* following, the engine alone costs the GUI
thread the same in both modes (stall p99 7-9 ms, max 21-38 ms, also with a tiny model
doing 30 steps/s, where the GIL is busiest: ``sys.getswitchinterval()`` is 5 ms and
the engine's torch kernels release the GIL). With the dashboard following, both modes
stall alike (p99 ~60 ms, max 170-290 ms): that is the dashboard's painting, which no
engine mode changes. What decides: the moment Train is pressed, a thread imports torch
and builds the model while holding the GIL (a 470 ms freeze measured; 180-260 ms in
process mode, which is the GUI's own work of opening the new run); the app's memory
(256 MB in process mode, 710 MB with torch loaded into it), so the memory budget
measures the views, not torch; and a crashing or runaway engine cannot take the
window (and its unsaved setup) with it. The cost: ~1-3 s to start Python and torch
per run, which a thread pays once per session instead.

Threads: training inside the app caps torch's intra-op threads at one fewer than the
cores this process may use (``gui_engine_threads``; 1 on a 2-core machine), so the GUI
thread always has a core; an explicit ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` wins.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QProcess, QThread, Signal, Slot

from ...config import ExperimentConfig, copy_config, to_dict
from ...engine.inspection.options import InspectOptions
from ...engine.resume import ResumeRequest
from .tasks import register, release_worker, running_controllers
from ...engine.loop import (PROGRESS_MIN_INTERVAL_S, ProgressInfo, ThreadControl, apply_engine_threads,
                           describe, gui_engine_threads, train_loop)

STATES = ("idle", "starting", "running", "paused", "stopping", "finished", "stopped", "failed")
TERMINAL = ("finished", "stopped", "failed")
MODES = ("process", "thread")
KILL_WAIT_MS = 10_000   # for the supervising thread once its engine process is killed
DEFAULT_MODE = "process"
__all__ = ["TrainingController", "running_controllers", "default_mode",
           "PROGRESS_MIN_INTERVAL_S", "STATES", "TERMINAL", "MODES"]

TrainerFactory = Callable[[ExperimentConfig, Path], Any]

def default_mode() -> str:
    """``$MOE_STUDIO_ENGINE`` ("process" or "thread") if set; else "thread" in a frozen
    app (there is no ``python -m`` to start), else :data:`DEFAULT_MODE`."""
    env = os.environ.get("MOE_STUDIO_ENGINE", "").strip().lower()
    if env in MODES:
        return env
    return "thread" if getattr(sys, "frozen", False) else DEFAULT_MODE


def _engine_trainer(config: ExperimentConfig, runs_dir: Path):
    # Imported here, in the worker thread, so that the GUI starts without loading torch.
    if isinstance(config, ResumeRequest):    # Continue: a run from its newest checkpoint
        from ...engine.resume import resume_trainer
        return resume_trainer(config)
    if isinstance(config, InspectOptions):   # an inspection steps like a trainer
        from ...engine.inspection.inspector import Inspector
        return Inspector(config, runs_dir)
    from ...engine.trainer import Trainer
    return Trainer(config, runs_dir)


class _PipeCommands:
    """The app's side of the engine process's stdin: the same calls as ThreadControl.
    Only the GUI thread sends; a command to a process that has gone is dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream = None
        self._pending: list[str | dict] = []   # commands given before the process existed
        self._stop = False

    def attach(self, stream) -> None:
        """Called by the supervisor once the process runs (its stdin, job line sent)."""
        with self._lock:
            self._stream = stream
            pending, self._pending = self._pending, []
            for cmd in pending:
                self._write(cmd)

    def _write(self, cmd: str | dict) -> None:
        try:
            self._stream.write(json.dumps(cmd) + "\n")
            self._stream.flush()
        except (OSError, ValueError, AttributeError):  # the child has already gone
            pass

    def _send(self, cmd: str | dict) -> None:
        with self._lock:
            if self._stream is None:
                self._pending.append(cmd)
            else:
                self._write(cmd)

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._stop = True
        self._send("stop")

    def request_weights(self, path: str) -> None:
        self._send({"weights": str(path)})

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def child_command(module: str) -> tuple[list[str], dict[str, str]]:
    """How to start ``python -m module`` as an engine process, and its environment (this
    checkout importable even where the package is not installed)."""
    root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                  else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return [sys.executable, "-m", module], env


def engine_qprocess(parent: QObject, name: str) -> QProcess:
    """A QProcess (not started) with an engine process's environment, for a short job the
    window waits on without blocking: a memory estimate, sampled text."""
    _cmd, env = child_command("moe_studio")
    proc = QProcess(parent)
    proc.setObjectName(name)
    penv = proc.processEnvironment()
    for k, v in env.items():
        penv.insert(k, v)
    proc.setProcessEnvironment(penv)
    return proc


def _child_command() -> tuple[list[str], dict[str, str]]:
    """The training engine process."""
    return child_command("moe_studio.engine.loop")


class _Worker(QObject):
    """Runs one training run in its thread. Every signal carries the run's generation
    number so the controller can ignore a late signal from a run it already wrapped up."""

    ready = Signal(int, object)      # run facts: dict(run_dir, run_id, device, total_steps, step)
    progress = Signal(int, object)   # StepInfo (thread) or ProgressInfo (process)
    state = Signal(int, str)
    failed = Signal(int, str, str)   # message, traceback
    weights = Signal(int, str, int, str)  # path, step (-1: not written), error
    done = Signal(int, str)          # final status

    def __init__(self, gen: int, factory: TrainerFactory, config: ExperimentConfig,
                 runs_dir: Path, control: Any):
        super().__init__()
        self._gen, self._factory, self._config = gen, factory, config
        self._runs_dir, self._control = runs_dir, control
        self.final_status = "failed"  # read by the controller after the thread is joined
        self.pid: int | None = None   # the engine's process (process mode)
        self.proc: subprocess.Popen | None = None

    def _emit(self, kind: str, *args: Any) -> None:
        getattr(self, kind).emit(self._gen, *args)

    def _train(self) -> str:
        threads = gui_engine_threads() if self._factory is _engine_trainer else None

        def make():
            apply_engine_threads(threads)
            return self._factory(self._config, self._runs_dir)

        return train_loop(make, self._control, self._emit)

    @Slot()
    def run(self) -> None:
        status = "failed"
        try:
            status = self._train()
        except Exception as exc:  # noqa: BLE001  a bug in the supervision itself: still end cleanly
            self.failed.emit(self._gen, f"Training failed: {describe(exc)}",
                             traceback.format_exc())
        finally:
            # No moveToThread() back to the GUI thread here: PySide keeps the GIL through
            # that call while Qt takes its signal-slot locks, and a GUI thread destroying
            # a Python-wrapped object holds such a lock while it waits for the GIL: a
            # deadlock (seen once in CI). The worker is freed by the GUI thread after the
            # join (``release_worker``).
            self.final_status = status
            self.done.emit(self._gen, status)


class _ProcessWorker(_Worker):
    """Supervises the engine process from its QThread: starts it, turns the lines it
    writes into the same signals a thread worker emits, and reaps it."""

    def __init__(self, gen: int, config: ExperimentConfig, runs_dir: Path,
                 commands: _PipeCommands):
        super().__init__(gen, _engine_trainer, config, runs_dir, commands)

    def _train(self) -> str:
        cmd, env = _child_command()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, encoding="utf-8", bufsize=1)
        self.proc, self.pid = proc, proc.pid
        final: str | None = None
        try:
            assert proc.stdin is not None and proc.stdout is not None
            job = {"runs_dir": str(self._runs_dir), "threads": gui_engine_threads()}
            if isinstance(self._config, ResumeRequest):
                job["resume"] = self._config.to_dict()
            elif isinstance(self._config, InspectOptions):
                job["inspect"] = self._config.to_dict()
            else:
                job["config"] = to_dict(self._config)
            try:
                proc.stdin.write(json.dumps(job) + "\n")
                proc.stdin.flush()
            except OSError:
                pass  # it died at once: reported below
            self._control.attach(proc.stdin)
            for line in proc.stdout:   # blocks without the GIL; ends when the child does
                try:
                    kind, args = json.loads(line)
                except ValueError:
                    continue
                if kind == "done":
                    final = str(args[0])
                    break
                if kind == "progress":
                    self._emit("progress", ProgressInfo(**args[0]))
                elif kind in ("ready", "state", "failed", "weights"):
                    self._emit(kind, *args)
        finally:
            self._control.close()       # the child's stdin: EOF means stop, if still running
            try:
                proc.wait(30 if final is not None else 10)
            except subprocess.TimeoutExpired:  # said done but hangs, or lost its pipe
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        if final is None:
            code = proc.returncode
            how = (f"was killed by signal {-code}" if code is not None and code < 0
                   else f"exited with code {code}")
            self._emit("failed", f"The training process ended unexpectedly: it {how}. "
                                 "What it recorded so far is kept.", "")
            final = "failed"
        return final


class TrainingController(QObject):
    """Starts, pauses, resumes and stops one training run at a time, off the GUI thread.

    States: idle → starting → running ⇄ paused → stopping → finished | stopped | failed.
    A terminal state (finished, stopped, failed) is idle again: ``start()`` may be called.

    ``mode``: "process" or "thread" (see the module docstring); default
    :func:`default_mode`, and always "thread" with a ``trainer_factory``.
    """

    started = Signal(str)          # run folder, once the Trainer has created it
    progress = Signal(object)      # StepInfo / ProgressInfo, at most ~20 per second
    stateChanged = Signal(str)
    failed = Signal(str, str)      # readable message, traceback
    finished = Signal(str)         # final status: finished | stopped | failed
    weightsReady = Signal(str, int, str)  # path, step (-1 = none written), one-line error

    def __init__(self, parent: QObject | None = None, trainer_factory: TrainerFactory | None = None,
                 mode: str | None = None):
        super().__init__(parent)
        if mode is not None and mode not in MODES:
            raise ValueError(f"engine mode must be one of {', '.join(MODES)}; got {mode!r}")
        if trainer_factory is not None:
            if mode == "process":
                raise ValueError("a trainer_factory runs in thread mode only")
            mode = "thread"
        self.mode: str = mode or default_mode()
        self._factory = trainer_factory or _engine_trainer
        self._state = "idle"
        self._gen = 0
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._control: Any = None
        self.run_dir: str = ""
        self.run_id: str = ""
        self.device: str = ""
        self.total_steps: int = 0
        self.last_info: Any = None
        self._weights_dir: tempfile.TemporaryDirectory | None = None
        self._weight_requests: set[str] = set()
        self._n_weights = 0
        register(self)

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

    @property
    def engine_pid(self) -> int | None:
        """The engine's process id while a run is in progress in process mode, else None."""
        w = self._worker
        return w.pid if w is not None else None

    def _set_state(self, s: str) -> None:
        if s != self._state:
            self._state = s
            self.stateChanged.emit(s)

    # ---------------------------------------------------------------- commands
    def start(self, config: ExperimentConfig, runs_dir: str | Path) -> None:
        """Start a run of ``config`` (or an inspection: ``InspectOptions``) under
        ``runs_dir``. Returns at once; the Trainer is built in the worker thread
        (``started`` fires when its run folder exists)."""
        if self.busy:
            raise RuntimeError("a run is already in progress; stop it first")
        self._gen += 1
        gen = self._gen
        self.run_dir = self.run_id = self.device = ""
        self.total_steps = int(getattr(getattr(config, "train", None), "steps", 0) or 0)
        self.last_info = None
        # A copy: edits in the form after Train must not reach the running engine.
        if not isinstance(config, ResumeRequest):   # frozen: nothing to copy
            config = (InspectOptions.from_dict(config.to_dict()) if isinstance(config, InspectOptions)
                      else copy_config(config))
        if self.mode == "process":
            self._control = _PipeCommands()
            worker: _Worker = _ProcessWorker(gen, config, Path(runs_dir), self._control)
        else:
            self._control = ThreadControl()
            worker = _Worker(gen, self._factory, config, Path(runs_dir), self._control)
        thread = QThread()
        thread.setObjectName(f"moe-studio-training-{gen}")
        worker.moveToThread(thread)
        worker.ready.connect(self._on_ready)
        worker.progress.connect(self._on_progress)
        worker.state.connect(self._on_state)
        worker.failed.connect(self._on_failed)
        worker.weights.connect(self._on_weights)
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

    def request_weights(self) -> str | None:
        """Ask the running engine for its current weights (between steps, also while
        paused), written as safetensors to a file of this controller's temporary folder
        (never into the run). Returns that path, or None when no run is in progress;
        ``weightsReady(path, step, error)`` answers it."""
        if not self.busy or self._control is None or self._state in ("stopping",):
            return None
        if self._weights_dir is None:
            self._weights_dir = tempfile.TemporaryDirectory(prefix="moe-studio-weights-")
        self._n_weights += 1
        path = str(Path(self._weights_dir.name) / f"live-{self._n_weights}.safetensors")
        self._weight_requests.add(path)
        self._control.request_weights(path)
        return path

    def discard_weights(self) -> None:
        """Delete the live-weight files handed over so far (the app is closing)."""
        if self._weights_dir is not None:
            self._weights_dir.cleanup()
            self._weights_dir = None

    def terminate(self) -> bool:
        """Kill the engine process now: the last step of a shutdown whose stop request
        was not honoured in time. Its supervising thread then ends as for any crash
        (``failed``; the store marks the run interrupted). True when there was a process
        to kill; a thread-mode engine cannot be killed and must be waited for."""
        proc = getattr(self._worker, "proc", None)
        if proc is None or proc.poll() is not None:
            return False
        proc.kill()
        return True

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Stop and wait for the worker thread (at most ``timeout_ms``); an engine process
        still running then is killed, so that a timed-out shutdown never leaves one
        behind. True when no thread is left running. For closing windows and tests;
        blocks the caller."""
        if not self.busy:
            return True
        self.stop()
        thread, worker = self._thread, self._worker
        assert thread is not None and worker is not None
        thread.quit()
        if not thread.wait(int(timeout_ms)):
            if not (self.terminate() and thread.wait(KILL_WAIT_MS)):
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

    @Slot(int, str, int, str)
    def _on_weights(self, gen: int, path: str, step: int, error: str) -> None:
        if gen != self._gen or path not in self._weight_requests:
            return
        self._weight_requests.discard(path)
        self.weightsReady.emit(path, step, error)

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
        thread, worker, control = self._thread, self._worker, self._control
        self._thread = self._worker = self._control = None
        if control is not None:
            control.close()
        self._gen += 1  # anything still queued from that run is now stale
        release_worker(worker, thread)
        unanswered, self._weight_requests = self._weight_requests, set()
        for path in sorted(unanswered):
            self.weightsReady.emit(path, -1, "the run ended before it could hand over its "
                                             "weights: route through its final checkpoint")
        self._set_state(status)
        self.finished.emit(status)
