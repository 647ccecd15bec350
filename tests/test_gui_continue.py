"""Continue from the runs panel as a user does it: right-click a stopped run, choose
Continue…, read what will be redone, set the steps, press Continue; the run trains on in
its own folder and the training view shows one history."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("torch")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtGui import QContextMenuEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QMenu  # noqa: E402

from moe_studio.engine.trainer import Trainer  # noqa: E402
from moe_studio.gui.panels.continue_dialog import ContinueDialog  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

from tiny import tiny_config  # noqa: E402


def _stopped_run(runs, steps=10, stop_after=7, checkpoint_every=4):
    cfg = tiny_config("cont", data__batch_size=2, model__n_layers=1, model__d_model=16,
                      model__d_ff=32, moe__n_experts=2, moe__top_k=1, train__steps=steps,
                      train__warmup_steps=1, train__eval_every=5, train__eval_batches=1,
                      train__snapshot_every=5, train__checkpoint_every=checkpoint_every)
    tr = Trainer(cfg, runs_dir=runs)
    while tr.step_count < stop_after:
        tr.step()
    tr.close("stopped", checkpoint=False)   # newest checkpoint: step 4; steps 5-7 redone
    return tr.run_dir


@pytest.fixture
def window(qtbot, tmp_path):
    from moe_studio.gui.main_window import MainWindow
    from moe_studio.gui.run.worker import _engine_trainer
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs", trainer_factory=_engine_trainer)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.controller.shutdown(30_000)


def _context_menu_on(qtbot, panel, path) -> QMenu:
    panel.rescan()
    assert panel.wait_for_scan()
    qtbot.waitUntil(lambda: panel.select_run(path), timeout=5000)
    view = panel.view()
    rect = view.visualRect(view.currentIndex())
    pos = rect.center()
    # the event a right click (or the menu key) delivers to the list
    QApplication.sendEvent(view.viewport(), QContextMenuEvent(
        QContextMenuEvent.Reason.Mouse, pos, view.viewport().mapToGlobal(pos)))
    qtbot.waitUntil(lambda: isinstance(QApplication.activePopupWidget(), QMenu), timeout=5000)
    return QApplication.activePopupWidget()


def _click_action(qtbot, menu: QMenu, object_name: str) -> None:
    act = next(a for a in menu.actions() if a.objectName() == object_name)
    qtbot.mouseClick(menu, Qt.MouseButton.LeftButton, pos=menu.actionGeometry(act).center())


def test_continue_from_the_context_menu(qtbot, window, tmp_path):
    run = _stopped_run(tmp_path / "runs")
    menu = _context_menu_on(qtbot, window.runs_panel, run)
    _click_action(qtbot, menu, "continueRunAction")
    qtbot.waitUntil(lambda: window.findChild(ContinueDialog) is not None, timeout=5000)
    dlg = window.findChild(ContinueDialog)
    text = dlg.summary.text()
    assert "from step 4" in text and "3 steps (5-7) will be redone" in text
    assert dlg.steps_box.value() == 10
    # more steps than planned: type 14 into the box
    dlg.steps_box.selectAll()
    qtbot.keyClicks(dlg.steps_box, "14")
    assert "training longer" in dlg.summary.text()
    with qtbot.waitSignal(window.controller.finished, timeout=120_000) as fin:
        qtbot.mouseClick(dlg.continue_button, Qt.MouseButton.LeftButton)
    assert fin.args == ["finished"]
    assert window.controller.run_dir == str(run)
    with open_run(run) as r:
        assert r.status == "finished" and r.last_step() == 14
        assert [a.from_step for a in r.attempts()] == [4]
        steps = r.scalars(["train/loss"], member=0)["step"].tolist()
    assert steps == list(range(1, 15))
    # the training view follows the continued run: one point per step, no step twice
    from moe_studio.gui.views.training import series_key
    loss = window.dashboards[0].plot("loss")
    key = series_key(0, "train/loss", 0)
    qtbot.waitUntil(lambda: key in loss.series_keys()
                    and len(loss.series_data(key)[0]) == 14, timeout=20_000)
    xs = list(loss.series_data(key)[0])
    assert xs == sorted(set(xs))


def test_a_run_without_checkpoint_offers_no_continue(qtbot, window, tmp_path):
    run = _stopped_run(tmp_path / "runs", stop_after=3, checkpoint_every=0)
    menu = _context_menu_on(qtbot, window.runs_panel, run)
    names = [a.objectName() for a in menu.actions()]
    assert "continueRunAction" not in names and any(a.text() == "Open" for a in menu.actions())
    menu.close()


def test_views_open_before_a_continue_drop_the_replaced_steps(qtbot, make_dashboard, tmp_path):
    """Views showing a stopped run (steps 1-9) while it is continued from step 6 (from
    the app or a terminal): at their next read each shows steps 1-6 of the first attempt
    and 7-8 of the new one, each step once; the first attempt's 7-9 are gone."""
    import numpy as np

    from moe_studio.gui.views.compare import CompareDashboard
    from moe_studio.gui.views.gates import GateDashboard
    from moe_studio.gui.views.training import TrainingDashboard, series_key
    from moe_studio.store import RunWriter

    cfg = {"moe": {"n_experts": 4, "top_k": 2}, "ensemble": {"members": 1}, "train": {"steps": 9}}
    w = RunWriter.create(tmp_path, name="cont", config=cfg, config_toml="")
    w.set_meta(moe_blocks=[0])
    first = {s: 3.0 - 0.1 * s for s in range(1, 10)}
    for s, v in first.items():
        w.add_scalars(s, {"train/loss": v, "moe/L0/entropy": v / 2})
    w.close("stopped")
    views = [make_dashboard(cls, runs=[w.run_dir])
             for cls in (TrainingDashboard, GateDashboard, CompareDashboard)]
    training, gates, compare = views
    loss_key = series_key(0, "train/loss", 0)
    assert list(training.plot("loss").series_data(loss_key)[0]) == list(range(1, 10))

    w = RunWriter.reopen(w.run_dir)
    w.begin_attempt(6, redo=3, total_steps=12)
    second = {7: 9.0, 8: 8.0}
    for s, v in second.items():
        w.add_scalars(s, {"train/loss": v, "moe/L0/entropy": v / 2})
    w.flush()
    for v in views:
        v.refresh()
    want_s = list(range(1, 9))
    want_v = [first[s] for s in range(1, 7)] + [second[7], second[8]]
    xs, ys = training.plot("loss").series_data(loss_key)
    assert list(xs) == want_s
    np.testing.assert_allclose(ys, want_v)
    s, v = gates.data.curve(0, "entropy")
    assert list(s) == want_s
    np.testing.assert_allclose(v, np.array(want_v) / 2)
    x, y = compare.curve(0, "train/loss")
    assert list(x) == want_s
    np.testing.assert_allclose(y, want_v)
    # the planned end follows the continuation's total (more steps than the config's)
    assert training._tracks[0].total_steps == 12
    w.close("finished")
