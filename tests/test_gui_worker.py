"""The GUI worker: start -> progress -> pause -> resume -> stop on a fake engine, the
failure path, progress throttling, one run with the real Trainer, and closing the main
window while training."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from moe_studio.config import ExperimentConfig, default  # noqa: E402
from moe_studio.engine.loop import ProgressInfo  # noqa: E402  (the fields of a StepInfo)
from moe_studio.gui.run.worker import TrainingController, running_controllers  # noqa: E402
from tiny import tiny_config  # noqa: E402


class FakeTrainer:
    """Follows the Trainer API (CONTRACTS.md) without torch: each step sleeps a little."""

    instances: list["FakeTrainer"] = []

    def __init__(self, config: ExperimentConfig, runs_dir, *, step_s: float = 0.004,
                 fail_at: int | None = None):
        self.config = config
        self.total_steps = config.train.steps
        self.step_count = 0
        self.device = "cpu"
        self.run_dir = Path(runs_dir) / f"fake-{len(FakeTrainer.instances)}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = self.run_dir.name
        self.step_s, self.fail_at = step_s, fail_at
        self.closed: tuple[str, str | None] | None = None
        self.step_threads: set[int] = set()
        self.init_thread = threading.get_ident()
        FakeTrainer.instances.append(self)

    @property
    def done(self) -> bool:
        return self.step_count >= self.total_steps

    def step(self) -> ProgressInfo:
        assert self.closed is None, "step() after close()"
        self.step_threads.add(threading.get_ident())
        if self.fail_at is not None and self.step_count + 1 == self.fail_at:
            raise FloatingPointError("boom: non-finite loss")
        time.sleep(self.step_s)
        self.step_count += 1
        return ProgressInfo(self.step_count, self.total_steps, 2.0, 1e-3, 1000.0,
                            (self.total_steps - self.step_count) * self.step_s)

    def close(self, status: str = "finished", error: str | None = None) -> None:
        if self.closed is None:
            self.closed = (status, error)


def cfg_steps(n: int) -> ExperimentConfig:
    c = default()
    c.train.steps = n
    c.train.warmup_steps = 0
    return c


@pytest.fixture
def fakes():
    FakeTrainer.instances = []
    yield FakeTrainer.instances
    FakeTrainer.instances = []


@pytest.fixture
def controller(qtbot, fakes):
    made = []

    def make(**kw):
        c = TrainingController(trainer_factory=kw.pop("factory", None) or
                               (lambda cfg, d: FakeTrainer(cfg, d, **kw)))
        made.append(c)
        return c

    yield make
    for c in made:
        assert c.shutdown(10_000)


def test_start_progress_pause_resume_stop(qtbot, controller, fakes, tmp_path):
    c = controller(step_s=0.005)
    states: list[str] = []
    c.stateChanged.connect(states.append)
    main_thread = threading.get_ident()

    with qtbot.waitSignal(c.started, timeout=5000) as started:
        c.start(cfg_steps(100_000), tmp_path)
    assert c.busy and c.state in ("starting", "running")
    trainer = fakes[0]
    assert started.args == [str(trainer.run_dir)]
    assert trainer.init_thread != main_thread  # heavy construction happens off the GUI thread
    assert c.device == "cpu" and c.total_steps == 100_000

    with qtbot.waitSignal(c.progress, timeout=5000) as prog:
        pass
    info = prog.args[0]
    assert info.step >= 1 and info.total_steps == 100_000

    with qtbot.waitSignal(c.stateChanged, timeout=5000, check_params_cb=lambda s: s == "paused"):
        c.pause()
    assert c.paused
    n = trainer.step_count
    qtbot.wait(150)
    assert trainer.step_count == n, "steps continued while paused"
    # The last progress before the pause is the step it paused at.
    assert c.last_info.step == n

    with qtbot.waitSignal(c.stateChanged, timeout=5000, check_params_cb=lambda s: s == "running"):
        c.resume()
    qtbot.waitUntil(lambda: trainer.step_count > n, timeout=5000)

    with qtbot.waitSignal(c.finished, timeout=5000) as fin:
        c.stop()
    assert fin.args == ["stopped"]
    assert trainer.closed == ("stopped", None)
    assert not c.busy and c.state == "stopped"
    assert main_thread not in trainer.step_threads
    assert states[:2] == ["starting", "running"]
    assert "paused" in states and states[-2:] == ["stopping", "stopped"]
    assert running_controllers() == []


def test_runs_to_completion_and_can_start_again(qtbot, controller, fakes, tmp_path):
    c = controller(step_s=0.0)
    for _ in range(2):
        with qtbot.waitSignal(c.finished, timeout=5000) as fin:
            c.start(cfg_steps(30), tmp_path)
        assert fin.args == ["finished"]
        assert c.state == "finished" and not c.busy
        assert c.last_info.step == 30  # the final step always arrives
    assert [t.closed for t in fakes] == [("finished", None)] * 2


def test_start_while_busy_is_refused(qtbot, controller, tmp_path):
    c = controller(step_s=0.01)
    with qtbot.waitSignal(c.started, timeout=5000):
        c.start(cfg_steps(100_000), tmp_path)
    with pytest.raises(RuntimeError):
        c.start(cfg_steps(10), tmp_path)
    assert c.shutdown(5000)
    assert c.state == "stopped"


def test_progress_is_throttled(qtbot, controller, fakes, tmp_path):
    c = controller(step_s=0.0)
    emitted = []
    c.progress.connect(lambda info: emitted.append(time.monotonic()))
    t0 = time.monotonic()
    with qtbot.waitSignal(c.finished, timeout=20_000):
        c.start(cfg_steps(3000), tmp_path)
    elapsed = time.monotonic() - t0
    assert fakes[0].step_count == 3000
    # <= 20 per second, plus the final step that is always sent.
    assert len(emitted) <= 20 * elapsed + 2, (len(emitted), elapsed)
    assert c.last_info.step == 3000


def test_stop_while_paused(qtbot, controller, fakes, tmp_path):
    c = controller(step_s=0.002)
    with qtbot.waitSignal(c.stateChanged, timeout=5000, check_params_cb=lambda s: s == "paused"):
        c.start(cfg_steps(100_000), tmp_path)
        c.pause()  # before the trainer even exists: it pauses before the first step
    with qtbot.waitSignal(c.finished, timeout=5000) as fin:
        c.stop()
    assert fin.args == ["stopped"]
    assert fakes[0].closed[0] == "stopped"


def test_failure_in_step_marks_run_failed_and_controller_is_ready(qtbot, controller, fakes,
                                                                   tmp_path):
    calls = {"n": 0}

    def factory(cfg, d):
        calls["n"] += 1
        return FakeTrainer(cfg, d, step_s=0.0, fail_at=3 if calls["n"] == 1 else None)

    c = controller(factory=factory)
    failures = []
    c.failed.connect(lambda msg, tb: failures.append((msg, tb)))
    with qtbot.waitSignal(c.finished, timeout=5000) as fin:
        c.start(cfg_steps(50), tmp_path)
    assert fin.args == ["failed"]
    assert c.state == "failed" and not c.busy
    (msg, tb), = failures
    assert "in step 3" in msg and "FloatingPointError" in msg and "boom" in msg
    assert "Traceback" in tb and "FloatingPointError: boom" in tb
    status, error = fakes[0].closed
    assert status == "failed" and "FloatingPointError" in error  # the run keeps the traceback

    # Ready for the next run.
    with qtbot.waitSignal(c.finished, timeout=5000) as fin:
        c.start(cfg_steps(5), tmp_path)
    assert fin.args == ["finished"]
    assert fakes[1].closed == ("finished", None)


def test_failure_while_building_the_trainer(qtbot, controller, tmp_path):
    def factory(cfg, d):
        raise FileNotFoundError("corpus folder /nope does not exist")

    c = controller(factory=factory)
    failures = []
    c.failed.connect(lambda msg, tb: failures.append((msg, tb)))
    with qtbot.waitSignal(c.finished, timeout=5000):
        c.start(cfg_steps(5), tmp_path)
    (msg, tb), = failures
    assert msg.startswith("The run could not start") and "/nope" in msg
    assert "FileNotFoundError" in tb
    assert c.state == "failed" and not c.busy and c.run_dir == ""


def test_failure_in_close_still_reports(qtbot, controller, fakes, tmp_path):
    class BadClose(FakeTrainer):
        def close(self, status="finished", error=None):
            super().close(status, error)
            if status == "finished":
                raise OSError("disk full")

    c = controller(factory=lambda cfg, d: BadClose(cfg, d, step_s=0.0))
    failures = []
    c.failed.connect(lambda msg, tb: failures.append((msg, tb)))
    with qtbot.waitSignal(c.finished, timeout=5000) as fin:
        c.start(cfg_steps(3), tmp_path)
    (msg, tb), = failures
    assert "disk full" in msg
    assert fin.args == ["failed"]


def test_real_trainer_tiny_run(qtbot, tmp_path):
    pytest.importorskip("torch")
    store = pytest.importorskip("moe_studio.store")
    if not hasattr(store, "open_run"):
        pytest.skip("run store not available yet")
    c = gui_tiny(4)
    ctl = TrainingController()
    try:
        with qtbot.waitSignal(ctl.finished, timeout=120_000) as fin:
            ctl.start(c, tmp_path)
        assert fin.args == ["finished"], ctl.state
        assert ctl.last_info.step == 4 and ctl.device == "cpu"
        run = store.open_run(ctl.run_dir)
        assert run.status == "finished"
        assert 4 in set(run.scalars()["step"])
    finally:
        assert ctl.shutdown(30_000)


# ---------------------------------------------------------------- main window

@pytest.fixture
def window(qtbot, tmp_path, fakes):
    from moe_studio.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs",
                   trainer_factory=lambda cfg, d: FakeTrainer(cfg, d, step_s=0.005))
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.controller.shutdown(10_000)


def test_train_actions_follow_validity_and_state(qtbot, window, fakes):
    w = window
    panel = w.setup_panel
    assert w.train_action.isEnabled() and not w.stop_action.isEnabled()
    panel.field_widget("moe.top_k").setValue(9)
    assert not w.train_action.isEnabled() and not w.train_button.isEnabled()
    panel.field_widget("moe.top_k").setValue(2)
    assert w.train_action.isEnabled()
    panel.field_widget("train.steps").setValue(100_000)
    panel.field_widget("train.warmup_steps").setValue(0)

    with qtbot.waitSignal(w.controller.started, timeout=5000):
        w.train_action.trigger()
    assert not w.train_action.isEnabled() and w.stop_action.isEnabled()
    qtbot.waitUntil(lambda: w.progress_bar.value() > 0, timeout=5000)
    assert w.progress_bar.maximum() == 100_000
    assert "cpu" in w.device_label.text()
    with qtbot.waitSignal(w.controller.stateChanged, timeout=5000,
                          check_params_cb=lambda s: s == "paused"):
        w.pause_action.trigger()
    assert w.pause_action.text().replace("&", "") == "Resume"
    with qtbot.waitSignal(w.controller.finished, timeout=5000):
        w.stop_action.trigger()
    assert w.train_action.isEnabled() and not w.stop_action.isEnabled()
    assert "stopped" in w.state_label.text().lower()


def test_failure_shows_error_dialog_and_app_keeps_running(qtbot, tmp_path, fakes):
    from PySide6.QtWidgets import QMessageBox
    from moe_studio.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs",
                   trainer_factory=lambda cfg, d: FakeTrainer(cfg, d, step_s=0.0, fail_at=2))
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.controller.finished, timeout=5000):
        w.train_action.trigger()
    box = w.findChild(QMessageBox, "trainingErrorBox")
    assert box is not None and box.isVisible()
    assert "boom" in box.text() and "Traceback" in box.detailedText()
    assert fakes[0].closed[0] == "failed"
    assert w.train_action.isEnabled()
    box.close()


def test_closing_while_training_stops_and_joins(qtbot, window, fakes, monkeypatch):
    w = window
    w.setup_panel.field_widget("train.steps").setValue(100_000)
    with qtbot.waitSignal(w.controller.started, timeout=5000):
        w.train_action.trigger()
    qtbot.waitUntil(lambda: fakes[0].step_count > 2, timeout=5000)

    asked = []
    monkeypatch.setattr(w, "confirm_stop_and_close", lambda: asked.append(1) or False)
    w.close()  # Cancel: keeps training
    assert asked and w.isVisible() and w.controller.busy

    monkeypatch.setattr(w, "confirm_stop_and_close", lambda: True)
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
    assert not w.controller.busy
    assert fakes[0].closed[0] == "stopped"
    assert running_controllers() == []


def test_a_run_that_ends_while_the_close_question_is_open_closes_as_answered(
        qtbot, window, fakes, monkeypatch):
    """The run ends (here: is stopped and joined) while "Stop and Close?" is still on
    screen; the answer then closes the window at once. Before, the window stayed open:
    the close asked from inside the close in progress was ignored."""
    w = window
    w.setup_panel.field_widget("train.steps").setValue(100_000)
    with qtbot.waitSignal(w.controller.started, timeout=5000):
        w.train_action.trigger()
    qtbot.waitUntil(lambda: fakes[0].step_count > 2, timeout=5000)

    def run_ends_then_yes():
        w.controller.stop()
        qtbot.waitUntil(lambda: not w.controller.busy, timeout=10_000)
        return True

    monkeypatch.setattr(w, "confirm_stop_and_close", run_ends_then_yes)
    w.close()
    assert not w.isVisible()
    assert fakes[0].closed[0] == "stopped"
    assert running_controllers() == []


# ---------------------------------------------------------------- runs and export

def make_run(runs_dir: Path, name: str = "demo", steps: int = 5) -> Path:
    from moe_studio.config import dumps, to_dict
    from moe_studio.store import RunWriter
    cfg = default()
    cfg.name = name
    w = RunWriter.create(runs_dir, name=name, config=to_dict(cfg), config_toml=dumps(cfg))
    for s in range(1, steps + 1):
        w.add_scalars(s, {"train/loss": 3.0 - 0.1 * s}, member=0)
        w.add_scalars(s, {"lr": 1e-3, "tokens_per_s": 1000.0, "tokens": 768.0 * s}, member=-1)
    w.close("finished")
    return Path(w.run_dir)


def test_open_run_shows_it_and_export_runs_in_background(qtbot, window, tmp_path):
    run = make_run(tmp_path / "runs")
    w = window
    assert not w.export_action.isEnabled()  # nothing shown yet
    assert w.open_run_path(run)
    assert w.dashboards[0].runs() == [run]
    assert "Opened run demo (finished)" in w.statusBar().currentMessage()
    assert w.export_action.isEnabled()

    out = tmp_path / "export"
    with qtbot.waitSignal(w.export_task.finished, timeout=20_000):
        w.export_run_to(run, "csv", out)
        assert w.export_task.busy and not w.export_action.isEnabled()
    assert (out / "scalars.csv").exists() and (out / "run.json").exists()
    assert "Exported" in w.statusBar().currentMessage()
    assert w.export_action.isEnabled()


def test_export_weights_from_the_dialog(qtbot, window, tmp_path):
    """Export… on a run with weights: choose the safetensors format with the keyboard,
    type the folder, press Export; the weights come out of an engine process (torch
    never loads into the window's) equal to the run's own. A run without weights
    offers no safetensors."""
    from PySide6.QtCore import Qt, QTimer
    import torch
    from safetensors.torch import load_file

    from moe_studio.gui.widgets.export_dialog import ExportDialog
    from moe_studio.paths import sample_runs_dir

    w = window
    run = sample_runs_dir() / "moe-top2"
    out = tmp_path / "weights"
    seen = {}

    def fill():
        dlg = w.findChild(ExportDialog)
        if dlg is None or not dlg.isVisible():
            QTimer.singleShot(20, fill)
            return
        combo = dlg.format_combo
        combo.setFocus()
        for _ in range(combo.count()):
            if combo.currentData() == "safetensors":
                break
            qtbot.keyClick(combo, Qt.Key.Key_Down)
        seen["fmt"] = dlg.fmt()
        dlg.folder_edit.selectAll()
        qtbot.keyClicks(dlg.folder_edit, str(out))
        qtbot.mouseClick(dlg.export_button, Qt.MouseButton.LeftButton)

    assert w.open_run_path(run)
    QTimer.singleShot(0, fill)
    with qtbot.waitSignal(w.export_task.finished, timeout=120_000):
        w.export_action.trigger()
    assert seen["fmt"] == "safetensors"
    assert f"Exported 2 files to {out}" in w.statusBar().currentMessage()
    got, shipped = load_file(out / "weights.safetensors"), load_file(run / "weights.safetensors")
    assert got.keys() == shipped.keys() and all(k.startswith("member0.") for k in got)
    for k in got:      # full precision of the shipped fp16 values
        assert got[k].dtype == torch.float32 and torch.equal(got[k], shipped[k].float()), k
    assert (out / "config.toml").read_text() == (run / "config.toml").read_text()

    d = ExportDialog(sample_runs_dir() / "dense-baseline", "dense-baseline", tmp_path)
    qtbot.addWidget(d)
    i = d.format_combo.findData("safetensors")
    assert not d.format_combo.model().item(i).isEnabled()
    assert "kept no weights" in d.format_combo.itemText(i)


def test_export_failure_is_reported(qtbot, window, tmp_path):
    from PySide6.QtWidgets import QMessageBox
    w = window
    with qtbot.waitSignal(w.export_task.finished, timeout=10_000):
        w.export_run_to(tmp_path / "not-a-run", "csv", tmp_path / "out")
    box = w.findChild(QMessageBox, "exportErrorBox")
    assert box is not None and "not-a-run" in box.text()
    box.close()


def test_closing_during_export_waits_for_it(qtbot, window, tmp_path, monkeypatch):
    import moe_studio.gui.main_window as mw
    release = threading.Event()

    def slow_export(path, fmt, out):
        release.wait(5)
        return []

    monkeypatch.setattr(mw, "export_run", slow_export)
    w = window
    w.export_run_to(tmp_path, "csv", tmp_path / "out")
    w.close()
    assert w.isVisible()  # waits for the export instead of blocking or abandoning it
    release.set()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=5000)
    assert not w.export_task.busy


def test_runs_checked_are_overlaid(qtbot, window, tmp_path):
    a, b = make_run(tmp_path / "runs", "a"), make_run(tmp_path / "runs", "b")
    window.runs_panel.runsChecked.emit([str(a), str(b)])
    assert window.dashboards[0].runs() == [a, b]
    window.runs_panel.runsChecked.emit([])  # unchecking all keeps the view
    assert window.dashboards[0].runs() == [a, b]


# ---------------------------------------------------------------- engine modes

def gui_tiny(steps: int = 4, name: str = "gui-tiny") -> ExperimentConfig:
    """1 layer, 2 experts top-1, no probe snapshots: keeps these tests quick."""
    every = max(4, min(steps, 1000))
    return tiny_config(name, data__batch_size=2, model__n_layers=1, model__d_model=16,
                       model__d_ff=32, moe__n_experts=2, moe__top_k=1, train__steps=steps,
                       train__warmup_steps=1, train__eval_every=every, train__eval_batches=1,
                       train__snapshot_every=every, train__collect_stats=False)


def test_mode_selection(monkeypatch):
    from moe_studio.gui.run import worker
    monkeypatch.delenv("MOE_STUDIO_ENGINE", raising=False)
    assert TrainingController().mode == worker.DEFAULT_MODE == "process"
    assert TrainingController(trainer_factory=lambda c, d: None).mode == "thread"
    assert TrainingController(mode="thread").mode == "thread"
    monkeypatch.setenv("MOE_STUDIO_ENGINE", "thread")
    assert TrainingController().mode == "thread"
    with pytest.raises(ValueError):
        TrainingController(mode="fork")
    with pytest.raises(ValueError):
        TrainingController(trainer_factory=lambda c, d: None, mode="process")


def test_engine_threads_leave_a_core_for_the_gui(monkeypatch):
    from moe_studio.engine.loop import gui_engine_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert gui_engine_threads() == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert gui_engine_threads() == 7
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert gui_engine_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
    assert gui_engine_threads() is None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["process", "thread"])
def test_real_engine_pause_resume_stop(qtbot, tmp_path, mode):
    pytest.importorskip("torch")
    from moe_studio.store import open_run
    ctl = TrainingController(mode=mode)
    states: list[str] = []
    ctl.stateChanged.connect(states.append)
    try:
        with qtbot.waitSignal(ctl.started, timeout=120_000):
            ctl.start(gui_tiny(100_000, name=f"gui-{mode}"), tmp_path)
        assert (ctl.engine_pid is not None) == (mode == "process")
        qtbot.waitUntil(lambda: ctl.last_info is not None and ctl.last_info.step >= 3,
                        timeout=60_000)
        with qtbot.waitSignal(ctl.stateChanged, timeout=30_000,
                              check_params_cb=lambda s: s == "paused"):
            ctl.pause()
        at = ctl.last_info.step
        qtbot.wait(300)
        assert ctl.last_info.step == at  # the step it paused at, and no further
        with qtbot.waitSignal(ctl.stateChanged, timeout=30_000,
                              check_params_cb=lambda s: s == "running"):
            ctl.resume()
        qtbot.waitUntil(lambda: ctl.last_info.step > at, timeout=60_000)
        with qtbot.waitSignal(ctl.finished, timeout=60_000) as fin:
            ctl.stop()
        assert fin.args == ["stopped"] and ctl.state == "stopped" and not ctl.busy
        assert ctl.engine_pid is None
        assert states[:2] == ["starting", "running"] and "paused" in states
        run = open_run(ctl.run_dir)
        try:
            assert run.status == "stopped"
            assert run.last_step() >= ctl.last_info.step > at
        finally:
            run.close()
        assert list(Path(ctl.run_dir).glob("checkpoint-*.pt"))
    finally:
        assert ctl.shutdown(60_000)


@pytest.mark.slow
def test_process_mode_reports_a_config_the_engine_rejects(qtbot, tmp_path):
    c = gui_tiny(4)
    c.data.corpus = str(tmp_path / "no-such-corpus")
    ctl = TrainingController(mode="process")
    failures = []
    ctl.failed.connect(lambda msg, tb: failures.append((msg, tb)))
    try:
        with qtbot.waitSignal(ctl.finished, timeout=120_000) as fin:
            ctl.start(c, tmp_path / "runs")
        assert fin.args == ["failed"] and ctl.run_dir == ""
        (msg, tb), = failures
        assert msg.startswith("The run could not start") and "no-such-corpus" in msg
        assert "Traceback" in tb
    finally:
        assert ctl.shutdown(30_000)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="POSIX only")
def test_process_mode_survives_the_engine_dying(qtbot, tmp_path):
    import os
    import signal
    from moe_studio.store import open_run
    ctl = TrainingController(mode="process")
    failures = []
    ctl.failed.connect(lambda msg, tb: failures.append(msg))
    try:
        with qtbot.waitSignal(ctl.started, timeout=120_000):
            ctl.start(gui_tiny(100_000), tmp_path)
        qtbot.waitUntil(lambda: ctl.last_info is not None, timeout=60_000)
        with qtbot.waitSignal(ctl.finished, timeout=30_000) as fin:
            os.kill(ctl.engine_pid, signal.SIGKILL)
        assert fin.args == ["failed"] and ctl.state == "failed" and not ctl.busy
        assert failures and "ended unexpectedly" in failures[0] and "signal 9" in failures[0]
        run = open_run(ctl.run_dir)
        try:
            assert run.status == "interrupted"  # the store's liveness check, as for any crash
        finally:
            run.close()
        # The app is fine and can train again.
        with qtbot.waitSignal(ctl.finished, timeout=120_000) as fin:
            ctl.start(gui_tiny(3), tmp_path)
        assert fin.args == ["finished"]
    finally:
        assert ctl.shutdown(30_000)


@pytest.mark.slow
def test_engine_process_stops_cleanly_when_the_app_goes(tmp_path):
    """The child's stdin closing without a "stop" (the app crashed or was killed):
    finish the step, checkpoint, and leave the run reading interrupted (nobody stopped
    it: issue 13, defect 8); no orphan keeps training."""
    import json
    import subprocess
    from moe_studio.config import to_dict
    from moe_studio.gui.run.worker import _child_command
    from moe_studio.store import open_run
    cmd, env = _child_command()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        proc.stdin.write(json.dumps({"config": to_dict(gui_tiny(100_000)),
                                     "runs_dir": str(tmp_path), "threads": 1}) + "\n")
        proc.stdin.flush()
        kinds = []
        for line in proc.stdout:
            kind, args = json.loads(line)
            kinds.append(kind)
            if kind == "ready":
                run_dir = args[0]["run_dir"]
            if kind == "progress":
                break
        proc.stdin.close()  # the app is gone
        rest = [json.loads(line) for line in proc.stdout]
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert kinds[:2] == ["ready", "state"]
    assert rest[-1] == ["done", ["interrupted"]]
    run = open_run(run_dir)
    try:
        assert run.status == "interrupted"
    finally:
        run.close()
    assert list(Path(run_dir).glob("checkpoint-*.pt"))  # the work is kept to continue from


_APP_SCRIPT = """
import json, sys
from PySide6.QtCore import QCoreApplication
from moe_studio.config import from_dict
from moe_studio.gui.run.worker import TrainingController
app = QCoreApplication([])
ctl = TrainingController(mode="process")
def on_progress(info):
    if info.step >= 2 and ctl.engine_pid:
        print(json.dumps({"engine": ctl.engine_pid, "run_dir": ctl.run_dir}), flush=True)
        ctl.progress.disconnect(on_progress)
ctl.progress.connect(on_progress)
ctl.start(from_dict(json.loads(sys.argv[1])), sys.argv[2])
app.exec()
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="POSIX only")
def test_killing_the_app_leaves_its_run_interrupted_not_stopped(tmp_path):
    """``kill -9`` of a process that trains through the controller (the app, less its
    window): its run must read interrupted, as a killed headless run does."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from moe_studio.config import to_dict
    from moe_studio.gui.run.worker import _child_command
    from moe_studio.store import open_run
    from moe_studio.store.liveness import pid_alive
    _, env = _child_command()
    env["QT_QPA_PLATFORM"] = "offscreen"
    app = subprocess.Popen([sys.executable, "-c", _APP_SCRIPT,
                            json.dumps(to_dict(gui_tiny(100_000))), str(tmp_path)],
                           env=env, stdout=subprocess.PIPE, text=True)
    engine = None
    try:
        facts = json.loads(app.stdout.readline())
        engine = facts["engine"]
        os.kill(app.pid, signal.SIGKILL)
        app.wait(10)
        deadline = time.monotonic() + 60
        while pid_alive(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(engine), "the engine kept training after the app was killed"
    finally:
        if app.poll() is None:
            app.kill()
        app.stdout.close()
        if engine is not None and pid_alive(engine):
            os.kill(engine, signal.SIGKILL)
    run = open_run(facts["run_dir"])
    try:
        assert run.status == "interrupted"
    finally:
        run.close()
    assert list(Path(facts["run_dir"]).glob("checkpoint-*.pt"))


def test_format_eta_reads_as_a_duration():
    from moe_studio.gui.formats import format_eta
    assert [format_eta(x) for x in (None, float("nan"), 45, 245, 1229, 3725)] == \
        ["—", "—", "45 s", "4 min 05 s", "20 min", "1 h 02 min"]


def test_first_look_and_run_note(qtbot, window, fakes):
    w = window
    assert not w.toolbar.isVisible()          # one set of Train buttons on first start
    assert not w.run_note.isVisible()
    w.setup_panel.field_widget("moe.top_k").setValue(9)
    assert w.run_note.isVisible() and "Fix the 1 problem above" in w.run_note.text()
    w.setup_panel.field_widget("moe.top_k").setValue(2)
    assert not w.run_note.isVisible()
    w.setup_panel.field_widget("train.steps").setValue(100_000)
    with qtbot.waitSignal(w.controller.started, timeout=5000):
        w.train_action.trigger()
    assert w.run_note.isVisible() and "apply to the next run" in w.run_note.text()
    with qtbot.waitSignal(w.controller.finished, timeout=5000):
        w.stop_action.trigger()
    assert not w.run_note.isVisible()


@pytest.mark.slow
def test_bench_gui_quick(qtbot):
    """``moe-studio bench gui --quick``: the whole measurement runs and reports every
    number the budgets need (their values depend on the machine)."""
    pytest.importorskip("torch")
    from moe_studio.bench import gui as bench
    # 80 steps: with the presets' monitor rates a default step is fast enough that 30
    # steps ended before the Training view had drawn one frame of the live run
    r = bench.run(json_out=True, quick=True, steps=80)
    assert r["status"] == "finished" and r["steps_done"] == 80
    assert r["engine_mode"] == "process"
    # the event-loop probe ran through the run (how often depends on how long the short
    # run took on a loaded machine: 50 on one CI run with both cores busy)
    assert r["probes"] >= 10 and 0 <= r["stall_ms"]["p50"] <= r["stall_ms"]["p99"] <= r["stall_ms"]["max"]
    assert r["refresh_per_s"] > 0 and r["polls_per_s"] > 0
    mem = r["memory_mb"]
    assert mem["early"]["step"] >= 10 and mem["last"]["step"] == 80
    assert mem["last"]["engine_mb"] > 0  # the engine process was measured too
    assert 0.5 < r["memory_ratio_last_vs_early"] < 2.0
    assert set(r["budgets"]) == {"stall_p99 <= 20 ms", "stall_max <= 100 ms", "refresh >= 20 /s",
                                 "memory within 10 %"}
    # view switches by tab clicks from half-way: timed, first openings apart
    sw = r["view_switch_ms"]
    assert sw["from_step"] == 40 and sw["views"] == 7
    assert sw["n"] + sw["first_open_n"] >= 1 and sw["first_open_n"] <= 6
    if sw["n"]:
        assert 0 < sw["p50"] <= sw["p95"] <= sw["max"]
    assert r["view_switch_p95 <= 150 ms"] == (sw["n"] > 0 and sw["p95"] <= 150)


def test_window_follows_a_headless_run_of_another_process(qtbot, window, tmp_path):
    """A `moe-studio train` in another process appears in the runs panel; opened, the
    training view grows with it while it runs and shows its end."""
    import subprocess
    import sys
    from moe_studio.config import dumps
    cfg = gui_tiny(400, name="headless")
    cfg.train.log_every = 1
    (tmp_path / "headless.toml").write_text(dumps(cfg))
    window.runs_panel.set_auto_rescan(True, interval_ms=100)
    proc = subprocess.Popen([sys.executable, "-m", "moe_studio", "train", "headless.toml",
                             "--out", str(tmp_path / "runs")], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        qtbot.waitUntil(lambda: any(r.name == "headless" for r in window.runs_panel.runs(0)),
                        timeout=60_000)
        run = next(r for r in window.runs_panel.runs(0) if r.name == "headless")
        assert window.open_run_path(run.path)
        from moe_studio.gui.views.training import series_key
        loss, key = window.dashboards[0].plot("loss"), series_key(0, "train/loss", 0)
        qtbot.waitUntil(lambda: key in loss.series_keys(), timeout=60_000)
        first = len(loss.series_data(key)[0])
        if proc.poll() is None:   # still training: the open view grows with it
            qtbot.waitUntil(lambda: len(loss.series_data(key)[0]) > first, timeout=60_000)
        assert proc.wait(180) == 0, proc.stderr.read()
        # The run finished in the other process: the view caught up with all its steps.
        qtbot.waitUntil(lambda: len(loss.series_data(key)[0]) == 400, timeout=20_000)
        qtbot.waitUntil(lambda: "finished" in window.dashboards[0].status_text(), timeout=20_000)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        window.runs_panel.set_auto_rescan(False)


def test_background_task_frees_its_worker_and_thread(qtbot):
    """The worker QObject stays in its thread to the end (moving it back to the GUI
    thread from there could deadlock with the GUI thread deleting objects); the GUI
    thread frees it and the QThread once the thread is joined."""
    import shiboken6

    from moe_studio.gui.run.tasks import BackgroundTask
    task = BackgroundTask(name="free-test")
    got = []
    task.succeeded.connect(got.append)
    with qtbot.waitSignal(task.finished, timeout=10_000):
        task.start(lambda: 42)
        worker, thread = task._worker, task._thread
    assert got == [42] and not task.busy
    assert not shiboken6.isValid(worker)          # deleted, not leaked
    qtbot.waitUntil(lambda: not shiboken6.isValid(thread), timeout=5_000)
    task.deleteLater()


def test_a_thread_that_outlives_its_join_is_kept_until_it_ends(qtbot):
    """A join that timed out must not drop the last reference to a running QThread (Qt
    aborts the process when one is destroyed while running); it is freed later."""
    import shiboken6
    from PySide6.QtCore import QThread

    from moe_studio.gui.run import tasks as wk
    release = threading.Event()

    class Slow(QThread):
        def run(self):
            release.wait(10)

    t = Slow()
    t.start()
    wk.release_worker(None, t)
    del t
    assert len(wk._lingering) == 1
    held = wk._lingering[0][1]
    assert held.isRunning()
    release.set()
    assert held.wait(5000)
    wk.release_worker(None, None)           # the next release frees what has ended
    assert wk._lingering == []
    qtbot.waitUntil(lambda: not shiboken6.isValid(held), timeout=5000)
