"""SIGTERM and SIGINT to the app, as ``moe-studio train`` answers them: the first stops
a run in progress after its step (checkpoint, status *stopped*), closes the window and
exits with 128 + n; a second one exits at once. Without this, SIGTERM (how ``kill``,
schedulers and systemd end a program) killed the window mid-run, and Ctrl+C raised
``KeyboardInterrupt`` inside whatever slot ran next.

Python runs its signal handlers only between bytecodes of the main thread, which sits
in Qt's event loop; so the C-level handler's wake-up byte (``signal.set_wakeup_fd``)
goes down a socket pair that a QSocketNotifier watches, and the stop happens in the
event loop like a click on Stop.
"""
from __future__ import annotations

import os
import signal
import socket
import sys

from PySide6.QtCore import QCoreApplication, QObject, QSocketNotifier, QTimer

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalStop(QObject):
    """Installed for the lifetime of the event loop; ``exit_code`` is 128 + n once a
    signal came (else None). ``uninstall`` puts the previous handlers back."""

    def __init__(self, window, parent: QObject | None = None):
        super().__init__(parent)
        self._window = window
        self.exit_code: int | None = None
        self._read, self._write = socket.socketpair()
        for s in (self._read, self._write):
            s.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._write.fileno())
        # A Python-level handler must exist for the wake-up byte to be written; the
        # work is done from the notifier, in the event loop.
        self._old = {sig: signal.signal(sig, lambda *_: None) for sig in SIGNALS}
        self._notifier = QSocketNotifier(self._read.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._on_wakeup)

    def _on_wakeup(self) -> None:
        try:
            data = self._read.recv(64)
        except OSError:
            return
        for signum in data:
            if signum in SIGNALS:
                self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.exit_code is not None:
            _say(f"moe-studio-gui: {name} again: exiting now")
            # The engine process sees its pipe close: it ends the step it is in and
            # records what its stop command asked for. Nothing here may wait.
            os._exit(128 + signum)
        self.exit_code = 128 + signum
        busy = self._window.controller.busy
        _say(f"moe-studio-gui: {name}: " + ("stopping the run after this step (again to "
                                            "exit at once)" if busy else "closing"))
        self._window.stop_and_close()
        # The window closes once the run has stopped; then the app ends, whatever other
        # top-level window (a dialog) is still open.
        self._closed_check = QTimer(self)
        self._closed_check.timeout.connect(self._exit_once_closed)
        self._closed_check.start(100)

    def _exit_once_closed(self) -> None:
        if not self._window.isVisible():
            self._closed_check.stop()
            QCoreApplication.exit(self.exit_code or 0)

    def uninstall(self) -> None:
        if hasattr(self, "_closed_check"):
            self._closed_check.stop()
        self._notifier.setEnabled(False)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_fd)
        self._read.close()
        self._write.close()


def _say(line: str) -> None:
    try:  # a closed terminal must not turn a stop into an exception
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
