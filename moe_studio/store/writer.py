"""RunWriter: the one writer of a run database, used by the trainer.

Records are buffered in memory and committed in one transaction by a small background
thread every :data:`COMMIT_INTERVAL_S` seconds (and by :meth:`RunWriter.flush`), so a
crash loses at most the last ~0.5 s of records and the trainer never waits on disk
I/O. ``add_*`` only copies its arguments into Python lists under a lock; encoding,
compression and SQLite work happen at commit time.

I/O errors meet one path: :meth:`RunWriter._commit` puts the records of a failed
commit back in front of the newer ones, :func:`_transient` decides whether the error is
worth retrying, and the background thread retries with a growing pause for up to
:data:`RETRY_WINDOW_S` (a full disk someone is cleaning, a locked file). An error that
outlasts the window is persistent: the next ``add_*`` call raises, and
:meth:`RunWriter.close` records the failure in the run if the disk allows (first
everything, then the status and error alone), else in a side file
``run.sqlite-failed.json`` that readers pick up (see :func:`schema.read_failure_note`).
What was committed before stays committed.

A live run has exactly one writer: ``writer.lock`` in the run folder holds an exclusive
``flock`` for as long as the writer is open, and the kernel drops it when the process
ends, however it ends.

Two locks keep that cheap and safe: ``_lock`` guards the in-memory buffers and is held
only for appends and for swapping the buffers out; ``_db_lock`` guards the SQLite
connection, so a commit in progress never blocks a caller of ``add_*``.
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import platform
import re
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import codec
from .errors import RunFileError
from .liveness import HOST
from .schema import (APPLICATION_ID, CONFIG_NAME, DB_NAME, DDL, END_STATUSES, LOCK_NAME, PAGE_SIZE,
                     RUNNING, SCHEMA_VERSION, failure_note_path)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writer is the caller's promise
    fcntl = None

COMMIT_INTERVAL_S = 0.4   # a record waits at most this long (plus one commit) to be on disk
HEARTBEAT_INTERVAL_S = 1.0  # an idle writer still commits a heartbeat this often
RETRY_WINDOW_S = 20.0     # how long a failing commit is retried before the run is given up


def slugify(name: str) -> str:
    """A file-name-safe lower-case slug of ``name`` (at most 40 characters, never empty).
    A longer one loses its middle, not its end: the runs of a sweep are named
    ``"<sweep> top_k=2 aux_loss_coef=0.01"`` and differ in the values at the end (cut at
    40, that one read ``...aux_loss_coef-0.0``)."""
    s = re.sub(r"[^a-z0-9._-]+", "-", str(name).lower()).strip("-._")
    if len(s) > 40:
        s = s[:13].rstrip("-._") + "-" + s[-26:].lstrip("-._")
    return s or "run"


def new_run_id(name: str, when: float | None = None) -> str:
    """``"YYYYmmdd-HHMMSS-<name-slug>"`` in local time (``when``: epoch seconds, default now).
    :meth:`RunWriter.create` appends ``-2``, ``-3``, ... if the folder already exists."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}-{slugify(name)}"


class _Pending:
    """Records added since the last commit."""

    __slots__ = ("names", "steps", "members", "name_ids", "values", "walls", "tensors",
                 "histograms", "snapshots", "events", "meta")

    def __init__(self) -> None:
        self.names: list[tuple[int, str]] = []      # names first used since the last commit
        # scalars, as five parallel lists (one entry per value)
        self.steps: list[int] = []
        self.members: list[int] = []
        self.name_ids: list[int] = []
        self.values: list[float] = []
        self.walls: list[float] = []
        self.tensors: list[tuple] = []      # (step, member, name_id, array)
        self.histograms: list[tuple] = []   # (step, member, name_id, edges f8 [B+1], counts [B])
        self.snapshots: list[tuple] = []    # (step, member, name_id, {name: array}, meta JSON)
        self.events: list[tuple] = []       # (step, member, kind, message, data JSON, wall time)
        self.meta: dict[str, str] = {}      # key -> JSON

    def __bool__(self) -> bool:
        return bool(self.names or self.steps or self.tensors or self.histograms
                    or self.snapshots or self.events or self.meta)

    def put_back(self, older: "_Pending") -> None:
        """Records of a commit that failed go back in front of the ones added since."""
        for k in self.__slots__:
            if k == "meta":
                self.meta = {**older.meta, **self.meta}
            else:
                setattr(self, k, getattr(older, k) + getattr(self, k))


class RunWriter:
    """Writes one run. Make one with :meth:`create`; end it with :meth:`close`.

    Thread-safe: ``add_*`` may be called from any thread (the trainer's worker thread,
    typically). Also a context manager: leaving the block closes the run as
    ``finished``, as ``stopped`` on KeyboardInterrupt, or as ``failed`` (with the
    traceback as error text) on any other exception.
    """

    def __init__(self, run_dir: Path, run_id: str, name: str, *,
                 commit_interval: float = COMMIT_INTERVAL_S):
        """Open the writer of an already initialised run folder (use :meth:`create`)."""
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.name = name
        self.db_path = self.run_dir / DB_NAME
        self._interval = float(commit_interval)
        self._lock_fd = _take_writer_lock(self.run_dir)
        failure_note_path(self.db_path).unlink(missing_ok=True)  # an earlier attempt's
        try:
            con = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        except BaseException:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            raise
        # WAL + synchronous=NORMAL: a commit is a write into the WAL without fsync. It
        # survives the process being killed (the OS holds the data); only an OS crash or
        # power loss can drop the last commits, and the database stays consistent.
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute("PRAGMA busy_timeout = 5000")
        con.execute("PRAGMA journal_mode = WAL")
        self._con = con
        self._ids: dict[str, int] = {n: i for i, n in con.execute("SELECT id, name FROM names")}
        self._next_id = max(self._ids.values(), default=0) + 1
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._closed = False
        self._error: BaseException | None = None
        self._failing_since: float | None = None  # monotonic time of the first failed commit
        self.failure: str | None = None  # set when the end of the run could not be stored
        self._last_commit = time.monotonic()
        self._stop = threading.Event()
        # An open writer means a running run; the row names this process as its writer
        # (it may differ from the creator's, e.g. when a run is resumed).
        con.execute("UPDATE run SET status = ?, ended = NULL, error = NULL, pid = ?, host = ?, "
                    "heartbeat = ? WHERE id = 1", (RUNNING, os.getpid(), HOST, time.time()))
        self._thread = threading.Thread(target=self._flush_loop, name=f"run-writer {run_id}",
                                        daemon=True)
        self._thread.start()
        # A process that exits without close() still commits what it buffered; the run
        # then reads as interrupted (its status stays 'running' and its pid is gone).
        atexit.register(self._flush_at_exit)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, runs_dir: str | Path, *, name: str, config: Mapping[str, Any],
               config_toml: str, meta: Mapping[str, Any] | None = None,
               commit_interval: float = COMMIT_INTERVAL_S) -> "RunWriter":
        """Make ``<runs_dir>/<run-id>/`` with ``run.sqlite`` (status ``running``) and
        ``config.toml``, and return its writer.

        ``config`` is the experiment config as nested dicts (``config.to_dict``);
        ``config_toml`` the same config as TOML text; ``meta`` extra JSON-serialisable
        run facts (torch version, device, parameter counts, ...), merged over the ones
        the store records itself (python, numpy, platform, host, pid).
        """
        config_json = json.dumps(dict(config))          # fail before touching the disk
        full_meta = {"python": platform.python_version(), "numpy": np.__version__,
                     "platform": platform.platform(), "host": HOST, "pid": os.getpid()}
        full_meta.update(meta or {})
        meta_rows = [(k, json.dumps(v)) for k, v in full_meta.items()]

        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        run_id, run_dir = _make_run_dir(runs_dir, name)
        try:
            # Built under a temporary name and renamed into place, so a reader listing
            # the runs folder meanwhile never sees a half-made database.
            tmp = run_dir / (DB_NAME + ".tmp")
            _initialise_db(tmp, (run_id, str(name), RUNNING, time.time(), config_json,
                                 str(config_toml), os.getpid(), HOST, time.time()), meta_rows)
            os.replace(tmp, run_dir / DB_NAME)
            _write_text_atomic(run_dir / CONFIG_NAME, str(config_toml))
            return cls(run_dir, run_id, str(name), commit_interval=commit_interval)
        except BaseException:
            # Only this call's own, brand-new folder is removed.
            for p in sorted(run_dir.glob("*"), reverse=True):
                p.unlink(missing_ok=True)
            run_dir.rmdir()
            raise

    @classmethod
    def reopen(cls, run_dir: str | Path, *, commit_interval: float = COMMIT_INTERVAL_S) -> "RunWriter":
        """Continue writing an existing run (e.g. resuming an interrupted one from a
        checkpoint): its status becomes ``running`` again until :meth:`close`.
        RunFileError while another writer (in any process) has the run open."""
        from .reader import RunReader

        with RunReader(run_dir) as r:  # the same checks (and one-line errors) as reading
            run_dir, run_id, name = r.path, r.run_id, r.name
        return cls(run_dir, run_id, name, commit_interval=commit_interval)

    def begin_attempt(self, from_step: int, *, redo: int = 0,
                      total_steps: int | None = None) -> None:
        """Mark that this writer continues the run from step ``from_step`` (its newest
        checkpoint): from now on readers leave out what earlier attempts recorded past
        that step (:mod:`.attempts`). ``redo``: how many recorded steps will be done
        again; ``total_steps``: the steps the run now aims at. Call before adding records."""
        from .attempts import begin_attempt

        self.flush()
        with self._db_lock:
            self._transaction(lambda con: begin_attempt(con, from_step, redo=redo,
                                                        total_steps=total_steps))
        self.add_event(from_step, "resume",
                       f"continued from step {from_step}"
                       + (f"; {redo} recorded step{'s' if redo != 1 else ''} will be redone"
                          if redo else ""),
                       {"from_step": int(from_step), "redo": int(redo), "total_steps": total_steps})

    # ------------------------------------------------------------------ records
    def add_scalars(self, step: int, values: Mapping[str, float], member: int = 0,
                    wall_time: float | None = None) -> None:
        """Record ``values`` (series name -> value) at ``step`` for ``member``
        (0..M-1, or -1 for run-wide values). ``wall_time`` is epoch seconds (default:
        now). NaN and ±inf are stored bit for bit."""
        if not values:
            return
        wall = time.time() if wall_time is None else float(wall_time)
        keys = list(values)
        vals = [float(v) for v in values.values()]
        step, member, n = int(step), int(member), len(keys)
        with self._lock:
            self._check_usable()
            p = self._pending
            p.name_ids.extend([self._ids.get(k) or self._register(k) for k in keys])
            p.values.extend(vals)
            p.steps.extend([step] * n)
            p.members.extend([member] * n)
            p.walls.extend([wall] * n)

    def add_tensor(self, step: int, name: str, array: np.ndarray, member: int = 0) -> None:
        """Record a numeric or bool array of any shape (copied now, compressed at commit)."""
        a = codec.as_storable(array).copy()
        with self._lock:
            self._check_usable()
            self._pending.tensors.append((int(step), int(member), self._id(name), a))

    def add_histogram(self, step: int, name: str, edges: np.ndarray, counts: np.ndarray,
                      member: int = 0) -> None:
        """Record a histogram: ``edges`` [bins + 1] (stored as float64), ``counts`` [bins]
        (integer or float, kept in its dtype)."""
        e = np.asarray(edges, dtype="<f8").ravel().copy()
        c = codec.as_storable(counts).ravel().copy()
        if e.size != c.size + 1:
            raise ValueError(f"histogram {name!r}: {e.size} edges for {c.size} counts "
                             "(need one edge more than counts)")
        with self._lock:
            self._check_usable()
            self._pending.histograms.append((int(step), int(member), self._id(name), e, c))

    def add_snapshot(self, step: int, name: str, arrays: Mapping[str, np.ndarray],
                     meta: Mapping[str, Any] | None = None, member: int = 0) -> None:
        """Record a named group of arrays (e.g. a routing snapshot of the probe text)
        with a JSON-serialisable ``meta`` dict."""
        arrs = {}
        for k, a in arrays.items():
            if not isinstance(k, str):
                raise TypeError(f"snapshot {name!r}: array names must be str, got {k!r}")
            arrs[k] = codec.as_storable(a).copy()
        meta_json = json.dumps(dict(meta or {}))
        with self._lock:
            self._check_usable()
            self._pending.snapshots.append((int(step), int(member), self._id(name), arrs, meta_json))

    def add_event(self, step: int, kind: str, message: str, data: Mapping[str, Any] | None = None,
                  member: int = -1) -> None:
        """Record an event (``kind``: nonfinite, loss_scale_backoff, checkpoint, eval,
        error, note, ...) with a one-line ``message`` and optional JSON ``data``."""
        data_json = None if data is None else json.dumps(dict(data))
        row = (int(step), int(member), str(kind), str(message), data_json, time.time())
        with self._lock:
            self._check_usable()
            self._pending.events.append(row)

    def set_meta(self, **kv: Any) -> None:
        """Set run facts (JSON-serialisable values); a later value for a key replaces it."""
        rows = {k: json.dumps(v) for k, v in kv.items()}
        with self._lock:
            self._check_usable()
            self._pending.meta.update(rows)

    # ------------------------------------------------------------------ commit / close
    def flush(self) -> None:
        """Commit everything recorded so far, now. A transient I/O error leaves the
        records pending for the background retries; a persistent one (or one that has
        outlasted RETRY_WINDOW_S) raises RunFileError, as every later call will."""
        with self._lock:
            self._check_usable()
        try:
            self._commit()
            self._failing_since = None
        except (sqlite3.Error, OSError) as e:
            self._failing_since = self._failing_since or time.monotonic()
            if _transient(e) and time.monotonic() - self._failing_since < RETRY_WINDOW_S:
                return
            self._error = e
            with self._lock:
                self._check_usable()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failing(self) -> bool:
        """True while the latest commit failed and its records wait for a retry."""
        return self._failing_since is not None

    def close(self, status: str = "finished", error: str | None = None) -> None:
        """Commit what is buffered and end the run with ``status`` (finished, stopped or
        failed) and optional ``error`` text. Idempotent: later calls do nothing."""
        if status not in END_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(END_STATUSES)}, got {status!r}")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self._close_run(status, time.time(), error)
        finally:
            atexit.unregister(self._flush_at_exit)
            with self._db_lock:
                # The last connection to close checkpoints the WAL into run.sqlite and
                # deletes it; if a reader still has the run open the WAL stays, harmlessly.
                try:
                    self._con.close()
                except sqlite3.Error:
                    pass  # a checkpoint that did not fit: the WAL keeps every commit
            _release_writer_lock(self._lock_fd)
            self._lock_fd = None

    def _close_run(self, status: str, ended: float, error: str | None) -> None:
        """Store the run's end: with every pending record if the disk allows, else the
        status and error alone, else a side file. Never raises for an I/O error; the
        outcome short of the first is in ``self.failure`` (one line)."""
        if self._error is not None:
            cause = f"writing the run failed: {_one_line(self._error)}"
            if cause not in (error or ""):  # the caller's traceback usually says it already
                error = f"{error or ''}\n{cause}".strip()
            if status != "failed":
                status = "failed"
        try:
            self._commit(final=(status, ended, error))
            return
        except (sqlite3.Error, OSError) as e:
            first = e
        lost = self._pending_summary()
        error = f"{error or ''}\n{lost} ({_one_line(first)})".strip()
        try:
            with self._db_lock:
                self._transaction(lambda con: con.execute(
                    "UPDATE run SET status = 'failed', ended = ?, error = ?, heartbeat = ? "
                    "WHERE id = 1", (ended, error, time.time())))
            self.failure = f"{self.db_path}: writing the run failed ({_one_line(first)}); " \
                           f"{lost}; the run is marked failed"
            return
        except (sqlite3.Error, OSError) as e:
            second = e
        try:
            _write_text_atomic(failure_note_path(self.db_path), json.dumps(
                {"status": "failed", "ended": ended, "error": error, "pid": os.getpid()}))
            self.failure = (f"{self.db_path}: writing the run failed ({_one_line(second)}); "
                            f"{lost}; the failure is noted in "
                            f"{failure_note_path(self.db_path).name}")
        except OSError as e:
            self.failure = (f"{self.db_path}: writing the run failed ({_one_line(second)}) and so "
                            f"did a note beside it ({_one_line(e)}); {lost}; "
                            "the run will read as interrupted")

    def _pending_summary(self) -> str:
        """What a failed end leaves out, in words ('N records of steps a-b not stored')."""
        with self._lock:
            p = self._pending
            n = len(p.steps) + len(p.tensors) + len(p.histograms) + len(p.snapshots) + len(p.events)
            steps = p.steps + [t[0] for t in p.tensors] + [e[0] for e in p.events]
        if not n:
            return "every record was stored"
        what = f"{n:,} record{'s' if n != 1 else ''}"
        return (f"{what} of steps {min(steps)}-{max(steps)}" if steps else what) + " not stored"

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("stopped")
        else:
            self.close("failed", error="".join(traceback.format_exception(exc_type, exc, tb)).strip())

    def __repr__(self) -> str:
        return f"RunWriter({str(self.run_dir)!r}{', closed' if self._closed else ''})"

    # ------------------------------------------------------------------ internals
    def _check_usable(self) -> None:  # caller holds _lock
        if self._closed:
            raise RuntimeError(f"run {self.run_id} is closed")
        if self._error is not None:
            raise RunFileError(self.db_path, f"writing the run failed: {_one_line(self._error)}")

    def _id(self, name: str) -> int:  # caller holds _lock
        return self._ids.get(name) or self._register(name)

    def _register(self, name: str) -> int:  # caller holds _lock
        if not isinstance(name, str) or not name:
            raise TypeError(f"record names must be non-empty str, got {name!r}")
        i = self._next_id
        self._next_id += 1
        self._ids[name] = i
        self._pending.names.append((i, name))
        return i

    def _flush_loop(self) -> None:
        """Background thread: commit pending records every interval; heartbeat when idle.
        A failing commit is retried, its pause doubling up to 2 s, until it succeeds or
        has failed for RETRY_WINDOW_S; then the writer is given up (see _check_usable)."""
        pause = self._interval
        while not self._stop.wait(pause):
            with self._lock:
                pending = bool(self._pending)
            if not (pending or time.monotonic() - self._last_commit >= 0.9 * HEARTBEAT_INTERVAL_S):
                continue
            try:
                self._commit()
                self._failing_since, pause = None, self._interval
            except (sqlite3.Error, OSError) as e:
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                if now - self._failing_since >= RETRY_WINDOW_S or not _transient(e):
                    self._error = e
                    return
                pause = min(2.0, max(pause * 2, self._interval))
            except BaseException as e:  # noqa: BLE001  a bug, not the disk: reported on the next call
                self._error = e
                return

    def _commit(self, final: tuple[str, float, str | None] | None = None) -> None:
        """Commit every pending record (and, with ``final``, the run's end) in one
        transaction. On failure the records are put back, nothing is lost, and the
        error is raised for the caller to retry or give up."""
        with self._db_lock:
            with self._lock:
                p, self._pending = self._pending, _Pending()
            now = time.time()

            def write(con: sqlite3.Connection) -> None:
                _write_pending(con, p)
                if final is None:
                    con.execute("UPDATE run SET heartbeat = ? WHERE id = 1", (now,))
                else:
                    status, ended, error = final
                    con.execute("UPDATE run SET status = ?, ended = ?, error = ?, heartbeat = ? "
                                "WHERE id = 1", (status, ended, error, now))
            try:
                self._transaction(write)
            except BaseException:
                with self._lock:
                    self._pending.put_back(p)
                raise
            self._last_commit = time.monotonic()

    def _transaction(self, write) -> None:  # caller holds _db_lock
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            write(con)
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (a full disk does that)
            raise

    def _flush_at_exit(self) -> None:
        if self._closed:
            return
        self._stop.set()
        try:
            self._commit()
        except BaseException:  # noqa: BLE001  the interpreter is exiting; nothing useful to do
            pass


# ---------------------------------------------------------------------- helpers
def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _transient(e: BaseException) -> bool:
    """Worth retrying: a lock held elsewhere, a full disk, an I/O hiccup. Not: a
    read-only file system, a missing permission, a damaged database."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EAGAIN, errno.EINTR, errno.EIO, errno.EDQUOT)
    text = str(e).lower()
    return any(w in text for w in ("locked", "busy", "full", "disk i/o"))


def _take_writer_lock(run_dir: Path) -> int | None:
    """Hold ``writer.lock`` of ``run_dir`` exclusively (an open fd, returned) or raise
    RunFileError naming the writer that holds it."""
    if fcntl is None:  # pragma: no cover
        return None
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunFileError(path, f"cannot take the writer lock ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another writer"
        except OSError:
            holder = "another writer"
        os.close(fd)
        raise RunFileError(run_dir, f"the run is open for writing by {holder}; "
                                    "a run has one writer at a time") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {HOST}".encode(), 0)
    except OSError:
        pass  # the lock is what matters; the text only names its holder
    return fd


def _release_writer_lock(fd: int | None) -> None:
    if fd is None:
        return
    try:  # no holder named any more: readers need not wait for this pid
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # releases writer.lock


def _make_run_dir(runs_dir: Path, name: str) -> tuple[str, Path]:
    base = new_run_id(name)
    for i in range(1, 10_000):
        run_id = base if i == 1 else f"{base}-{i}"
        d = runs_dir / run_id
        try:
            d.mkdir()  # atomic: two writers racing for one id get different suffixes
        except FileExistsError:
            continue
        return run_id, d
    raise RuntimeError(f"{runs_dir}: no free run folder name for {base!r}")


def _initialise_db(path: Path, run_row: tuple, meta_rows: list[tuple[str, str]]) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        # page_size must precede the first write; application_id and user_version go
        # into the header of the main file (rollback mode), where readers check them
        # without opening the database.
        con.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.executescript("BEGIN;\n" + DDL)
        con.execute("INSERT INTO run (id, run_id, name, status, started, config_json, config_toml, "
                    "pid, host, heartbeat) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run_row)
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta_rows)
        con.execute("COMMIT")
        # Persistent: every later connection opens the file in WAL mode.
        con.execute("PRAGMA journal_mode = WAL")
    finally:
        con.close()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_pending(con: sqlite3.Connection, p: _Pending) -> None:
    """Insert one commit's worth of records (inside the caller's transaction)."""
    if p.names:
        con.executemany("INSERT INTO names (id, name) VALUES (?, ?)", p.names)
    if p.steps:
        block = codec.ScalarBlock.build(p.steps, p.members, p.name_ids, p.values, p.walls)
        con.execute("INSERT INTO scalar_blocks (n, step_min, step_max, series, steps, vals, "
                    "wall_times) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (len(p.steps), min(p.steps), max(p.steps), *block.blobs()))
        con.executemany(
            "INSERT INTO latest (name_id, member, step, value, wall_time) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (name_id, member) DO UPDATE SET step = excluded.step, "
            "value = excluded.value, wall_time = excluded.wall_time "
            "WHERE excluded.step >= latest.step", block.last_rows())
    if p.tensors:
        con.executemany("INSERT INTO tensors (step, member, name_id, dtype, shape, data) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [(s, m, i, *codec.encode_array(a)) for s, m, i, a in p.tensors])
    if p.histograms:
        con.executemany("INSERT INTO histograms (step, member, name_id, edges, counts_dtype, counts) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [(s, m, i, codec.pack(e.tobytes()), c.dtype.str, codec.pack(c.tobytes()))
                         for s, m, i, e, c in p.histograms])
    if p.snapshots:
        con.executemany("INSERT INTO snapshots (step, member, name_id, meta, layout, data) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [(s, m, i, meta, *codec.encode_arrays(arrs))
                         for s, m, i, arrs, meta in p.snapshots])
    if p.events:
        con.executemany("INSERT INTO events (step, member, kind, message, data, wall_time) "
                        "VALUES (?, ?, ?, ?, ?, ?)", p.events)
    if p.meta:
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        list(p.meta.items()))
