"""The run database: file layout, SQL schema, and checks made before SQLite opens a file.

A run is a folder ``<runs_dir>/<run-id>/`` holding ``run.sqlite`` (WAL mode), a copy of
its ``config.toml`` and its checkpoints. The store schema version lives in SQLite's own
``PRAGMA user_version`` and the file is tagged with ``PRAGMA application_id``. Both sit
in the first 100 bytes of the file, so a reader can reject a foreign, damaged or newer
file by reading those bytes alone, before SQLite gets a chance to create ``-wal`` or
``-shm`` files next to it.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import RunFileError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4D6F4553  # b"MoES"
DB_NAME = "run.sqlite"
CONFIG_NAME = "config.toml"
LOCK_NAME = "writer.lock"  # flock'ed by the run's one writer while it is open

RUNNING = "running"
END_STATUSES = ("finished", "stopped", "failed")
INTERRUPTED = "interrupted"  # never stored: computed by readers for a running run whose writer is gone

# 16 KiB pages: scalar blocks and tensors are blobs of a few KiB to a few hundred KiB, and
# larger pages mean shorter overflow chains to walk when loading them.
PAGE_SIZE = 16384

_SQLITE_MAGIC = b"SQLite format 3\x00"

DDL = """
CREATE TABLE run (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,      -- running | finished | stopped | failed
    started     REAL NOT NULL,      -- epoch seconds
    ended       REAL,               -- epoch seconds, NULL while running
    error       TEXT,               -- traceback or message of a failed run
    config_json TEXT NOT NULL,      -- the experiment config as nested JSON objects
    config_toml TEXT NOT NULL,      -- the same config as the TOML text the run was started with
    pid         INTEGER NOT NULL,   -- writer process id, for interrupted detection
    host        TEXT NOT NULL,      -- writer host name; the pid only means something there
    heartbeat   REAL NOT NULL       -- epoch seconds of the writer's latest commit
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;  -- JSON values
CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);

-- Scalars are stored as one row per writer commit, grouped by series: ``series`` lists
-- (name id, member, count) per series in (name id, member) order, and the three value
-- columns hold that many entries per series in the same order, ascending by step.
-- Loading millions of values is then a few thousand blob reads plus one stable sort of
-- the (few) series segments, instead of millions of rows or a sort of every value.
-- Blobs keep NaN and inf bit-exact (a REAL column would turn NaN into NULL).
CREATE TABLE scalar_blocks (
    id         INTEGER PRIMARY KEY,
    n          INTEGER NOT NULL,    -- values in this block
    step_min   INTEGER NOT NULL,
    step_max   INTEGER NOT NULL,
    series     BLOB NOT NULL,       -- int32 [K, 3]: name id, member, count
    steps      BLOB NOT NULL,       -- int64 [n]
    vals       BLOB NOT NULL,       -- float64 [n]
    wall_times BLOB NOT NULL        -- float64 [n], epoch seconds
);
-- Last value of every series, for run lists and summaries (NULL value = NaN).
CREATE TABLE latest (
    name_id   INTEGER NOT NULL,
    member    INTEGER NOT NULL,
    step      INTEGER NOT NULL,
    value     REAL,
    wall_time REAL NOT NULL,
    PRIMARY KEY (name_id, member)
) WITHOUT ROWID;

CREATE TABLE tensors (
    id      INTEGER PRIMARY KEY,
    step    INTEGER NOT NULL,
    member  INTEGER NOT NULL,
    name_id INTEGER NOT NULL,
    dtype   TEXT NOT NULL,          -- numpy dtype.str, e.g. '<f4'
    shape   TEXT NOT NULL,          -- comma-separated, '' for a 0-d array
    data    BLOB NOT NULL           -- C-order bytes, tagged payload (codec.pack)
);
CREATE INDEX tensors_series ON tensors (name_id, member, step);

CREATE TABLE histograms (
    id           INTEGER PRIMARY KEY,
    step         INTEGER NOT NULL,
    member       INTEGER NOT NULL,
    name_id      INTEGER NOT NULL,
    edges        BLOB NOT NULL,     -- float64 [bins + 1], tagged payload
    counts_dtype TEXT NOT NULL,
    counts       BLOB NOT NULL      -- [bins] in counts_dtype, tagged payload
);
CREATE INDEX histograms_series ON histograms (name_id, member, step);

CREATE TABLE snapshots (
    id      INTEGER PRIMARY KEY,
    step    INTEGER NOT NULL,
    member  INTEGER NOT NULL,
    name_id INTEGER NOT NULL,
    meta    TEXT NOT NULL,          -- JSON object
    layout  TEXT NOT NULL,          -- JSON list of [array name, dtype.str, shape, nbytes]
    data    BLOB NOT NULL           -- the arrays' bytes one after another, tagged payload
);
CREATE INDEX snapshots_series ON snapshots (name_id, member, step);

CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    step      INTEGER NOT NULL,
    member    INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL,
    data      TEXT,                 -- JSON object or NULL
    wall_time REAL NOT NULL
);
"""


def wal_path(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def failure_note_path(db: Path) -> Path:
    """The side file a writer leaves when it could not store its run's failure in the
    database itself (a full disk): JSON with status, ended and error."""
    return db.with_name(db.name + "-failed.json")


def read_failure_note(db: Path) -> dict | None:
    """The failure note beside ``db``, or None (absent or unreadable: a note that cannot
    be read cannot say more than the database does)."""
    import json

    try:
        note = json.loads(failure_note_path(db).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and isinstance(note.get("error"), str) else None


def check_db_file(db: Path) -> None:
    """Reject a file that is not a readable run database of a version this code knows.

    Reads only the file's first 100 bytes (the SQLite header) and its size, so it never
    creates or changes anything. Raises :class:`RunFileError`.
    """
    try:
        st = db.stat()
    except FileNotFoundError:
        raise RunFileError(db, "not found") from None
    except OSError as e:
        raise RunFileError(db, f"cannot read ({e.strerror})") from None
    if not db.is_file():
        raise RunFileError(db, "not a file")
    try:
        with open(db, "rb") as f:
            head = f.read(100)
    except OSError as e:
        raise RunFileError(db, f"cannot read ({e.strerror})") from None
    if not head:
        raise RunFileError(db, "empty file, not an SQLite database")
    if not head.startswith(_SQLITE_MAGIC):
        raise RunFileError(db, "not an SQLite database")
    if len(head) < 100:
        raise RunFileError(db, f"truncated SQLite database ({len(head)} bytes)")

    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise RunFileError(db, f"corrupted SQLite header (page size {page_size})")
    app_id = int.from_bytes(head[68:72], "big", signed=True)
    if app_id != APPLICATION_ID:
        raise RunFileError(db, "an SQLite database, but not a MoE Studio run "
                               f"(application_id {app_id:#x})")
    version = int.from_bytes(head[60:64], "big", signed=True)
    if version > SCHEMA_VERSION:
        raise RunFileError(db, f"written by a newer MoE Studio (store schema version {version}; "
                               f"this version reads version {SCHEMA_VERSION}): update MoE Studio")
    if version != SCHEMA_VERSION:
        raise RunFileError(db, f"unknown store schema version {version} "
                               f"(this version reads version {SCHEMA_VERSION})")

    # The page count in the header is only trustworthy without a WAL: with one, the
    # latest pages may live in the WAL and a checkpoint may be extending the file now.
    if not wal_path(db).exists():
        n_pages = int.from_bytes(head[28:32], "big")
        header_count_valid = head[24:28] == head[92:96]
        expected = n_pages * page_size
        if header_count_valid and n_pages and st.st_size < expected:
            raise RunFileError(db, f"truncated database ({st.st_size} bytes, its header says "
                                   f"{n_pages} pages of {page_size} bytes = {expected} bytes)")
        if st.st_size % page_size:
            raise RunFileError(db, f"truncated or damaged database ({st.st_size} bytes is not "
                                   f"a whole number of {page_size}-byte pages)")


def connect_reader(db: Path) -> tuple[sqlite3.Connection, bool]:
    """Open ``db`` for reading without ever writing to the main database file.

    Returns ``(connection, immutable)``. Without a ``-wal`` file no writer has the run
    open (SQLite deletes the WAL when the last writer closes cleanly), so the file is
    opened ``immutable``: no locks, no ``-wal``/``-shm`` created, nothing left behind.
    With a ``-wal`` file (a live writer, or one that was killed) it is opened
    ``mode=ro`` so the reader sees every committed transaction, including those still
    in the WAL; SQLite then shares the writer's ``-shm`` index.
    """
    immutable = not wal_path(db).exists()
    uri = db.resolve().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA busy_timeout = 2000")
    except sqlite3.Error as e:
        raise db_error(db, e) from None
    return con, immutable


def connect_private_copy(db: Path) -> tuple[sqlite3.Connection, Path]:
    """Open a copy of ``db`` and its ``-wal`` in a temporary folder: how a run whose
    writer is gone but left a WAL is read. SQLite would otherwise create or rewrite the
    ``-shm`` beside the run (and recover the WAL into it); a reader leaves the run's
    files byte for byte as it found them. Returns ``(connection, temporary folder)``;
    the caller removes the folder when done."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="moe-studio-read-"))
    try:
        shutil.copyfile(db, tmp / db.name)
        try:
            shutil.copyfile(wal_path(db), wal_path(tmp / db.name))
        except FileNotFoundError:
            pass  # checkpointed away meanwhile: the main file has everything
        con = sqlite3.connect(tmp / db.name, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA query_only = 1")
    except (OSError, sqlite3.Error) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise RunFileError(db, f"cannot read the records its stopped writer left in the WAL: "
                                   f"copying them to {tmp.parent} failed ({e.strerror or e})") from None
        raise db_error(db, e) from None
    return con, tmp


def db_error(db: Path, e: BaseException) -> RunFileError:
    """Translate an SQLite exception met while reading ``db`` into a one-line RunFileError."""
    msg = str(e)
    low = msg.lower()
    if "malformed" in low or "corrupt" in low:
        problem = f"corrupted database ({msg})"
    elif "not a database" in low:
        problem = f"not an SQLite database, or a damaged one ({msg})"
    elif "no such table" in low or "no such column" in low:
        problem = f"not a complete MoE Studio run database ({msg})"
    elif "locked" in low or "busy" in low:
        problem = f"database is locked by another process ({msg})"
    else:
        problem = f"cannot read the database ({msg})"
    return RunFileError(db, problem)
