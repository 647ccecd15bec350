"""Shared test set-up.

Qt runs headless (offscreen) everywhere, and every test is checked for leaks that would
otherwise show up much later as crashes or slow suites: a training thread still running,
a Python thread left behind, or an active QTimer inside a top-level widget that is still
alive after the test (a hidden window that keeps polling).
"""
from __future__ import annotations

import faulthandler
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

# Must happen before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Must happen before anything imports torch. The test models are tiny, and on a 2-core
# machine two OpenMP threads contending with the Qt thread (or with anything else
# running) make a step 10x slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# Python's cyclic garbage collector runs in the main thread only, between tests, as the
# app runs it on a timer in its GUI thread (gui/gc_guard.py): an automatic collection in
# a worker thread that frees Qt objects deadlocks with the GUI thread (a hung CI run).
gc.disable()

_GRACE_S = 2.0  # a thread that is just finishing gets this long to end
# A test stuck where Python cannot run (a deadlock holding the GIL: pytest-timeout's own
# timer cannot fire then) is ended by faulthandler's watchdog, a C thread: it writes
# every thread's stack to a file and exits the test process; xdist reports the crash and
# goes on, and the run's summary prints the stacks (a worker's stderr is not shown).
HANG_EXIT_S = float(os.environ.get("MOE_STUDIO_TEST_HANG_S", "420"))


def _hang_dir(controller_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"moe-studio-test-hangs-{controller_pid}"


_hang_file = None


@pytest.fixture(autouse=True)
def _hang_watchdog():
    global _hang_file
    if _hang_file is None:   # one file per test process, open for faulthandler to write
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        d = _hang_dir(os.getppid() if worker else os.getpid())
        d.mkdir(exist_ok=True)
        _hang_file = open(d / f"{worker or 'main'}-{os.getpid()}.txt", "w")
    faulthandler.dump_traceback_later(HANG_EXIT_S, exit=True, file=_hang_file)
    yield
    faulthandler.cancel_dump_traceback_later()


def pytest_terminal_summary(terminalreporter):
    d = _hang_dir(os.getpid())
    if not d.is_dir():
        return
    for f in sorted(d.glob("*.txt")):
        text = f.read_text(errors="replace").strip()
        if text:
            terminalreporter.section(f"stacks of a hung test process ({f.stem})")
            terminalreporter.write_line(text)
    shutil.rmtree(d, ignore_errors=True)


def _qt_widgets():
    return sys.modules.get("PySide6.QtWidgets")


def _flush_qt() -> None:
    """Deliver pending events and deferred deletes (deleteLater) outside an event loop."""
    qtw = _qt_widgets()
    if qtw is None:
        return
    app = qtw.QApplication.instance()
    if app is None:
        return
    from PySide6.QtCore import QEvent
    for _ in range(3):
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        app.processEvents()


def _running_controllers() -> list:
    mod = sys.modules.get("moe_studio.gui.run.tasks")
    return mod.running_controllers() if mod is not None else []


def _active_timers() -> list[str]:
    qtw = _qt_widgets()
    if qtw is None or qtw.QApplication.instance() is None:
        return []
    from PySide6.QtCore import QTimer
    # Python's cyclic GC must not run during the walk (it is off; see above): wrapping
    # the children allocates, and a collection then could free a Python-owned widget
    # whose C++ object the walk still points at (a segfault seen once in CI, here).
    found = []
    for w in qtw.QApplication.topLevelWidgets():
        try:
            timers = w.findChildren(QTimer)
        except RuntimeError:  # deleted underneath us
            continue
        for t in timers:
            if t.isActive():
                found.append(f"{type(w).__name__}({w.objectName()!r}) -> "
                             f"QTimer({t.objectName()!r}, {t.interval()} ms)")
    return found


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for a module of tiny-tensor tests (whatever an
    earlier module left it at): a second thread only adds synchronisation, and on a
    shared, oversubscribed machine OpenMP spin-waits make such tests 10-40x slower.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_expert_kernel():
    """After the test: the expert kernel back to 'auto' and the tuner's measurements
    forgotten (a test may force a kernel, or teach it that grouped_mm fails)."""
    from moe_studio.engine import expert_kernels
    yield
    expert_kernels.set_expert_kernel("auto")
    expert_kernels.TUNER.reset()


@pytest.fixture(autouse=True)
def no_leaked_threads_or_timers(request):
    """Fail a test that leaves a training thread, a Python thread, or an active timer
    in a live top-level widget behind. Tests that start training must shut it down
    (``TrainingController.shutdown``) and close or delete their widgets."""
    before = {t.ident for t in threading.enumerate()}
    yield
    # pytest-qt has already closed and deleteLater()'d widgets registered with qtbot.
    _flush_qt()
    problems: list[str] = []

    deadline = time.monotonic() + _GRACE_S
    ctrls = _running_controllers()
    while ctrls and time.monotonic() < deadline:
        _flush_qt()
        time.sleep(0.02)
        ctrls = _running_controllers()
    for c in ctrls:
        problems.append(f"TrainingController still running (state {c.state!r}): "
                        f"call shutdown() before the test ends")
        c.shutdown(10_000)  # don't let one leak break the tests after it

    def new_threads():
        # _DummyThread: a thread started outside `threading` (a QThread) that ran Python;
        # CPython keeps that record forever, so it says nothing about the thread itself.
        # Training QThreads are covered by the controller check above.
        return [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
                and not isinstance(t, threading._DummyThread)]

    left = new_threads()
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = new_threads()
    problems += [f"thread left running: {t.name!r} (daemon={t.daemon})" for t in left]

    timers = _active_timers()
    problems += [f"active timer in a live top-level widget: {t}" for t in timers]
    from moe_studio.gui.gc_guard import collect_if_due
    collect_if_due()   # what CPython would have collected by now, in the main thread
    if problems:
        pytest.fail("leak check failed:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def panel(qtbot):
    """The setup form as the Experiment dock holds it (420 px wide), not shown."""
    from moe_studio.gui.panels.setup import SetupPanel
    p = SetupPanel()
    qtbot.addWidget(p)
    p.resize(420, 900)
    return p


@pytest.fixture
def make_dashboard(qtbot):
    """``make_dashboard(cls, runs=None, size=(1400, 900))``: a shown dashboard of class
    ``cls`` given ``runs`` (a list of run folders); stopped and closed after the test."""
    made = []

    def _make(cls, runs=None, size=(1400, 900)):
        d = cls()
        qtbot.addWidget(d)
        d.resize(*size)
        d.show()
        if runs is not None:
            d.set_runs(list(runs))
        made.append(d)
        return d

    yield _make
    for d in made:
        d.stop_follow()
        d.close()
