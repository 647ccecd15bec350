"""Is the writer of a 'running' run still there?

The writer stores its pid, host name and a heartbeat (epoch seconds of its latest
commit, at least every second while it is open). A reader calls a run *interrupted*
when its stored status is still ``running`` and either the writer's process is gone
(checked directly when the reader is on the same host) or the heartbeat is older than
:data:`STALE_AFTER_S` (another host, or a pid reused by an unrelated process).
"""
from __future__ import annotations

import os
import socket
import time

from pathlib import Path

from .schema import INTERRUPTED, LOCK_NAME, RUNNING

STALE_AFTER_S = 10.0
HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` on this host exists and has not exited.

    POSIX only; elsewhere (Windows, where signal 0 would *terminate* the process) it
    answers True and the heartbeat decides.
    """
    if os.name != "posix":
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A process that has exited but not yet been reaped by its parent (a zombie) still
    # answers kill(0); on Linux /proc tells the difference.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def effective_status(status: str, pid: int, host: str, heartbeat: float,
                     now: float | None = None) -> str:
    """The status a reader should show: the stored one, except that a ``running`` run
    whose writer is gone reads as ``interrupted``."""
    if status != RUNNING:
        return status
    now = time.time() if now is None else now
    if now - heartbeat > STALE_AFTER_S:
        return INTERRUPTED
    if host == HOST and not pid_alive(pid):
        return INTERRUPTED
    return RUNNING


def writer_alive(run_dir: Path) -> bool:
    """Whether the writer named in ``run_dir``'s ``writer.lock`` may still be running:
    False when there is no lock file (no writer of this version ever opened the run,
    or it was cleaned away) or its process on this host is gone. Reads the file only;
    taking the lock to test it could refuse a writer opening the run at that moment."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    parts = text.split()
    if len(parts) != 4 or parts[0] != "pid" or parts[2] != "on" or not parts[1].isdigit():
        return False
    return parts[3] != HOST or pid_alive(int(parts[1]))
