"""The desktop app's log file and its last line of defence against lost exceptions.

Started from a desktop menu, the app has no console: an exception escaping a slot would
only be printed to a stderr nobody reads, and the window would go on as if nothing had
happened. ``setup_logging`` writes the ``moe_studio`` loggers to a rotating file in the
user's state folder (shown in Help > About); ``install_excepthook`` logs every uncaught
exception there (GUI thread and Python threads) and shows it in a dialog.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
from pathlib import Path
from typing import Callable

LOG_NAME = "gui.log"
_MAX_BYTES = 1_000_000
_BACKUPS = 3
_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"

_log_path: Path | None = None
log = logging.getLogger("moe_studio.gui")


def state_dir() -> Path:
    """Where the app keeps its log: ``$MOE_STUDIO_STATE`` if set; else the platform's
    per-user state folder (``$XDG_STATE_HOME``/``~/.local/state`` on Linux,
    ``~/Library/Logs`` on macOS, ``%LOCALAPPDATA%`` on Windows) + ``moe-studio``."""
    env = os.environ.get("MOE_STUDIO_STATE", "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Logs"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "moe-studio"


def log_path() -> Path | None:
    """The file ``setup_logging`` writes to, or None (not set up, or not writable)."""
    return _log_path


def setup_logging(folder: Path | None = None, level: int = logging.INFO) -> Path | None:
    """Send the ``moe_studio`` loggers to ``folder/gui.log`` (default :func:`state_dir`),
    rotated at 1 MB with 3 old files kept. Returns the file, or None when the folder
    cannot be written (then warnings still reach stderr; the app runs either way)."""
    global _log_path
    root = logging.getLogger("moe_studio")
    root.setLevel(level)
    path = Path(folder or state_dir()) / LOG_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=_MAX_BYTES,
                                                       backupCount=_BACKUPS, encoding="utf-8")
    except OSError as exc:
        logging.basicConfig(level=logging.WARNING)
        log.warning("no log file (%s): %s", path, exc)
        _log_path = None
        return None
    handler.setFormatter(logging.Formatter(_FORMAT))
    for old in [h for h in root.handlers if getattr(h, "_moe_studio_file", False)]:
        root.removeHandler(old)
        old.close()
    handler._moe_studio_file = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    _log_path = path
    return path


def install_excepthook(show: Callable[[str, str], None] | None = None) -> Callable[[], None]:
    """Log every uncaught exception (``sys.excepthook`` and ``threading.excepthook``) and
    hand ``show(message, traceback)`` the ones of the GUI thread (a dialog). Ctrl+C in
    a console still ends the app. Returns a function that puts the previous hooks back."""
    import traceback

    prev_sys, prev_thread = sys.excepthook, threading.excepthook

    def hook(etype, value, tb) -> None:
        if issubclass(etype, KeyboardInterrupt):
            prev_sys(etype, value, tb)
            return
        text = "".join(traceback.format_exception(etype, value, tb))
        log.error("uncaught exception:\n%s", text.rstrip())
        if show is not None:
            try:
                show(f"{etype.__name__}: {value}", text)
            except Exception:  # noqa: BLE001  a broken dialog must not hide the first error
                log.exception("could not show the uncaught exception")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value,
                                                  args.exc_traceback))
        name = args.thread.name if args.thread is not None else "?"
        log.error("uncaught exception in thread %s:\n%s", name, text.rstrip())

    sys.excepthook = hook
    threading.excepthook = thread_hook

    def restore() -> None:
        sys.excepthook, threading.excepthook = prev_sys, prev_thread

    return restore


def stop_logging() -> None:
    """Detach and close the log file (the app has ended; tests)."""
    global _log_path
    root = logging.getLogger("moe_studio")
    for h in [h for h in root.handlers if getattr(h, "_moe_studio_file", False)]:
        root.removeHandler(h)
        h.close()
    _log_path = None
