"""RunReader: everything a view needs from one run, read-only and safe while it grows.

A reader never writes to a run. It checks the file's header before SQLite opens it (so
a foreign, damaged or newer file is rejected without any file being created), opens a
cleanly closed run ``immutable`` and a live or crashed one ``mode=ro`` through its WAL
(see :func:`schema.connect_reader`). Every SQLite error becomes a one-line
:class:`RunFileError` naming the file.
"""
from __future__ import annotations

import functools
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import codec, frames
from .attempts import META_KEY as _ATTEMPTS_KEY, Attempt, eras, parse_attempts, superseded_sql
from .errors import RunFileError
from .liveness import effective_status, writer_alive
from .reading import SeriesShapeError, reading  # noqa: F401  (SeriesShapeError: API)
from .schema import (DB_NAME, RUNNING, SCHEMA_VERSION, check_db_file, connect_private_copy, connect_reader,
                     db_error, read_failure_note, wal_path)
from .user_meta import note_from_meta, tags_from_meta

if TYPE_CHECKING:  # follow imports this module
    from .follow import Follower

_TABLES = ("run", "meta", "names", "scalar_blocks", "latest", "tensors", "histograms",
           "snapshots", "events")
KNOWN_STATUSES = ("running", "finished", "stopped", "failed")


def _guarded(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with reading(self.db_path):
            return method(self, *args, **kwargs)
    return wrapper


@dataclass(frozen=True)
class Snapshot:
    """A named group of arrays recorded at one step (e.g. ``routing/probe``)."""
    step: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_run_path(path: str | Path) -> tuple[Path, Path]:
    """``(run folder, run.sqlite)`` for a run folder or its database file; RunFileError if
    neither exists."""
    p = Path(path)
    if p.is_dir():
        return p, p / DB_NAME
    if p.is_file():
        return p.parent, p
    if p.exists():  # a device, a pipe, a socket: nothing to read a run from
        raise RunFileError(p, "is neither a run folder nor a run file")
    if p.suffix == ".sqlite":
        raise RunFileError(p, "not found")
    raise RunFileError(p, "run folder not found")


def open_run(path: str | Path) -> "RunReader":
    """Open the run at ``path`` (its folder or its ``run.sqlite``) for reading."""
    return RunReader(path)


class RunReader:
    """Read access to one run. Cheap to open (a header check and three small queries).

    Attributes: ``path`` (run folder), ``db_path``, ``run_id``, ``name``, ``config``
    (nested dict), ``config_toml`` (str), ``meta`` (dict), ``started`` / ``ended``
    (epoch seconds or None), ``error`` (str or None), ``status``.

    Safe to share between threads (calls are serialised); for truly parallel reads
    open one reader per thread.
    """

    def __init__(self, path: str | Path):
        self.path, self.db_path = resolve_run_path(path)
        check_db_file(self.db_path)
        self._lock = threading.RLock()
        self._copy_dir: Path | None = None
        if wal_path(self.db_path).exists() and not writer_alive(self.path):
            self._con, self._copy_dir = connect_private_copy(self.db_path)
            self._immutable = False
            if self._copy_says_live():  # a writer without writer.lock (an older version)
                self.close()
                self._con, self._immutable = connect_reader(self.db_path)
        else:
            self._con, self._immutable = connect_reader(self.db_path)
        self._db_ident = _file_ident(self.db_path)
        self._names: dict[int, str] = {}
        self._ids: dict[str, int] = {}
        try:
            with reading(self.db_path):
                self._open_checks()
        except BaseException:
            self.close()
            raise

    def _open_checks(self) -> None:
        version = self._one("PRAGMA user_version")[0]
        if version != SCHEMA_VERSION:  # header said otherwise; the WAL has the last word
            raise RunFileError(self.db_path, f"unknown store schema version {version} "
                                             f"(this version reads version {SCHEMA_VERSION})")
        row = self._one("SELECT run_id, name, started, config_json, config_toml FROM run "
                        "WHERE id = 1")
        if row is None:
            raise RunFileError(self.db_path, "not a complete MoE Studio run database "
                                             "(no run record)")
        self.run_id: str = row[0]
        self.name: str = row[1]
        self.started: float = row[2]
        try:
            self.config: dict[str, Any] = json.loads(row[3])
        except (ValueError, TypeError) as e:
            raise RunFileError(self.db_path, f"corrupted run record (config is not JSON: {e})") from None
        if not isinstance(self.config, dict):
            raise RunFileError(self.db_path, "corrupted run record (config is not a JSON object)")
        self.config_toml: str = row[4]
        self.refresh()

    def _copy_says_live(self) -> bool:
        try:
            row = self._con.execute("SELECT status, pid, host, heartbeat FROM run WHERE id = 1").fetchone()
            return row is not None and effective_status(*row) == RUNNING
        except (sqlite3.Error, TypeError):
            return False  # damaged: the checks that follow say how

    # ------------------------------------------------------------------ run facts
    @_guarded
    def refresh(self) -> None:
        """Re-read status, end time, error and meta (they change while a run is live)."""
        self._read_run_row()
        self.meta: dict[str, Any] = {k: json.loads(v) for k, v in self._all("SELECT key, value FROM meta")}

    # status, ended, error and heartbeat change while a run is live (or is resumed), so
    # each access re-reads the run row: one indexed lookup, ~20 us.
    @property
    @_guarded
    def status(self) -> str:
        """running | finished | stopped | failed | interrupted (stored 'running' but the
        writer's process is gone or its heartbeat is older than 10 s)."""
        self._read_run_row()
        return self._status_now()

    @property
    @_guarded
    def ended(self) -> float | None:
        """Epoch seconds when the run ended, None while it runs (or was interrupted)."""
        self._read_run_row()
        return self._run[1]

    @property
    @_guarded
    def error(self) -> str | None:
        """Error text (a traceback) of a failed run, else None."""
        self._read_run_row()
        return self._run[2]

    @property
    @_guarded
    def heartbeat(self) -> float:
        """Epoch seconds of the writer's latest commit."""
        self._read_run_row()
        return self._run[3]

    @property
    def tags(self) -> tuple[str, ...]:
        """Tags the user (or the run's creator, e.g. a sweep) gave the run, in order."""
        return tags_from_meta(self.meta)

    @property
    def note(self) -> str | None:
        """The user's free-text note on the run, or None."""
        return note_from_meta(self.meta)

    # ------------------------------------------------------------------ scalars
    @_guarded
    def scalars(self, names: Sequence[str] | None = None, member: int | None = None, *,
                all_attempts: bool = False) -> pd.DataFrame:
        """Every recorded scalar as a long table with columns ``step`` (int64),
        ``member`` (int64; -1 = run-wide), ``name`` (categorical), ``value`` (float64;
        NaN/inf as recorded) and ``wall_time`` (float64 epoch seconds), sorted by
        (name, member, step). ``names`` / ``member`` keep only those series. A continued
        run shows its latest attempt's history (see :mod:`.attempts`); ``all_attempts``
        keeps the rows later attempts replaced too."""
        return self._scalars_between(0, None, names, member, all_attempts=all_attempts)

    @_guarded
    def attempts(self) -> list[Attempt]:
        """The continuations of this run, oldest first (empty: never continued)."""
        row = self._one("SELECT value FROM meta WHERE key = ?", (_ATTEMPTS_KEY,))
        return parse_attempts(row[0] if row else None)

    @_guarded
    def scalar_names(self) -> list[str]:
        """Sorted names of the scalar series recorded so far."""
        ids = [r[0] for r in self._all("SELECT DISTINCT name_id FROM latest")]
        return sorted(self._name(i) for i in ids)

    @_guarded
    def latest(self) -> pd.DataFrame:
        """The last recorded value of every (name, member) series: columns step,
        member, name, value, wall_time, sorted by (name, member)."""
        rows = self._all("SELECT name_id, member, step, value, wall_time FROM latest")
        df = pd.DataFrame({
            "step": np.array([r[2] for r in rows], np.int64),
            "member": np.array([r[1] for r in rows], np.int64),
            "name": pd.array([self._name(r[0]) for r in rows], dtype=str),
            # SQLite stores a NaN REAL as NULL; NULL comes back as None -> NaN here
            "value": np.array([np.nan if r[3] is None else r[3] for r in rows], np.float64),
            "wall_time": np.array([r[4] for r in rows], np.float64)})
        return df.sort_values(["name", "member"], ignore_index=True)

    @_guarded
    def last_step(self) -> int:
        """The largest step with a recorded scalar, or -1 if there is none yet."""
        v = self._one("SELECT max(step) FROM latest")[0]
        return -1 if v is None else int(v)

    # ------------------------------------------------------------------ tensors
    @_guarded
    def tensor(self, name: str, step: int | None = None, member: int = 0) -> tuple[int, np.ndarray] | None:
        """``(step, array)`` of tensor ``name`` at the recorded step nearest ``step``
        (ties go to the earlier step; None = the latest), or None if never recorded."""
        row = self._nearest("tensors", "dtype, shape, data", name, step, member)
        if row is None:
            return None
        return int(row[0]), codec.decode_array(row[1], row[2], row[3])

    @_guarded
    def tensor_steps(self, name: str, member: int = 0) -> np.ndarray:
        """Recorded steps of tensor ``name``, ascending, int64 [S]."""
        return self._steps("tensors", name, member)

    @_guarded
    def tensor_series(self, name: str, member: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(steps int64 [S], arrays [S, *shape])`` of every record of tensor ``name``.
        ValueError if its shape changed during the run."""
        nid = self._id(name)
        rows = [] if nid is None else self._kept(
            "tensors", "step, dtype, shape, data", "name_id = ? AND member = ?", (nid, member),
            "ORDER BY step, id")
        if not rows:
            return np.empty(0, np.int64), np.empty((0,))
        shapes = {r[2] for r in rows}
        if len(shapes) > 1:
            raise SeriesShapeError(f"tensor {name!r} changed shape during the run "
                             f"({', '.join(sorted(shapes))}); read it with tensor()")
        arrays = np.stack([codec.decode_array(r[1], r[2], r[3]) for r in rows])
        return np.array([r[0] for r in rows], np.int64), arrays

    @_guarded
    def tensor_names(self) -> list[str]:
        return self._names_in("tensors")

    # ------------------------------------------------------------------ histograms
    @_guarded
    def histogram(self, name: str, step: int | None = None,
                  member: int = 0) -> tuple[int, np.ndarray, np.ndarray] | None:
        """``(step, edges float64 [B+1], counts [B])`` nearest ``step`` (None = latest)."""
        row = self._nearest("histograms", "edges, counts_dtype, counts", name, step, member)
        if row is None:
            return None
        return int(row[0]), _edges(row[1]), _counts(row[2], row[3])

    @_guarded
    def histogram_series(self, name: str, member: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps int64 [S], edges, counts [S, B])``. ``edges`` is float64 [B+1] when
        every step used the same edges (the usual case), else [S, B+1]."""
        nid = self._id(name)
        rows = [] if nid is None else self._kept(
            "histograms", "step, edges, counts_dtype, counts", "name_id = ? AND member = ?",
            (nid, member), "ORDER BY step, id")
        if not rows:
            return np.empty(0, np.int64), np.empty(0), np.empty((0, 0))
        counts = [_counts(r[2], r[3]) for r in rows]
        if len({c.size for c in counts}) > 1:
            raise SeriesShapeError(f"histogram {name!r} changed its number of bins during the run; "
                             "read it with histogram()")
        edge_blobs = [r[1] for r in rows]
        if all(b == edge_blobs[0] for b in edge_blobs):
            edges = _edges(edge_blobs[0])
        else:
            edges = np.stack([_edges(b) for b in edge_blobs])
        return np.array([r[0] for r in rows], np.int64), edges, np.stack(counts)

    @_guarded
    def histogram_names(self) -> list[str]:
        return self._names_in("histograms")

    # ------------------------------------------------------------------ snapshots
    @_guarded
    def snapshot(self, name: str, step: int | None = None, member: int = 0) -> Snapshot | None:
        """The snapshot ``name`` nearest ``step`` (None = latest), or None."""
        row = self._nearest("snapshots", "meta, layout, data", name, step, member)
        if row is None:
            return None
        return Snapshot(int(row[0]), codec.decode_arrays(row[2], row[3]), json.loads(row[1]))

    @_guarded
    def snapshot_steps(self, name: str, member: int = 0) -> np.ndarray:
        """Recorded steps of snapshot ``name``, ascending, int64 [S]."""
        return self._steps("snapshots", name, member)

    @_guarded
    def snapshot_names(self) -> list[str]:
        return self._names_in("snapshots")

    # ------------------------------------------------------------------ events
    @_guarded
    def events(self, kinds: Iterable[str] | None = None) -> pd.DataFrame:
        """Events in the order they were written: columns step, member, kind, message,
        data (dict), wall_time (epoch seconds). ``kinds`` keeps only those kinds."""
        return frames.event_frame(self._event_rows(0, None, kinds))

    # ------------------------------------------------------------------ integrity
    @_guarded
    def verify(self, full: bool = True) -> None:
        """Read and decode every record once; RunFileError naming the first damage.

        SQLite's page-level check (``PRAGMA quick_check``), every table present, the run
        row, meta, and each scalar block, tensor, histogram, snapshot and event decoded.
        Costs about as much as reading the whole run; ``moe-studio report`` and
        ``export`` call it so a damaged run says so instead of showing empty plots.
        ``full=False`` (the run list, for large files) checks the tables, the run row,
        meta, names and the last few records of each kind: constant time."""
        if full:
            bad = [r[0] for r in self._all("PRAGMA quick_check(5)")]
            if bad != ["ok"]:
                raise RunFileError(self.db_path, f"corrupted database (SQLite integrity check: {bad[0]})")
        have = {r[0] for r in self._all("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in _TABLES if t not in have]
        if missing:
            raise RunFileError(self.db_path, f"not a complete MoE Studio run database (table "
                                             f"{', '.join(missing)} missing)")
        self.refresh()
        self._load_names()
        self.latest()
        if full:
            self.scalars()
        else:
            top = self._one("SELECT max(id) FROM scalar_blocks")[0] or 0
            self._scalars_between(max(0, top - 8), None)
        decoders = {
            "scalar_blocks": None,
            "tensors": ("dtype, shape, data", lambda r: codec.decode_array(*r)),
            "histograms": ("edges, counts_dtype, counts",
                           lambda r: _check_histogram(_edges(r[0]), _counts(r[1], r[2]))),
            "snapshots": ("meta, layout, data",
                          lambda r: (_json_object(r[0]), codec.decode_arrays(r[1], r[2]))),
            "events": ("data", lambda r: r[0] is None or _json_object(r[0]))}
        for table, spec in decoders.items():
            if spec is None:
                continue
            cols, decode = spec
            name_col = "0" if table == "events" else "name_id"
            last = 0
            if not full:
                last = max(0, (self._one(f"SELECT max(id) FROM {table}")[0] or 0) - 8)
            while True:  # in slices: a long run's blobs need not all be in memory at once
                rows = self._all(f"SELECT id, {name_col}, {cols} FROM {table} WHERE id > ? "
                                 "ORDER BY id LIMIT 256", (last,))
                if not rows:
                    break
                for row in rows:
                    if table != "events":
                        self._name(row[1])
                    decode(row[2:])
                last = rows[-1][0]

    # ------------------------------------------------------------------ live follow
    def follower(self, from_start: bool = True) -> "Follower":
        """A cursor over rows newer than it has seen. With ``from_start`` its first poll
        returns everything recorded so far (so a view can build from polls alone, with
        no gap between an initial load and the first poll); otherwise it starts now."""
        from .follow import Follower
        return Follower(self, from_start=from_start)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        with self._lock:
            self._con.close()
            if self._copy_dir is not None:
                import shutil
                shutil.rmtree(self._copy_dir, ignore_errors=True)
                self._copy_dir = None

    def __enter__(self) -> "RunReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunReader({str(self.path)!r}, run_id={self.run_id!r})"

    # ------------------------------------------------------------------ internals
    def _all(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            if self._immutable:
                self._maybe_reopen()
            try:
                return self._con.execute(sql, params).fetchall()
            except sqlite3.ProgrammingError as e:
                raise RuntimeError(f"{self.db_path}: reader is closed ({e})") from None
            except sqlite3.DatabaseError as e:
                raise db_error(self.db_path, e) from None

    def _one(self, sql: str, params: Sequence = ()) -> tuple | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _maybe_reopen(self) -> None:  # caller holds _lock
        # Opened immutable because no WAL existed. If one appears, a writer has opened
        # the run (possible only in the instant after RunWriter.create renamed the new
        # database into place): immutable would hide its commits, so reopen through
        # the WAL. Likewise when the file itself changed (the user renamed or tagged the
        # run: store/organise.py): an immutable connection would keep stale pages. Two
        # stat() calls per query while immutable.
        if wal_path(self.db_path).exists() or _file_ident(self.db_path) != self._db_ident:
            self._con.close()
            self._con, self._immutable = connect_reader(self.db_path)
            self._db_ident = _file_ident(self.db_path)

    def _read_run_row(self) -> None:
        row = self._one("SELECT status, ended, error, heartbeat, pid, host FROM run WHERE id = 1")
        self._set_run_row(row)

    def _check_run_row(self, row: tuple | None) -> None:
        if row is None:
            raise RunFileError(self.db_path, "not a complete MoE Studio run database (no run record)")
        status, ended, error, heartbeat, pid, host = row
        if status not in KNOWN_STATUSES:
            raise RunFileError(self.db_path, f"damaged run record (status {str(status)[:40]!r})")
        if not isinstance(heartbeat, (int, float)) or not isinstance(pid, int) \
                or not isinstance(host, str) or not (ended is None or isinstance(ended, (int, float))) \
                or not (error is None or isinstance(error, str)):
            raise RunFileError(self.db_path, "damaged run record (a field of the wrong type)")

    def _set_run_row(self, row: tuple) -> None:
        self._check_run_row(row)
        if row[0] == RUNNING:
            # A writer that could not store its failure in the database noted it beside
            note = read_failure_note(self.db_path)
            if note is not None:
                row = ("failed", note.get("ended"), note["error"], *row[3:])
        self._run = row  # (status, ended, error, heartbeat, pid, host)

    def _status_now(self) -> str:
        status, _, _, heartbeat, pid, host = self._run
        return effective_status(status, pid, host, heartbeat)

    def _load_names(self) -> None:
        self._names = dict(self._all("SELECT id, name FROM names"))
        self._ids = {n: i for i, n in self._names.items()}

    def _name(self, nid: int) -> str:
        if nid not in self._names:
            self._load_names()
            if nid not in self._names:
                raise RunFileError(self.db_path, f"damaged records (a record refers to name id "
                                                 f"{nid}, which the names table lacks)")
        return self._names[nid]

    def _names_by_id(self, ids: np.ndarray) -> dict[int, str]:
        # bincount, not np.unique: linear time on millions of ids
        if len(ids) and not all(i in self._names for i in np.flatnonzero(np.bincount(ids)).tolist()):
            self._load_names()
        return self._names

    def _id(self, name: str) -> int | None:
        if name not in self._ids:
            self._load_names()
        return self._ids.get(name)

    def _names_in(self, table: str) -> list[str]:
        return sorted(self._name(r[0]) for r in self._all(f"SELECT DISTINCT name_id FROM {table}"))

    def _steps(self, table: str, name: str, member: int) -> np.ndarray:
        nid = self._id(name)
        if nid is None:
            return np.empty(0, np.int64)
        rows = self._kept(table, "DISTINCT step", "name_id = ? AND member = ?", (nid, member),
                          "ORDER BY step")
        return np.array([r[0] for r in rows], np.int64)

    def _nearest(self, table: str, cols: str, name: str, step: int | None, member: int) -> tuple | None:
        """The row (step, *cols) of series (name, member) nearest ``step``; of several
        rows at that step, the last written."""
        nid = self._id(name)
        if nid is None:
            return None
        att = self._attempt_list()
        cut, cut_params = superseded_sql(att, table)
        key = "WHERE name_id = ? AND member = ?" + cut
        kp = (nid, member) + cut_params
        if step is None:
            found = self._one(f"SELECT step FROM {table} {key} ORDER BY step DESC LIMIT 1", kp)
        else:
            # Two index probes instead of ORDER BY abs(step - ?), which scans the series.
            below = self._one(f"SELECT step FROM {table} {key} AND step <= ? ORDER BY step DESC "
                              "LIMIT 1", kp + (step,))
            above = self._one(f"SELECT step FROM {table} {key} AND step > ? ORDER BY step ASC "
                              "LIMIT 1", kp + (step,))
            cands = [r[0] for r in (below, above) if r is not None]
            found = (min(cands, key=lambda s: (abs(s - step), s)),) if cands else None
        if found is None:
            return None
        return self._one(f"SELECT step, {cols} FROM {table} {key} AND step = ? ORDER BY id DESC "
                         "LIMIT 1", kp + (found[0],))

    def _attempt_list(self) -> list[Attempt]:
        # Read on every query: a live run may be continued while a view has it open.
        row = self._one("SELECT value FROM meta WHERE key = ?", (_ATTEMPTS_KEY,))
        return parse_attempts(row[0] if row else None)

    def _kept(self, table: str, cols: str, where: str, params: tuple, order: str) -> list[tuple]:
        """``SELECT cols FROM table WHERE where`` without the rows later attempts replaced."""
        cut, cut_params = superseded_sql(self._attempt_list(), table)
        return self._all(f"SELECT {cols} FROM {table} WHERE {where}{cut} {order}",
                         tuple(params) + cut_params)

    def _scalars_between(self, after_id: int, upto_id: int | None,
                         names: Sequence[str] | None = None, member: int | None = None, *,
                         all_attempts: bool = False) -> pd.DataFrame:
        """Scalars of blocks with ``after_id < id <= upto_id`` (None: no upper bound),
        without the rows later attempts replaced unless ``all_attempts``."""
        want = None
        if names is not None:
            want = [i for i in (self._id(n) for n in names) if i is not None]
            if not want:
                return frames.empty_scalars()
        att = [] if all_attempts else self._attempt_list()
        parts = []
        for lo, hi, max_step in eras(att, "scalar_blocks", after_id, upto_id):
            df = self._scalar_blocks(lo, hi, want, member)
            if max_step is not None and len(df):
                df = df[df["step"].to_numpy() <= max_step]
            parts.append(df)
        if len(parts) == 1:
            return parts[0]
        parts = [p for p in parts if len(p)]
        if not parts:
            return frames.empty_scalars()
        df = pd.concat(parts, ignore_index=True)
        df["name"] = df["name"].astype("category")
        return df.sort_values(["name", "member", "step"], kind="stable", ignore_index=True)

    def _scalar_blocks(self, after_id: int, upto_id: int | None, want: list[int] | None,
                       member: int | None) -> pd.DataFrame:
        sql = "SELECT series, steps, vals, wall_times FROM scalar_blocks WHERE id > ?"
        params: tuple = (after_id,)
        if upto_id is not None:
            sql += " AND id <= ?"
            params += (upto_id,)
        rows = self._all(sql + " ORDER BY id", params)
        if not rows:
            return frames.empty_scalars()
        block = codec.decode_scalar_blocks(rows)
        del rows  # the blobs, now copied into the block's columns
        return frames.scalar_frame(block, self._names_by_id(block.series[:, 0]),
                                   want_ids=want, member=member)

    def _event_rows(self, after_id: int, upto_id: int | None,
                    kinds: Iterable[str] | None = None) -> list[tuple]:
        cut, cut_params = superseded_sql(self._attempt_list(), "events")
        sql = "SELECT step, member, kind, message, data, wall_time FROM events WHERE id > ?" + cut
        params: list = [after_id, *cut_params]
        if upto_id is not None:
            sql += " AND id <= ?"
            params.append(upto_id)
        if kinds is not None:
            kinds = list(kinds)
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params += kinds
        return self._all(sql + " ORDER BY id", params)


def _file_ident(p: Path) -> tuple:
    try:
        st = p.stat()
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _json_object(text: str) -> dict:
    d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    return d


def _check_histogram(edges: np.ndarray, counts: np.ndarray) -> None:
    if edges.size != counts.size + 1:
        raise ValueError(f"a histogram has {edges.size} edges for {counts.size} counts")


def _edges(blob: bytes) -> np.ndarray:
    return np.frombuffer(codec.unpack(blob), "<f8").copy()


def _counts(dtype: str, blob: bytes) -> np.ndarray:
    return np.frombuffer(codec.unpack(blob), np.dtype(dtype)).copy()
