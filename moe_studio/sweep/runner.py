"""Running a sweep's queue: each run is a ``moe-studio train`` process (at most
``parallel`` at a time); progress goes to stderr; the queue file says where things are
after every change, so a crash loses nothing and ``--resume`` goes on from there.

A run's process gets SIGHUP when the runner dies (Linux: PR_SET_PDEATHSIG), and a
``train`` that gets SIGHUP stops after its step with a checkpoint: after a crash the
unfinished runs are continued from their checkpoints, the finished ones are not redone.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import ExperimentConfig, save
from ..store.writer import slugify
from .grid import SweepPoint
from .queue import BASE_NAME, Entry, SweepQueue, editing, runner_lock

_RUN_LINE = re.compile(r"^run (\S+) -> (.+)$")
_STEP_LINE = re.compile(r"step\s+(\d+)/(\d+)")
RECOVER_WAIT_S = 60.0    # how long a crashed runner's run may take to finish stopping


def create_sweep(base: ExperimentConfig, keys: list[str], points: list[SweepPoint],
                 runs_dir: str | Path, *, parallel: int = 1, name: str | None = None) -> SweepQueue:
    """Make ``<runs_dir>/sweep-<time>-<name>/`` with the queue and every run's config."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    name = name or base.name
    stem = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{slugify(name)}"
    # Built under a hidden name and renamed into place: whoever finds the folder finds
    # its queue file in it.
    tmp = runs_dir / f".{stem}-{os.getpid()}.tmp"
    tmp.mkdir()
    d = tmp
    (d / "configs").mkdir()
    (d / "logs").mkdir()
    save(base, d / BASE_NAME)
    entries = []
    for p in points:
        p.config.name = f"{name} {p.label()}"
        rel = f"configs/{p.index:03d}.toml"
        save(p.config, d / rel)
        entries.append(Entry(p.index, p.label(), dict(p.values), rel))
    q = SweepQueue(d, name, time.time(), list(keys), "..", max(1, int(parallel)), False, entries)
    q.save()
    for i in range(1, 1000):
        final = runs_dir / (stem if i == 1 else f"{stem}-{i}")
        try:
            final.mkdir()   # claims the name; the rename below replaces the empty folder
        except FileExistsError:
            continue
        os.replace(tmp, final)
        q.dir = final
        return q
    raise FileExistsError(f"{runs_dir}: no free name for {stem}")


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes
        # SIGHUP: `train` stops on it with a checkpoint and ignores repeats (the kernel
        # sends it again at each re-parenting while the runner's threads die)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGHUP)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_env(parallel: int) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if parallel > 1 and not env.get("OMP_NUM_THREADS"):
        # runs side by side share the cores instead of each taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen
    started: float
    run_dir: str | None = None
    step: tuple[int, int] | None = None
    term_sent: bool = False
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:   # a daemon thread per child: its stdout
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            m = _RUN_LINE.match(line)
            if m and self.run_dir is None:
                self.run_dir = m.group(2)
            m = _STEP_LINE.search(line)
            if m:
                self.step = (int(m.group(1)), int(m.group(2)))


def _step_text(ch: _Child) -> str:
    """``"120/400"``: from the run's store where it exists (its progress lines come only
    every few seconds), else from the last progress line."""
    from ..store import RunFileError, open_run

    if ch.run_dir:
        try:
            with open_run(ch.run_dir) as r:
                return f"{max(0, r.last_step())}/{int(r.config['train']['steps'])}"
        except (RunFileError, KeyError, TypeError, ValueError):
            pass
    return f"{ch.step[0]}/{ch.step[1]}" if ch.step else "starting"


class SweepRunner:
    """Runs one sweep folder's queue to its end (or until cancelled / stopped)."""

    def __init__(self, sweep_dir: str | Path, *, parallel: int | None = None,
                 log: Callable[[str], None] = _say, poll_s: float = 0.5,
                 progress_every_s: float = 10.0):
        self.dir = Path(sweep_dir)
        self.parallel = parallel
        self.log = log
        self.poll_s = poll_s
        self.progress_every_s = progress_every_s
        self.children: dict[int, _Child] = {}
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ main loop
    def run(self, resume: bool = False) -> int:
        """0 when every run finished, 1 when some failed or were cancelled, 128 + n
        when a signal stopped the sweep (then ``--resume`` goes on)."""
        with runner_lock(self.dir):
            old = self._catch_signals()
            try:
                return self._run(resume)
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    def _run(self, resume: bool) -> int:
        with editing(self.dir) as q:
            if self.parallel:
                q.parallel = max(1, int(self.parallel))
            if resume:
                q.cancel = False
                self._recover(q)
        self.log(f"{q.describe()}; {q.parallel} at a time · queue {self.dir / 'sweep.json'}")
        last_progress = time.monotonic()
        while True:
            q = SweepQueue.load(self.dir)
            self._send_cancels(q)
            self._reap()
            q = SweepQueue.load(self.dir)
            if not q.cancel and self._stop_signal is None:
                for e in q.entries:
                    if len(self.children) >= q.parallel:
                        break
                    if e.state == "pending" and e.index not in self.children:
                        self._start(q, e)
            self._note_run_dirs()
            if not self.children and (q.cancel or self._stop_signal is not None
                                      or all(e.state != "pending" for e in q.entries)):
                break
            now = time.monotonic()
            if now - last_progress >= self.progress_every_s:
                last_progress = now
                self.log(self._progress(SweepQueue.load(self.dir)))
            time.sleep(self.poll_s)
        q = SweepQueue.load(self.dir)
        self.log(f"{q.describe()}" + (f" · continue with: moe-studio sweep --resume {self.dir}"
                                      if not q.finished or self._stop_signal else ""))
        if self._stop_signal is not None:
            return 128 + self._stop_signal
        return 0 if all(e.state == "done" for e in q.entries) else 1

    # ------------------------------------------------------------------ children
    def _start(self, q: SweepQueue, e: Entry) -> None:
        run = q.run_path(e)
        cmd = [sys.executable, "-m", "moe_studio", "train"]
        if run is not None and run.is_dir():
            cmd += ["--resume", str(run)]
            how = f"continuing {run.name}"
        else:
            tag = {"id": self.dir.name, "name": q.name, "index": e.index, "keys": q.keys,
                   "values": e.values}
            cmd += [str(self.dir / e.config_file), "--out", str(q.runs_path()),
                    "--sweep-tag", json.dumps(tag)]
            how = "starting"
        log = open(self.dir / "logs" / f"{e.index:03d}.log", "a", encoding="utf-8")
        try:
            # Its own session: Ctrl+C in the terminal reaches the runner alone, which then
            # stops each run with one SIGTERM (a second signal would make a run exit
            # without its checkpoint).
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=log, text=True, env=_child_env(q.parallel),
                                    start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        finally:
            log.close()
        child = _Child(e.index, proc, time.time())
        threading.Thread(target=child.read, daemon=True, name=f"sweep-run-{e.index}").start()
        self.children[e.index] = child
        with editing(self.dir) as q2:
            x = q2.entries[e.index]
            x.state, x.started, x.ended, x.error, x.cancel = "running", time.time(), None, None, False
        self.log(f"sweep: run {e.index + 1}/{len(q.entries)} [{e.label}] {how}")

    def _note_run_dirs(self) -> None:
        new = {i: c.run_dir for i, c in self.children.items() if c.run_dir}
        if not new:
            return
        with editing(self.dir) as q:
            for i, d in new.items():
                rel = os.path.relpath(d, q.dir)
                if q.entries[i].run != rel:
                    q.entries[i].run = rel

    def _send_cancels(self, q: SweepQueue) -> None:
        for i, c in self.children.items():
            if (q.cancel or q.entries[i].cancel or self._stop_signal is not None) and not c.term_sent:
                c.term_sent = True
                try:
                    c.proc.send_signal(signal.SIGTERM)   # the run stops after its step, saved
                except ProcessLookupError:
                    pass

    def _reap(self) -> None:
        for i, c in list(self.children.items()):
            code = c.proc.poll()
            if code is None:
                continue
            del self.children[i]
            self._note_run_dirs_of(i, c)
            with editing(self.dir) as q:
                e = q.entries[i]
                e.ended = time.time()
                if code == 0:
                    e.state = "done"
                elif c.term_sent and self._stop_signal is not None and not (q.cancel or e.cancel):
                    e.state = "pending"     # the runner was stopped: resumable, not cancelled
                elif c.term_sent:
                    e.state, e.error = "cancelled", None
                else:
                    e.state, e.error = "failed", self._last_error(i, code)
                e.cancel = False
                state, label, n = e.state, e.label, len(q.entries)
            took = time.time() - c.started
            self.log(f"sweep: run {i + 1}/{n} [{label}] {state} after {took:.0f} s"
                     + (f": {e.error}" if state == "failed" else ""))

    def _note_run_dirs_of(self, i: int, c: _Child) -> None:
        # the reader thread may still be reading the last lines
        t_end = time.monotonic() + 2.0
        while c.run_dir is None and c.proc.stdout is not None and not c.proc.stdout.closed \
                and time.monotonic() < t_end and c.proc.returncode == 0:
            time.sleep(0.05)
        if c.run_dir:
            with editing(self.dir) as q:
                q.entries[i].run = os.path.relpath(c.run_dir, q.dir)

    def _last_error(self, i: int, code: int) -> str:
        try:
            lines = (self.dir / "logs" / f"{i:03d}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        last = lines[-1].strip() if lines else ""
        return last[:300] or f"moe-studio train exited with code {code}"

    # ------------------------------------------------------------------ recovery
    def _recover(self, q: SweepQueue) -> None:
        """After a crash (or a cancel): runs marked running are gone or stopping; wait
        for their runs to be closed, then queue them again (continued from their
        checkpoint when they have one). Failed and cancelled runs are queued again."""
        from ..engine.resume import newest_checkpoint
        from ..store import RunFileError, open_run

        for e in q.entries:
            e.cancel = False
            if e.state in ("failed", "cancelled"):
                e.state, e.error = "pending", None
            if e.state not in ("running", "pending"):
                continue
            run = q.run_path(e)
            status = None
            t_end = time.monotonic() + RECOVER_WAIT_S
            while run is not None and run.is_dir():
                try:
                    with open_run(run) as r:
                        status = r.status
                except RunFileError:
                    status = None
                if status != "running" or time.monotonic() > t_end:
                    break
                time.sleep(0.25)
            if status == "finished":
                e.state, e.ended = "done", e.ended or time.time()
            else:
                e.state = "pending"
                if run is not None and (status is None or newest_checkpoint(run) is None):
                    e.run = None    # nothing to continue from: that run starts over
        done = sum(e.state == "done" for e in q.entries)
        self.log(f"sweep: resuming {q.name}: {done} of {len(q.entries)} runs already finished")

    # ------------------------------------------------------------------ progress
    def _progress(self, q: SweepQueue) -> str:
        c = q.counts()
        parts = []
        for i, ch in sorted(self.children.items()):
            parts.append(f"[{q.entries[i].label}] {_step_text(ch)}")
        took = [e.ended - e.started for e in q.entries
                if e.state == "done" and e.ended and e.started]
        eta = ""
        left = c["pending"] + c["running"]
        if took and left:
            secs = sum(took) / len(took) * left / max(1, q.parallel)
            eta = f" · ETA ~{secs / 60:.0f} min" if secs >= 90 else f" · ETA ~{secs:.0f} s"
        return (f"sweep {q.name}: {c['done']}/{len(q.entries)} done, {c['running']} running, "
                f"{c['pending']} pending" + (f", {c['failed']} failed" if c["failed"] else "")
                + eta + (" · " + "; ".join(parts) if parts else ""))

    def _catch_signals(self) -> dict:
        old = {}

        def handle(signum, frame) -> None:
            if self._stop_signal is not None:
                return
            self._stop_signal = signum
            _say(f"\nsweep: {signal.Signals(signum).name}: stopping the runs after their "
                 "current step (each saves a checkpoint); continue with --resume")
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, handle)
            except ValueError:   # not the main thread
                break
        return old

