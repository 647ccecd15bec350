"""The Sample Text dialog: reached from the File menu, generates in a child process
(the GUI process never imports torch) and shows the text and its speed."""
from __future__ import annotations


import pytest

from moe_studio.engine.generate import sample_run

from tiny import trained_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("runs"), train__steps=3, train__eval_every=100)


def _type(qtbot, widget, text: str) -> None:
    from PySide6.QtCore import Qt
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)
    qtbot.keyClick(widget, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(widget, text)


@pytest.mark.slow
def test_dialog_from_menu_generates_like_the_engine(qtbot, tmp_path, run_dir):
    from PySide6.QtCore import QSettings, Qt

    from moe_studio.gui.main_window import MainWindow
    from moe_studio.gui.widgets.sample_dialog import SampleDialog
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs", engine_mode="process")
    qtbot.addWidget(w)
    w.show()
    file_menu = w.menuBar().actions()[0].menu()
    assert w.sample_action in file_menu.actions()
    w.sample_action.trigger()   # what choosing the menu item does
    dlg = w.findChild(SampleDialog)
    assert dlg is not None and dlg.isVisible()
    _type(qtbot, dlg.run_edit, str(run_dir))
    _type(qtbot, dlg.prompt_edit, "def ")
    _type(qtbot, dlg.tokens_spin.lineEdit(), "6")
    _type(qtbot, dlg.temp_spin.lineEdit(), "0")
    qtbot.mouseClick(dlg.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.busy, timeout=90_000)
    assert "tokens/s" in dlg.speed_label.text(), dlg.speed_label.text()
    ref = sample_run(run_dir, "def ", 6, temperature=0.0)
    assert dlg.output.toPlainText() == "def " + ref.text
    dlg.close()
    w.close()


def test_dialog_without_a_run_says_so_and_starts_nothing(qtbot):
    from PySide6.QtCore import QProcess, Qt

    from moe_studio.gui.widgets.sample_dialog import SampleDialog
    dlg = SampleDialog(None)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.mouseClick(dlg.generate_button, Qt.MouseButton.LeftButton)
    assert not dlg.busy and dlg.findChild(QProcess) is None
    assert "choose a run folder" in dlg.speed_label.text()
    assert dlg.output.toPlainText() == ""
    dlg.close()


@pytest.fixture(scope="module")
def ens_dir(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("ens"), train__steps=3, train__eval_every=100,
                       ensemble__members=3)


@pytest.mark.slow
def test_dialog_samples_the_ensemble_or_the_member_picked(qtbot, ens_dir, run_dir):
    from PySide6.QtCore import Qt

    from moe_studio.gui.widgets.sample_dialog import SampleDialog
    dlg = SampleDialog(None)
    qtbot.addWidget(dlg)
    dlg.show()
    combo = dlg.from_combo
    _type(qtbot, dlg.run_edit, str(run_dir))
    assert [combo.itemText(i) for i in range(combo.count())] == ["the model"]
    _type(qtbot, dlg.run_edit, str(ens_dir))
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "the ensemble of 3 members (mean_prob)", "member 0", "member 1", "member 2"]
    _type(qtbot, dlg.prompt_edit, "ab")
    _type(qtbot, dlg.tokens_spin.lineEdit(), "4")
    _type(qtbot, dlg.temp_spin.lineEdit(), "0")

    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)
    qtbot.keyClick(combo, Qt.Key.Key_Down)   # the ensemble -> member 0 -> member 1
    assert combo.currentText() == "member 1"
    qtbot.mouseClick(dlg.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.busy, timeout=90_000)
    label = dlg.speed_label.text()
    assert label.startswith("member 1 of 3: 4 tokens") and "tokens/s" in label, label
    assert dlg.output.toPlainText() == "ab" + sample_run(ens_dir, "ab", 4, member=1,
                                                         temperature=0.0).text
    # back to the ensemble: its job asks for no member, which the child samples as the
    # run's combination rule (test_generate.test_cli_and_child_name_what_was_sampled)
    qtbot.keyClick(combo, Qt.Key.Key_Home)
    assert combo.currentIndex() == 0 and combo.currentData() is None
    dlg.close()


def test_a_finished_job_keeps_no_reference_to_the_dialog(qtbot, run_dir):
    """Nothing the sampling job left behind holds the dialog: a lambda on the child
    process's signal did, until the child's deferred delete, whose teardown then freed
    the dialog and with it the child being deleted (a segfault under load)."""
    import weakref

    from PySide6.QtCore import QProcess, Qt

    from moe_studio.gui.widgets.sample_dialog import SampleDialog
    dlg = SampleDialog(None)
    dlg.show()
    _type(qtbot, dlg.run_edit, str(run_dir))
    _type(qtbot, dlg.tokens_spin.lineEdit(), "2")
    qtbot.mouseClick(dlg.generate_button, Qt.MouseButton.LeftButton)
    proc = dlg.findChild(QProcess, "sampleProcess")
    with qtbot.waitSignal(proc.finished, timeout=90_000):
        pass
    del proc
    assert not dlg.busy and "tokens/s" in dlg.speed_label.text()
    ref = weakref.ref(dlg)
    dlg.close()
    del dlg
    assert ref() is None     # freed at once, its child with it
