"""The runs list's context menu: rename, tags, note, trash; and the filter, used as a user does."""
from __future__ import annotations

import sys

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtGui import QContextMenuEvent  # noqa: E402
from PySide6.QtWidgets import (QApplication, QInputDialog, QLineEdit, QMenu, QMessageBox,  # noqa: E402
                               QPlainTextEdit)

from moe_studio.gui.panels.runs import COL_NAME, PathRole, RunsPanel  # noqa: E402
from moe_studio.store import RunWriter, open_run, run_info  # noqa: E402

MOE = {"moe": {"router": "topk", "top_k": 2, "n_experts": 4}, "precision": {"mode": "bf16"},
       "model": {"moe_layers": "all"}}
DENSE = {"moe": {"router": "topk", "top_k": 1, "n_experts": 4}, "precision": {"mode": "fp32"},
         "model": {"moe_layers": "none"}}


def _run(runs, name, config=MOE, close=True):
    w = RunWriter.create(runs, name=name, config=config, config_toml="")
    w.add_scalars(1, {"train/loss": 2.0})
    if close:
        w.close()
    return w


def _panel(qtbot, runs):
    p = RunsPanel([runs], auto_rescan=False)
    qtbot.addWidget(p)
    p.resize(900, 400)
    p.show()
    qtbot.waitExposed(p)
    return p


def _row_rect(p, path):
    v = p.view()
    for r in range(v.model().rowCount(v.model().index(0, 0))):
        idx = v.model().index(r, COL_NAME, v.model().index(0, 0))
        if idx.data(PathRole) == str(path):
            return v.visualRect(idx)
    raise AssertionError(f"{path} not listed")


def _listed(p) -> set[str]:
    """The runs the list shows now (what the filter lets through)."""
    m = p.view().model()
    sec = m.index(0, 0)
    return {m.index(r, COL_NAME, sec).data(PathRole) for r in range(m.rowCount(sec))}


def _menu_action(qtbot, p, path, object_name):
    """Right-click the run's row; return the context menu and its action ``object_name``."""
    v = p.view()
    pos = _row_rect(p, path).center()
    qtbot.mouseClick(v.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    before = set(p.findChildren(QMenu))
    QApplication.sendEvent(v.viewport(), QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos,
                                                           v.viewport().mapToGlobal(pos)))
    qtbot.waitUntil(lambda: any(m.isVisible() for m in set(p.findChildren(QMenu)) - before), timeout=3000)
    menu = next(m for m in set(p.findChildren(QMenu)) - before if m.isVisible())
    return menu, next(a for a in menu.actions() if a.objectName() == object_name)


def _choose(qtbot, p, path, object_name, then):
    """Pick the action with the mouse; ``then(dialog)`` answers the dialog it opens."""
    menu, act = _menu_action(qtbot, p, path, object_name)
    done = []

    def answer():
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(20, answer)
            return
        then(box)
        done.append(box)
    QTimer.singleShot(0, answer)
    qtbot.mouseClick(menu, Qt.MouseButton.LeftButton, pos=menu.actionGeometry(act).center())
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    return done[0]


def _type_and_ok(qtbot, text, editor_type=QLineEdit):
    def then(dlg):
        assert isinstance(dlg, QInputDialog)
        ed = dlg.findChild(editor_type)
        qtbot.keyClick(ed, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
        qtbot.keyClick(ed, Qt.Key.Key_Delete)
        qtbot.keyClicks(ed, text)
        _click_button(qtbot, dlg, "OK")
    return then


def _click_button(qtbot, dlg, label):
    from PySide6.QtWidgets import QAbstractButton
    b = next(b for b in dlg.findChildren(QAbstractButton) if b.text().replace("&", "") == label)
    qtbot.mouseClick(b, Qt.MouseButton.LeftButton)


def test_rename_tag_note_from_the_context_menu(qtbot, tmp_path):
    runs = tmp_path / "runs"
    a, b = _run(runs, "same"), _run(runs, "same")
    p = _panel(qtbot, runs)
    assert sorted(p.model().label(x.run_dir) for x in (a, b)) == ["same #1", "same #2"]

    _choose(qtbot, p, a.run_dir, "organise:rename", _type_and_ok(qtbot, "baseline lr 3e-4"))
    qtbot.waitUntil(lambda: p.model().label(str(a.run_dir)) == "baseline lr 3e-4", timeout=3000)
    assert p.model().label(str(b.run_dir)) == "same"   # no longer a duplicate: no number
    with open_run(a.run_dir) as r:
        assert r.name == "baseline lr 3e-4"

    _choose(qtbot, p, a.run_dir, "organise:tags", _type_and_ok(qtbot, "keep, lr-sweep"))
    qtbot.waitUntil(lambda: run_info(a.run_dir).tags == ("keep", "lr-sweep"), timeout=3000)
    _choose(qtbot, p, a.run_dir, "organise:note", _type_and_ok(qtbot, "router collapsed", QPlainTextEdit))
    qtbot.waitUntil(lambda: run_info(a.run_dir).note == "router collapsed", timeout=3000)
    tip = p.view().model().data(p.view().indexAt(_row_rect(p, a.run_dir).center()),
                                Qt.ItemDataRole.ToolTipRole)
    assert "tags: keep, lr-sweep" in tip and "note: router collapsed" in tip

    # the filter reads tags, notes and config values
    for query, shown in (("tag:keep", {a}), ("collapsed", {a}), ("status:finished", {a, b}),
                         ("tag:nothing", set())):
        p.set_filter("")
        qtbot.keyClicks(p.findChild(QLineEdit), query)
        assert _listed(p) == {str(x.run_dir) for x in shown}, query

    # a bad tag: one line in a warning box, nothing changed
    p.set_filter("")
    box = {}

    def bad_tags(dlg):
        def warn():
            w = QApplication.activeModalWidget()
            if not isinstance(w, QMessageBox):
                QTimer.singleShot(20, warn)
                return
            box["text"] = w.text()
            _click_button(qtbot, w, "OK")
        QTimer.singleShot(0, warn)
        _type_and_ok(qtbot, "ok x" + "y" * 50)(dlg)
    _choose(qtbot, p, a.run_dir, "organise:tags", bad_tags)
    qtbot.waitUntil(lambda: "text" in box, timeout=3000)
    assert "at most 40" in box["text"] and "\n" not in box["text"]
    assert run_info(a.run_dir).tags == ("keep", "lr-sweep")


def test_trash_from_the_context_menu_and_never_a_live_run(qtbot, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "send2trash", None)   # no system trash: ask twice
    runs = tmp_path / "runs"
    done = _run(runs, "done")
    live = _run(runs, "live", config=DENSE, close=False)
    try:
        p = _panel(qtbot, runs)
        menu, act = _menu_action(qtbot, p, live.run_dir, "organise:move-to-trash")
        assert not act.isEnabled()          # being written: greyed out, says why
        assert "being written" in act.toolTip()
        menu.close()

        questions = []

        def first(box):
            assert isinstance(box, QMessageBox) and "trash" in box.text()
            questions.append(box.text())

            def second():
                w = QApplication.activeModalWidget()
                if w is None or w is box:
                    QTimer.singleShot(20, second)
                    return
                questions.append(w.text())
                _click_button(qtbot, w, "Yes")
            QTimer.singleShot(0, second)
            _click_button(qtbot, box, "Yes")
        _choose(qtbot, p, done.run_dir, "organise:move-to-trash", first)
        qtbot.waitUntil(lambda: not done.run_dir.exists(), timeout=5000)
        assert "permanently" in questions[-1]
        qtbot.waitUntil(lambda: p.model().locate(str(done.run_dir)) is None, timeout=3000)
        assert live.run_dir.exists()
    finally:
        live.close()
