"""The training loop behind the GUI's Train button, free of Qt.

Both engine modes of :mod:`moe_studio.gui.run.worker` run :func:`train_loop`: in a worker
thread of the app, or in a child process, ``python -m moe_studio.engine.loop``
(:func:`child_main`). This module imports neither Qt nor (until a trainer is built)
torch, so the GUI process may import it and the child starts with only what training
needs.

The child's protocol, one JSON document per line:

- stdin, app -> engine: first ``{"config": to_dict(cfg), "runs_dir": str, "threads":
  int | null}`` (an inspection: ``"inspect": InspectOptions.to_dict()`` instead of
  ``"config"``), then commands ``"pause"``, ``"resume"``, ``"stop"``, ``{"weights":
  path}`` (write the current weights there, between steps). Only ``"stop"`` is a
  user's stop (the run ends *stopped*). End of input without it means the app went
  away (crashed, killed): the step finishes, a checkpoint is saved, and the run is
  left as a killed headless run leaves it, reading *interrupted*.
- stdout, engine -> app: ``[kind, [args...]]`` for every ``emit`` below, progress as a
  dict, and last ``["done", [status]]``. Anything the engine prints goes to stderr.

The loop reports through ``emit(kind, *args)``:

- ``("ready", facts)``: the run exists; facts = dict(run_dir, run_id, device,
  total_steps, step)
- ``("state", "running" | "paused")``
- ``("progress", info)``: a StepInfo-like object, at most every
  :data:`PROGRESS_MIN_INTERVAL_S` (the step it paused at and the last step always)
- ``("failed", message, traceback)``
- ``("weights", path, step, error)``: the answer to a weights request (step -1 and a
  one-line error when they could not be written)

and returns the final status (finished, stopped, failed, or interrupted when the
control says the app is gone). It checks a control object
(``between_steps(on_pause, on_resume, on_weights) -> bool``; ``app_gone``) between steps.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable

from .progress import ProgressInfo  # noqa: F401 - the GUI's view of a step (re-exported)

PROGRESS_MIN_INTERVAL_S = 0.05  # at most 20 progress reports per second
_INFO_FIELDS = ("step", "total_steps", "loss", "lr", "tokens_per_s", "eta_s", "val_loss")

Emit = Callable[..., None]


def info_to_dict(info: Any) -> dict[str, Any]:
    return {k: getattr(info, k, None) for k in _INFO_FIELDS}


def gui_engine_threads() -> int | None:
    """How many threads torch's intra-op pool should use while the app is open: one
    core fewer than this process may run on, so the GUI thread always has a core to
    itself (on a 2-core machine: 1). None when the user chose already
    (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set): then torch's own setting stands."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def apply_engine_threads(n: int | None) -> None:
    """Cap torch's intra-op threads at ``n`` (never raise them above torch's default)."""
    if not n:
        return
    import torch
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    from ..config import ConfigError
    if isinstance(exc, ConfigError) and text:
        return text  # already a sentence that names the field
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class ThreadControl:
    """Pause / stop flags and weight requests shared by the GUI thread (writes) and the
    worker (reads)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stop = False
        self._weight_requests: list[str] = []
        # Set with the stop when nobody asked for it: the app went away mid-run.
        self.app_gone = False

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

    def request_weights(self, path: str) -> None:
        """Ask the engine to write its current weights to ``path`` between steps (also
        while paused); it answers with a ``("weights", ...)`` report."""
        with self._cond:
            self._weight_requests.append(str(path))
            self._cond.notify_all()

    def lose_app(self) -> None:
        """The app is gone (its pipe closed without a stop command): stop, and end the
        run as interrupted rather than as a stop the user chose."""
        with self._cond:
            if not self._stop:
                self.app_gone = True
            self._stop = True
            self._cond.notify_all()

    @property
    def stop_requested(self) -> bool:
        with self._cond:
            return self._stop

    def _take_requests(self) -> list[str]:
        with self._cond:
            reqs, self._weight_requests = self._weight_requests, []
        return reqs

    def between_steps(self, on_pause: Callable[[], None], on_resume: Callable[[], None],
                      on_weights: Callable[[str], None] | None = None) -> bool:
        """Called by the worker between steps: serves weight requests (``on_weights``),
        blocks while paused. False = stop now."""
        serve = on_weights or (lambda _p: None)
        for p in self._take_requests():
            serve(p)
        with self._cond:
            if self._stop:
                return False
            if not self._paused:
                return True
        on_pause()
        while True:
            with self._cond:
                while self._paused and not self._stop and not self._weight_requests:
                    self._cond.wait()
                stopped, paused = self._stop, self._paused
            for p in self._take_requests():
                serve(p)
            if stopped or not paused:
                break
        if not stopped:
            on_resume()
        return not stopped

    def close(self) -> None:
        pass


def train_loop(make_trainer: Callable[[], Any], control: Any, emit: Emit) -> str:
    """Build a trainer and step it until done or stopped; returns the final status.
    Any engine error ends the run (marked failed, traceback kept), never the caller."""
    trainer = None
    status = "failed"
    unsent = None
    try:
        trainer = make_trainer()
        emit("ready", {
            "run_dir": str(trainer.run_dir), "run_id": str(trainer.run_id),
            "device": str(trainer.device), "total_steps": int(trainer.total_steps),
            "step": int(trainer.step_count)})
        emit("state", "running")
        last_emit = 0.0

        def paused() -> None:
            nonlocal unsent
            if unsent is not None:  # show exactly where it paused
                emit("progress", unsent)
                unsent = None
            getattr(trainer, "pause", lambda: None)()   # ranks in other processes wait too
            emit("state", "paused")

        def resumed() -> None:
            getattr(trainer, "resume", lambda: None)()
            emit("state", "running")

        def hand_weights(path: str) -> None:
            # The live weights for routing custom text: a failure is the request's, not
            # the run's.
            from .weights import save_weights
            try:
                save_weights(trainer.models, path, trainer.step_count)
                emit("weights", path, int(trainer.step_count), "")
            except Exception as exc:  # noqa: BLE001 - reported to the asker
                emit("weights", path, -1, describe(exc))

        while not trainer.done:
            if not control.between_steps(paused, resumed, hand_weights):
                break
            info = trainer.step()
            now = time.monotonic()
            if now - last_emit >= PROGRESS_MIN_INTERVAL_S:
                emit("progress", info)
                last_emit, unsent = now, None
            else:
                unsent = info
        if unsent is not None:
            emit("progress", unsent)
            unsent = None
        if not trainer.done and getattr(control, "app_gone", False):
            # Keep the work (a checkpoint to continue from) but not the word "stopped":
            # nobody stopped it. The stored status stays 'running' and this process
            # exits, so readers see a writer that is gone: interrupted, exactly as a
            # killed `moe-studio train` reads.
            if trainer.step_count > 0 and hasattr(trainer, "save_checkpoint"):
                trainer.save_checkpoint()   # an inspection has nothing to continue from
            return "interrupted"
        status = "finished" if trainer.done else "stopped"
        trainer.close(status)
    except Exception as exc:  # noqa: BLE001 - any engine error ends this run, never the app
        status = "failed"
        tb = traceback.format_exc()
        if trainer is None:
            message = f"The run could not start: {describe(exc)}"
        else:
            if unsent is not None:  # the app shows the last completed step, as said here
                emit("progress", unsent)
            done_steps = getattr(trainer, "step_count", None)
            where = (f"in step {done_steps + 1:,} (after {done_steps:,} completed)"
                     if isinstance(done_steps, int) else "")
            message = f"Training failed {where}: {describe(exc)}".replace("  ", " ")
            try:
                trainer.close("failed", error=tb)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                tb += "\nWhile marking the run failed, another error:\n" + traceback.format_exc()
        emit("failed", message, tb)
    return status


def _read_commands(stream, control: ThreadControl) -> None:
    """The child's command reader (a daemon thread): lines from the app -> control."""
    try:
        for line in stream:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if cmd == "pause":
                control.pause()
            elif cmd == "resume":
                control.resume()
            elif cmd == "stop":
                control.stop()
            elif isinstance(cmd, dict) and isinstance(cmd.get("weights"), str):
                control.request_weights(cmd["weights"])
    except (OSError, ValueError):
        pass
    control.lose_app()  # end of input with no "stop" before it: the app has gone


def _stop_on_sigterm(control: ThreadControl) -> None:
    """SIGTERM straight to the engine (systemd or a scheduler ending the whole group)
    stops the run as ``moe-studio train`` does: after the step, checkpoint, *stopped*;
    a second one exits at once and the run reads interrupted."""
    import signal

    seen = []   # this process's own signals: the app's "stop" may have come first

    def on_term(signum, _frame):
        if seen:
            os._exit(128 + signum)
        seen.append(signum)
        control.stop()

    try:
        signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # not the main thread (tests call child_main directly)
        pass


def child_main(stdin=None, stdout=None) -> int:
    """Entry point of the engine process (``python -m moe_studio.engine.loop``)."""
    import signal
    # Ctrl+C in the terminal reaches the whole process group: the app decides what a
    # stop means (it asks, then sends "stop"); the engine must not die mid-step.
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        pass
    if stdout is None:
        # Keep the event channel for events only: whatever the engine (or a library)
        # prints goes to stderr.
        stdout = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr
    stdin = sys.stdin if stdin is None else stdin
    first = stdin.readline()
    if not first:
        return 2
    job = json.loads(first)
    control = ThreadControl()
    lock = threading.Lock()

    def emit(kind: str, *args: Any) -> None:
        if kind == "progress":
            args = (info_to_dict(args[0]),)
        try:
            with lock:
                stdout.write(json.dumps([kind, list(args)]) + "\n")
                stdout.flush()
        except (OSError, ValueError):  # the app is gone: finish the step, save, go
            control.lose_app()

    def make():
        apply_engine_threads(job.get("threads"))
        if "resume" in job:    # Continue: a run from its newest checkpoint
            from .resume import ResumeRequest, resume_trainer
            return resume_trainer(ResumeRequest.from_dict(job["resume"]))
        if "inspect" in job:   # File > Inspect a checkpoint: steps like a trainer
            from .inspection import InspectOptions
            from .inspection.inspector import Inspector
            return Inspector(InspectOptions.from_dict(job["inspect"]), job["runs_dir"])
        from ..config import from_dict, validate
        cfg = validate(from_dict(job["config"]))
        if cfg.parallel.processes > 1:   # local ranks, started by torch's launcher
            from .parallel.app_run import LaunchedRun
            return LaunchedRun(cfg, job["runs_dir"])
        from .trainer import Trainer
        return Trainer(cfg, job["runs_dir"])

    _stop_on_sigterm(control)
    threading.Thread(target=_read_commands, args=(stdin, control), daemon=True,
                     name="moe-studio-commands").start()
    status = train_loop(make, control, emit)
    emit("done", status)
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
