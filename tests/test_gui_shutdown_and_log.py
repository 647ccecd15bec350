"""Closing escalates to killing an engine that does not stop, a timed-out shutdown never
leaves an engine process behind, background work can be cancelled, and an exception
nothing caught is logged to the app's log file and shown, not lost."""
from __future__ import annotations

import os
import sys
import threading
import time

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from moe_studio.config import default  # noqa: E402
from moe_studio.gui import app_log  # noqa: E402
from moe_studio.gui.run import worker  # noqa: E402
from moe_studio.gui.run.tasks import BackgroundTask, running_controllers  # noqa: E402
from moe_studio.gui.run.worker import TrainingController  # noqa: E402


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process took the number
        return False
    return True


@pytest.fixture
def deaf_engine(monkeypatch):
    """An engine process that never answers and ignores the stop request (a hung
    step): only killing it ends it."""
    def command():
        return [sys.executable, "-c", "import time; time.sleep(600)"], dict(os.environ)
    monkeypatch.setattr(worker, "_child_command", command)


def test_a_timed_out_shutdown_kills_the_engine_process(qtbot, tmp_path, deaf_engine):
    ctl = TrainingController(mode="process")
    ctl.start(default(), tmp_path)
    qtbot.waitUntil(lambda: ctl.engine_pid is not None, timeout=10_000)
    pid = ctl.engine_pid
    assert _alive(pid)
    t0 = time.monotonic()
    assert ctl.shutdown(300) is True      # the stop is ignored: waits 0.3 s, then kills
    assert time.monotonic() - t0 < 10
    assert not _alive(pid)
    assert not ctl.busy and ctl.state == "failed"
    assert running_controllers() == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process check")
def test_closing_the_window_stops_then_kills_a_deaf_engine(qtbot, tmp_path, deaf_engine,
                                                           monkeypatch):
    from moe_studio.gui import main_window
    monkeypatch.setattr(main_window, "CLOSE_KILL_S", 0.5)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = main_window.MainWindow(settings=settings, runs_dir=tmp_path / "runs",
                               engine_mode="process")
    qtbot.addWidget(w)
    w.show()
    w.train_action.trigger()
    qtbot.waitUntil(lambda: w.controller.engine_pid is not None, timeout=10_000)
    pid = w.controller.engine_pid
    monkeypatch.setattr(w, "confirm_stop_and_close", lambda: True)
    w.close()                               # the stop request: the engine ignores it
    assert w.isVisible() and w.controller.state == "stopping" and _alive(pid)
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=15_000)
    assert not _alive(pid)
    assert not w.controller.busy
    assert running_controllers() == []


def test_background_task_cancel_is_cooperative(qtbot):
    task = BackgroundTask(name="cancel-test")
    started = threading.Event()
    seen = []

    def work(n: int, cancel) -> int:
        started.set()
        for i in range(n):
            cancel.check()
            seen.append(i)
            time.sleep(0.01)
        return n

    outcomes = []
    task.succeeded.connect(lambda r: outcomes.append(("ok", r)))
    task.cancelled.connect(lambda: outcomes.append(("cancelled",)))
    task.start(work, 10_000, cancellable=True)
    assert started.wait(5)
    with qtbot.waitSignal(task.finished, timeout=5000):
        task.cancel()
    assert outcomes == [("cancelled",)]
    assert 0 < len(seen) < 10_000 and not task.busy
    # ... and it runs again, to the end, when left alone
    with qtbot.waitSignal(task.finished, timeout=5000):
        task.start(work, 3, cancellable=True)
    assert outcomes[-1] == ("ok", 3)


@pytest.mark.qt_no_exception_capture
def test_an_uncaught_exception_is_logged_and_shown(qtbot, tmp_path):
    from moe_studio.gui.app import show_uncaught
    path = app_log.setup_logging(tmp_path / "state")
    restore = app_log.install_excepthook(show_uncaught)
    try:
        assert path == tmp_path / "state" / "gui.log" and app_log.log_path() == path

        def slot():
            raise RuntimeError("lost exception 4711")
        QTimer.singleShot(0, slot)          # raised in a slot, as a button's handler would
        qtbot.waitUntil(lambda: any(b.objectName() == "uncaughtErrorBox" and b.isVisible()
                                    for b in QApplication.topLevelWidgets()
                                    if isinstance(b, QMessageBox)), timeout=5000)
        box = next(b for b in QApplication.topLevelWidgets()
                   if isinstance(b, QMessageBox) and b.objectName() == "uncaughtErrorBox")
        assert "lost exception 4711" in box.text()
        assert "Traceback" in box.detailedText() and "def slot" not in box.text()
        assert str(path) in box.informativeText()
        box.close()

        t = threading.Thread(target=lambda: 1 / 0, name="doomed")
        t.start()
        t.join()
        text = path.read_text(encoding="utf-8")
        assert "RuntimeError: lost exception 4711" in text and "Traceback" in text
        assert "in thread doomed" in text and "ZeroDivisionError" in text
    finally:
        restore()
        app_log.stop_logging()
    assert app_log.log_path() is None


def test_logging_without_a_writable_folder_still_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    try:
        assert app_log.setup_logging(blocker / "state") is None
        assert app_log.log_path() is None
    finally:
        app_log.stop_logging()


def test_state_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOE_STUDIO_STATE", str(tmp_path / "s"))
    assert app_log.state_dir() == tmp_path / "s"
    monkeypatch.delenv("MOE_STUDIO_STATE")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
        assert app_log.state_dir() == tmp_path / "x" / "moe-studio"
