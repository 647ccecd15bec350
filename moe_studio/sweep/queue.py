"""A sweep's queue, persisted in its folder so it is visible, cancellable from another
process, and resumable after a crash.

    <runs folder>/sweep-<time>-<name>/
        sweep.json      the queue: grid, and per run its state, values and run folder
        base.toml       the config every run starts from
        configs/NNN.toml  each run's full config
        logs/NNN.log    each run's stderr
        sweep.lock      held (flock) while the queue file is read-modified-written
        runner.lock     held by the process running the sweep, for as long as it runs

The runs themselves are ordinary runs in the runs folder beside the sweep folder (the
app lists them), each tagged with its sweep in the run meta key ``sweep``. A sweep
folder holds no ``config.toml``, so run lists skip it. Paths in ``sweep.json`` are
relative to the sweep folder, so a sweep folder and its runs can be moved together.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..config.inputs import os_problem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one runner per sweep is the user's promise
    fcntl = None

QUEUE_NAME = "sweep.json"
BASE_NAME = "base.toml"
LOCK_NAME = "sweep.lock"
RUNNER_LOCK = "runner.lock"
FORMAT = "moe-studio-sweep-1"
STATES = ("pending", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")


class SweepError(ValueError):
    """A sweep folder that cannot be used; the message names it and the problem."""


@dataclass
class Entry:
    """One run of the sweep. ``run``: its run folder relative to the sweep folder once
    it exists; ``cancel``: a cancel asked for while it runs."""
    index: int
    label: str
    values: dict[str, Any]
    config_file: str
    state: str = "pending"
    run: str | None = None
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    cancel: bool = False


@dataclass
class SweepQueue:
    dir: Path
    name: str
    created: float
    keys: list[str]                 # the swept keys, in grid order (train.seed last)
    runs_dir: str                   # relative to the sweep folder
    parallel: int = 1
    cancel: bool = False            # the whole sweep: no new run starts, running ones stop
    entries: list[Entry] = field(default_factory=list)

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, sweep_dir: str | Path) -> "SweepQueue":
        d = Path(sweep_dir)
        p = d / QUEUE_NAME
        if not d.is_dir():
            raise SweepError(f"{d}: sweep folder not found")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SweepError(f"{d}: not a sweep folder (no {QUEUE_NAME})") from None
        except (OSError, ValueError) as e:
            raise SweepError(f"{p}: cannot read the sweep queue ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SweepError(f"{p}: not a MoE Studio sweep queue")
        try:
            entries = [Entry(**e) for e in data["entries"]]
            return cls(d, str(data["name"]), float(data["created"]), list(data["keys"]),
                       str(data["runs_dir"]), int(data.get("parallel", 1)),
                       bool(data.get("cancel", False)), entries)
        except (KeyError, TypeError, ValueError) as e:
            raise SweepError(f"{p}: damaged sweep queue ({type(e).__name__}: {e})") from None

    def save(self) -> None:
        data = {"format": FORMAT, "name": self.name, "created": self.created, "keys": self.keys,
                "runs_dir": self.runs_dir, "parallel": self.parallel, "cancel": self.cancel,
                "entries": [asdict(e) for e in self.entries]}
        p = self.dir / QUEUE_NAME
        tmp = p.with_name(p.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, p)
        except OSError as e:  # the queue as it was stays whole: it is replaced, not rewritten
            raise SweepError(f"{p}: cannot save the sweep queue ({os_problem(e)})") from None

    # ------------------------------------------------------------------ questions
    def path_of(self, rel: str) -> Path:
        return (self.dir / rel).resolve()

    def runs_path(self) -> Path:
        return self.path_of(self.runs_dir)

    def run_path(self, e: Entry) -> Path | None:
        return None if e.run is None else self.path_of(e.run)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for e in self.entries:
            out[e.state] = out.get(e.state, 0) + 1
        return out

    @property
    def finished(self) -> bool:
        return all(e.state in FINAL for e in self.entries)

    def run_paths(self, states: tuple[str, ...] = ("done",)) -> list[Path]:
        """The run folders of the entries in ``states`` that exist, in grid order."""
        out = []
        for e in self.entries:
            p = self.run_path(e)
            if e.state in states and p is not None and p.is_dir():
                out.append(p)
        return out

    def group_key(self) -> str | None:
        """The swept key Compare groups by: the first one that is not the seed (the
        seeds of a group then make its band)."""
        keys = [k for k in self.keys if k != "train.seed"] or self.keys
        return keys[0] if keys else None

    def describe(self) -> str:
        c = self.counts()
        parts = [f"{c[s]} {s}" for s in STATES if c[s]]
        return f"sweep {self.name}: {len(self.entries)} runs ({', '.join(parts)})"


@contextmanager
def _flock(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SweepError(f"{path.parent}: cannot change the sweep: {os_problem(e)} "
                         f"(opening {path.name})") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)   # releases the lock


@contextmanager
def editing(sweep_dir: str | Path) -> Iterator[SweepQueue]:
    """Read, change and write the queue with no other process doing the same between."""
    d = Path(sweep_dir)
    if not (d / QUEUE_NAME).exists():
        SweepQueue.load(d)   # raises the one-line reason
    with _flock(d / LOCK_NAME):
        q = SweepQueue.load(d)
        yield q
        q.save()


def cancel(sweep_dir: str | Path, indices: list[int] | None = None) -> SweepQueue:
    """Cancel the whole sweep (``indices`` None) or some of its runs: pending ones are
    cancelled at once, running ones are stopped by the runner (checkpointed, so
    ``--resume`` continues them)."""
    with editing(sweep_dir) as q:
        if indices is None:
            q.cancel = True
        wanted = set(range(len(q.entries)) if indices is None else indices)
        bad = sorted(i for i in wanted if not 0 <= i < len(q.entries))
        if bad:
            raise SweepError(f"{q.dir}: no run number {bad[0]} in this sweep "
                             f"(0-{len(q.entries) - 1})")
        for e in q.entries:
            if e.index in wanted:
                if e.state == "pending":
                    e.state, e.ended = "cancelled", time.time()
                elif e.state == "running":
                    e.cancel = True
    return q


@contextmanager
def runner_lock(sweep_dir: Path) -> Iterator[None]:
    """Held by the one process running the sweep; SweepError while another holds it."""
    SweepQueue.load(sweep_dir)  # a folder that is no sweep is said so, and gets no lock file
    path = Path(sweep_dir) / RUNNER_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SweepError(f"{sweep_dir}: cannot run the sweep: {os_problem(e)} "
                         f"(opening {RUNNER_LOCK})") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                raise SweepError(f"{sweep_dir}: the sweep is being run by process {holder}; "
                                 "cancel it or wait for it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)   # releases the lock (the kernel does it too if the process dies)


def runner_alive(sweep_dir: str | Path) -> bool:
    """True while a process runs this sweep (its runner.lock is held)."""
    path = Path(sweep_dir) / RUNNER_LOCK
    if fcntl is None or not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
