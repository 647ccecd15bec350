"""A sweep from the app as a user makes one: focus a setup field, Run > Sweep…, type
values, see a bad value named, start, cancel a queued run, continue, compare grouped by
the swept key."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from moe_studio.gui.widgets.sweep_dialog import SweepDialog, SweepQueueWindow  # noqa: E402
from moe_studio.store import open_run  # noqa: E402
from moe_studio.sweep.queue import SweepQueue  # noqa: E402

from tiny import tiny_config  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from moe_studio.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    w.setup_panel.set_config(tiny_config("gsweep", train__steps=4, train__eval_every=2,
                                         train__snapshot_every=2, data__batch_size=2,
                                         model__n_layers=1))
    yield w
    w.controller.shutdown(10_000)


def _type(qtbot, edit, text):
    edit.selectAll()
    qtbot.keyClick(edit, Qt.Key.Key_Delete)
    qtbot.keyClicks(edit, text)


@pytest.mark.slow
def test_sweep_from_the_setup_form(qtbot, window, tmp_path):
    w = window
    field = w.setup_panel.field_widget("moe.aux_loss_coef")
    w.setup_panel.focus_field("moe.aux_loss_coef")
    qtbot.waitUntil(field.hasFocus, timeout=2000)
    w.sweep_action.trigger()              # Run > Sweep…
    qtbot.waitUntil(lambda: w.findChild(SweepDialog) is not None, timeout=5000)
    dlg = w.findChild(SweepDialog)
    (row,) = dlg.rows
    assert row.key_box.currentText() == "moe.aux_loss_coef"   # the focused field
    _type(qtbot, row.values_edit, "0,0.01")
    assert "2 runs" in dlg.summary.text() and dlg.start_button.isEnabled()
    qtbot.mouseClick(dlg.findChild(QWidget, "sweepAdd"), Qt.MouseButton.LeftButton)
    second = dlg.rows[1]
    second.key_box.setCurrentText("moe.top_k")
    _type(qtbot, second.values_edit, "1,9")
    assert "moe.top_k=9" in dlg.summary.text() and not dlg.start_button.isEnabled()
    qtbot.mouseClick(second.findChild(QWidget, "sweepRemove"), Qt.MouseButton.LeftButton)
    assert len(dlg.rows) == 1 and dlg.start_button.isEnabled()

    qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.findChild(SweepQueueWindow) is not None, timeout=5000)
    qw = w.findChild(SweepQueueWindow)
    try:
        assert qw.table.rowCount() == 2
        # cancel the queued second run before it starts
        qw.table.selectRow(1)
        qtbot.mouseClick(qw.cancel_selected_button, Qt.MouseButton.LeftButton)
        assert qw.table.item(1, 1).text() == "cancelled"
        qtbot.waitUntil(lambda: not qw.running(), timeout=180_000)
        # the window notices the runner has gone at its next read of the queue
        qtbot.waitUntil(qw.continue_button.isEnabled, timeout=5000)
        assert [qw.table.item(i, 1).text() for i in range(2)] == ["done", "cancelled"]
        qtbot.mouseClick(qw.continue_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: qw.table.item(1, 1).text() == "done", timeout=180_000)
        qtbot.waitUntil(lambda: qw.compare_button.isEnabled(), timeout=5000)
        q = SweepQueue.load(qw.dir)
        for e in q.entries:
            with open_run(q.run_path(e)) as r:
                assert r.status == "finished"
                assert r.meta["sweep"]["id"] == qw.dir.name
                assert r.config["moe"]["aux_loss_coef"] == e.values["moe.aux_loss_coef"]
        qtbot.mouseClick(qw.compare_button, Qt.MouseButton.LeftButton)
        dash = w.findChild(QWidget, "dashboard:Compare")
        assert w.tabs.currentWidget() is dash
        assert [str(p) for p in dash.runs()] == [str(p) for p in q.run_paths()]
        assert dash.group_by() == "moe.aux_loss_coef"
        qtbot.waitUntil(lambda: not qw.timer.isActive(), timeout=10_000)
    finally:
        qw.close()
        if qw.proc is not None and qw.proc.poll() is None:
            qw.proc.kill()
            qw.proc.wait()


def test_vary_this_field_from_its_label(qtbot, window):
    """Right-click a field's name in the setup form, "Vary … in a Sweep…": the sweep
    dialog opens varying that field (not the one with the keyboard focus)."""
    from PySide6.QtGui import QContextMenuEvent
    from PySide6.QtWidgets import QApplication, QMenu
    w = window
    w.setup_panel.focus_field("moe.aux_loss_coef")
    label = w.setup_panel.field_label("moe.top_k")
    w.setup_panel.focus_field("moe.top_k")        # scrolled into view
    w.setup_panel.focus_field("moe.aux_loss_coef")
    pos = label.rect().center()
    QApplication.sendEvent(label, QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos,
                                                    label.mapToGlobal(pos)))
    qtbot.waitUntil(lambda: isinstance(QApplication.activePopupWidget(), QMenu), timeout=5000)
    menu = QApplication.activePopupWidget()
    (act,) = [a for a in menu.actions() if a.objectName() == "varyFieldAction"]
    assert "moe.top_k" in act.text()
    qtbot.mouseClick(menu, Qt.MouseButton.LeftButton, pos=menu.actionGeometry(act).center())
    qtbot.waitUntil(lambda: w.findChild(SweepDialog) is not None, timeout=5000)
    dlg = w.findChild(SweepDialog)
    try:
        (row,) = dlg.rows
        assert row.key_box.currentText() == "moe.top_k"
        _type(qtbot, row.values_edit, "1,2,4")
        assert "3 runs" in dlg.summary.text() and dlg.start_button.isEnabled()
    finally:
        dlg.close()


def test_the_sample_sweep_opens_in_compare_with_one_click(qtbot, window):
    from moe_studio.gui.widgets.sweep_dialog import open_sweep_queue
    from moe_studio.paths import sample_runs_dir
    d = sample_runs_dir() / "sweep-topk-aux"
    if not (d / "sweep.json").exists():
        pytest.skip("sample sweep not present")
    qw = open_sweep_queue(window, d)
    try:
        assert qw.table.rowCount() == 4 and not qw.running()
        assert [qw.table.item(i, 1).text() for i in range(4)] == ["done"] * 4
        assert not qw.continue_button.isEnabled() and not qw.cancel_button.isEnabled()
        qtbot.mouseClick(qw.compare_button, Qt.MouseButton.LeftButton)
        dash = window.findChild(QWidget, "dashboard:Compare")
        assert window.tabs.currentWidget() is dash and len(dash.runs()) == 4
        # grouped by the grid point: both swept keys at once, each point a group
        assert set(dash.group_by().split(" + ")) == {"moe.top_k", "moe.aux_loss_coef"}
        groups = dash.groups()
        assert len(groups) == 4 and all(len(idx) == 1 for _, idx in groups)
        from moe_studio.config import from_dict
        from moe_studio.store import open_run
        for label, (i,) in groups:     # each label names the run's own values
            with open_run(dash.runs()[i]) as r:
                cfg = from_dict(r.config)
            assert f"top_k={cfg.moe.top_k}" in label
            assert f"aux_loss_coef={cfg.moe.aux_loss_coef:g}" in label
    finally:
        qw.close()


def test_report_of_a_sweep_folder_draws_its_runs(tmp_path, capsys):
    from moe_studio.cli import main
    from moe_studio.paths import sample_runs_dir
    d = sample_runs_dir() / "sweep-topk-aux"
    if not (d / "sweep.json").exists():
        pytest.skip("sample sweep not present")
    out = tmp_path / "sweep.png"
    # the shipped sweep by its name, from any folder (a path works the same way)
    assert main(["report", "sweep-topk-aux", "--out", str(out), "--tabs", "Compare"]) == 0
    assert out.stat().st_size > 10_000 and "wrote" in capsys.readouterr().out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sweep.json").write_text("{")
    assert main(["report", str(tmp_path / "bad"), "--out", str(tmp_path / "b.png")]) == 2
    assert "cannot read the sweep queue" in capsys.readouterr().err
