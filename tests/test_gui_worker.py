"""The GUI worker: start -> progress -> pause -> resume -> stop on a fake engine, the
failure path, progress throttling, one run with the real Trainer, and closing the main
window while training."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from moe_studio.config import ExperimentConfig, default  # noqa: E402
from moe_studio.gui.worker import TrainingController, running_controllers  # noqa: E402


@dataclass
class FakeStepInfo:
    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_per_s: float
    eta_s: float
    val_loss: float | None = None


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

    def step(self) -> FakeStepInfo:
        assert self.closed is None, "step() after close()"
        self.step_threads.add(threading.get_ident())
        if self.fail_at is not None and self.step_count + 1 == self.fail_at:
            raise FloatingPointError("boom: non-finite loss")
        time.sleep(self.step_s)
        self.step_count += 1
        return FakeStepInfo(self.step_count, self.total_steps, 2.0, 1e-3, 1000.0,
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
    c = ExperimentConfig(name="gui-tiny")
    c.data.context = 16
    c.data.batch_size = 2
    c.model.n_layers = 1
    c.model.d_model = 16
    c.model.n_heads = 2
    c.model.d_ff = 32
    c.moe.n_experts = 2
    c.moe.top_k = 1
    c.train.steps = 4
    c.train.warmup_steps = 1
    c.train.eval_every = 4
    c.train.eval_batches = 1
    c.train.snapshot_every = 4
    c.train.device = "cpu"
    c.train.collect_stats = False  # no probe snapshots: keeps this test quick
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
