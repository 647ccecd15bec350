"""What a person adds to a run after the fact: its name, tags and a note; and deleting it.

All of it lives inside the run's own database (the name in the run row, tags and the
note as ``meta`` keys ``tags`` / ``note``), so it travels with the run folder. Reading a
run never changes it; only these functions write, each an explicit action of the user.
None of them touches a run while it is being written: they take the run's
``writer.lock`` first, which a live writer holds for as long as it is open.

A writer may set the same keys when it creates a run (``RunWriter.set_meta(tags=[...])``,
e.g. a sweep tagging its runs); they read back the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from .errors import RunFileError
from .liveness import effective_status
from .reader import resolve_run_path
from .schema import LOCK_NAME, RUNNING, check_db_file, wal_path
from .user_meta import NOTE_KEY, TAGS_KEY, note_from_meta, tags_from_meta

__all__ = ["edit_run", "delete_run", "TrashUnavailable", "clean_tag", "clean_name",
           "tags_from_meta", "note_from_meta"]

MAX_NAME = 200
MAX_TAG = 40
MAX_NOTE = 20_000


def clean_tag(tag: str) -> str:
    """``tag`` stripped, or ValueError naming what is wrong: tags are single words (no
    spaces or commas, so ``tag:NAME`` filters and comma lists read them back whole)."""
    t = str(tag).strip()
    if not t:
        raise ValueError("a tag cannot be empty")
    if any(c.isspace() or c == "," for c in t):
        raise ValueError(f"tag {t!r}: no spaces or commas in a tag (use - or _)")
    if len(t) > MAX_TAG:
        raise ValueError(f"tag {t[:20]!r}…: at most {MAX_TAG} characters")
    return t


def clean_name(name: str) -> str:
    n = " ".join(str(name).split())
    if not n:
        raise ValueError("a run name cannot be empty")
    if len(n) > MAX_NAME:
        raise ValueError(f"a run name has at most {MAX_NAME} characters (got {len(n)})")
    return n


def edit_run(path: str | Path, *, name: str | None = None, add_tags: Iterable[str] = (),
             remove_tags: Iterable[str] = (), note: str | None = None) -> None:
    """Rename the run at ``path``, add / remove tags, or set its note (``""`` clears it).

    Raises ValueError for a bad name or tag, RunFileError (one line) for a run that is
    being written, a read-only run, or one that cannot be read."""
    new_name = clean_name(name) if name is not None else None
    add = [clean_tag(t) for t in add_tags]
    remove = {str(t).strip() for t in remove_tags}
    if note is not None and len(note) > MAX_NOTE:
        raise ValueError(f"a note has at most {MAX_NOTE:,} characters (got {len(note):,})")
    with _exclusive(path) as db:
        con = sqlite3.connect(db, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 5000")
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT value FROM meta WHERE key = ?", (TAGS_KEY,)).fetchone()
            try:
                old = tags_from_meta({TAGS_KEY: json.loads(row[0])}) if row else ()
            except ValueError:
                old = ()
            tags = [t for t in dict.fromkeys([*old, *add]) if t not in remove]
            if add or remove:
                con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                            "DO UPDATE SET value = excluded.value", (TAGS_KEY, json.dumps(tags)))
            if note is not None:
                text = note.strip()
                if text:
                    con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                                "DO UPDATE SET value = excluded.value", (NOTE_KEY, json.dumps(text)))
                else:
                    con.execute("DELETE FROM meta WHERE key = ?", (NOTE_KEY,))
            if new_name is not None:
                con.execute("UPDATE run SET name = ? WHERE id = 1", (new_name,))
            con.execute("COMMIT")
        except sqlite3.Error as e:
            raise RunFileError(db, f"cannot change the run ({' '.join(str(e).split())})") from None
        finally:
            con.close()  # the last connection: SQLite folds the WAL back in and removes it


class TrashUnavailable(RunFileError):
    """No system trash here (or not for this folder): delete permanently, after asking."""


def delete_run(path: str | Path, *, permanent: bool = False) -> str:
    """Move the run folder at ``path`` to the system trash (``"trash"``) or, with
    ``permanent``, remove it (``"deleted"``). Never a run that is being written.
    TrashUnavailable when there is no trash to move it to (ask, then call again with
    ``permanent=True``); RunFileError for anything else that stops it."""
    folder, _ = resolve_run_path(path)
    with _exclusive(folder) as _db:
        if permanent:
            try:
                shutil.rmtree(folder)
            except OSError as e:
                raise RunFileError(folder, f"cannot delete ({e.strerror or e})") from None
            return "deleted"
        try:
            from send2trash import send2trash
            from send2trash.exceptions import TrashPermissionError
        except ImportError:
            raise TrashUnavailable(folder, "no system trash available (the send2trash package is "
                                           "not installed); delete it permanently instead") from None
        try:
            send2trash(str(folder))
        except TrashPermissionError as e:
            raise TrashUnavailable(folder, f"no trash for this folder ({e.strerror or e}); "
                                           "delete it permanently instead") from None
        except OSError as e:
            raise RunFileError(folder, f"cannot move to the trash ({e.strerror or e})") from None
    return "trash"


@contextmanager
def _exclusive(path: str | Path):
    """Hold the run's writer lock (so no writer opens it meanwhile) and yield its database;
    RunFileError while a writer has it open or where the folder cannot be written."""
    from .writer import _release_writer_lock, _take_writer_lock

    folder, db = resolve_run_path(path)
    check_db_file(db)
    for p in (folder, db):
        if not os.access(p, os.W_OK):
            raise RunFileError(p, "read-only: copy the run to a folder you can write to "
                                  "to change it")
    lock = folder / LOCK_NAME
    made_lock = not lock.exists()
    fd = _take_writer_lock(folder)
    try:
        if wal_path(db).exists():
            # A writer from before writer.lock existed holds no lock: ask its heartbeat.
            con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                row = con.execute("SELECT status, pid, host, heartbeat FROM run WHERE id = 1").fetchone()
            except sqlite3.Error:
                row = None
            finally:
                con.close()
            if row is not None and effective_status(*row) == RUNNING:
                raise RunFileError(folder, "the run is being written; change it when it has ended")
        yield db
    finally:
        if made_lock:  # leave the folder with the files it had (a sample run has no lock)
            lock.unlink(missing_ok=True)
        _release_writer_lock(fd)
