"""The desktop app under real signals (issue 19): SIGTERM or SIGINT to the app stops a
run in progress as the Stop button does (checkpoint, status *stopped*), closes the
window and exits with 128 + n; a second signal exits at once; SIGTERM to the whole
process group (systemd, a scheduler) ends the same way; no engine process is left
behind. The app is a real ``moe-studio-gui`` in a subprocess whose Train button is
clicked; a bad ``$MOE_STUDIO_*`` value or runs folder is one line, never a traceback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moe_studio.config import dumps
from moe_studio.store import open_run
from moe_studio.store.liveness import pid_alive

from tiny import tiny_config

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
ROOT = Path(__file__).resolve().parent.parent

_APP = """
import json, sys
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from moe_studio.gui import app as gui_app
app, window = gui_app.create_app(["moe-studio-gui", sys.argv[1], "--runs-dir", sys.argv[2],
                                  "--engine", "process"])
from PySide6.QtWidgets import QMessageBox
ctl = window.controller
ASK_FIRST = len(sys.argv) > 3   # close the window first: its question is open when signalled
def facts():
    print(json.dumps({"engine": ctl.engine_pid, "run_dir": ctl.run_dir}), flush=True)
def facts_once_asked():
    box = window.findChild(QMessageBox)
    if box is not None and box.isVisible():
        facts()
    else:
        QTimer.singleShot(50, facts_once_asked)
def on_progress(info):
    if info.step >= 3 and ctl.engine_pid:
        ctl.progress.disconnect(on_progress)
        if ASK_FIRST:
            QTimer.singleShot(0, facts_once_asked)   # runs inside the question's own loop
            QTimer.singleShot(0, window.close)
        else:
            facts()
ctl.progress.connect(on_progress)
QTimer.singleShot(0, lambda: QTest.mouseClick(window.train_button, Qt.MouseButton.LeftButton))
sys.exit(gui_app.run_event_loop(app, window))
"""


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen",
            "OMP_NUM_THREADS": "1", "XDG_CONFIG_HOME": str(tmp_path / "config")}


def _start_app(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    cfg = tiny_config("signals", data__batch_size=2, model__n_layers=1, model__d_model=16,
                      model__d_ff=32, moe__n_experts=2, moe__top_k=1, train__steps=100_000,
                      train__warmup_steps=1, train__eval_every=1000, train__eval_batches=1,
                      train__snapshot_every=1000)
    (tmp_path / "c.toml").write_text(dumps(cfg))
    app = subprocess.Popen([sys.executable, "-c", _APP, str(tmp_path / "c.toml"),
                            str(tmp_path / "runs"), *extra], env=_env(tmp_path), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = app.stdout.readline()
    if not line:
        app.kill()
        pytest.fail("the app did not start training: " + app.communicate()[1][-2000:])
    return app, json.loads(line)


def _finish(app: subprocess.Popen, facts: dict, timeout: float) -> tuple[int, str]:
    """The app's exit code and stderr; fails if the engine outlives the app by 60 s."""
    engine = facts["engine"]
    try:
        _out, err = app.communicate(timeout=timeout)
        deadline = time.monotonic() + 60
        while pid_alive(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(engine), "the engine process was left behind"
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
        if pid_alive(engine):
            os.kill(engine, signal.SIGKILL)
    return app.returncode, err


def _run_status(run_dir: str) -> str:
    with open_run(run_dir) as r:
        return r.status


def _assert_stopped_with_its_checkpoint(app: subprocess.Popen, facts: dict) -> None:
    """After a SIGTERM: the app exits 143 without a traceback, its run ends stopped with
    a checkpoint, and no engine is left behind."""
    code, err = _finish(app, facts, timeout=90)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    assert _run_status(facts["run_dir"]) == "stopped"
    assert list(Path(facts["run_dir"]).glob("checkpoint-*.pt"))


@pytest.mark.slow
def test_sigterm_to_the_app_stops_its_run_like_stop_and_exits_143(tmp_path):
    sig = signal.SIGTERM   # SIGINT first: the next test
    app, facts = _start_app(tmp_path)
    os.kill(app.pid, sig)
    code, err = _finish(app, facts, timeout=90)
    assert code == 128 + sig, err[-2000:]
    assert "Traceback" not in err and "stopping the run after this step" in err
    assert _run_status(facts["run_dir"]) == "stopped"
    assert list(Path(facts["run_dir"]).glob("checkpoint-*.pt"))


@pytest.mark.slow
def test_sigterm_while_the_close_question_is_open_stops_and_exits(tmp_path):
    """Closing the window while training asks "Stop and Close?"; a SIGTERM then (a
    logout, a scheduler) answers it: the run stops with its checkpoint and the app
    exits. Before, the run stopped but window and question stayed open for good: the
    question runs inside the window's close, which cannot close the window again."""
    app, facts = _start_app(tmp_path, "ask-first")
    os.kill(app.pid, signal.SIGTERM)
    _assert_stopped_with_its_checkpoint(app, facts)


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_leaves_no_engine(tmp_path):
    app, facts = _start_app(tmp_path)
    os.kill(app.pid, signal.SIGINT)
    time.sleep(0.05)
    t0 = time.monotonic()
    os.kill(app.pid, signal.SIGTERM)
    code, err = _finish(app, facts, timeout=90)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and "exiting now" in err
    # the engine had its stop command before the app went: it ends its step as asked
    assert _run_status(facts["run_dir"]) == "stopped"
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_stops_cleanly(tmp_path):
    """systemd and schedulers signal every process of the job: the engine and the app
    both get SIGTERM, and the run still ends stopped with its checkpoint."""
    app, facts = _start_app(tmp_path)
    os.killpg(app.pid, signal.SIGTERM)
    _assert_stopped_with_its_checkpoint(app, facts)


@pytest.mark.parametrize("var,value,expect", [
    ("MOE_STUDIO_RUNS", "~nosuchuser-moe/runs", "has no home folder"),
    ("MOE_STUDIO_RUNS", "/proc/moe-studio-runs", "cannot write there"),
    ("MOE_STUDIO_ENGINE", "fork", "MOE_STUDIO_ENGINE='fork': must be one of"),
])
def test_a_bad_variable_is_one_line_and_the_window_holds_train_back(var, value, expect,
                                                                    tmp_path):
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from moe_studio.gui import app as a; "
                           "app, w = a.create_app(['moe-studio-gui']); "
                           "print(w.train_action.isEnabled(), w.run_note.text())"],
                          env={**_env(tmp_path), var: value}, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("moe-studio-gui:")]
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    enabled, note = proc.stdout.split(" ", 1)
    assert enabled == "False" and expect in note and "runs can still be opened" in note


_IDLE_APP = """
import sys
from PySide6.QtCore import QTimer
from moe_studio.gui import app as gui_app
app, window = gui_app.create_app(["moe-studio-gui", "--runs-dir", sys.argv[1]])
QTimer.singleShot(0, lambda: print("ready", flush=True))
sys.exit(gui_app.run_event_loop(app, window))
"""


def test_sigint_to_an_idle_app_closes_it_without_a_traceback(tmp_path):
    """Ctrl+C in the terminal that started the app: it closes (it raised
    KeyboardInterrupt inside whatever slot ran next)."""
    app = subprocess.Popen([sys.executable, "-c", _IDLE_APP, str(tmp_path / "runs")],
                           env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        assert app.stdout.readline().strip() == "ready", app.communicate()[1][-2000:]
        os.kill(app.pid, signal.SIGINT)
        _out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    assert app.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "moe-studio-gui: SIGINT: closing" in err
