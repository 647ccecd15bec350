"""Rename, tag, annotate and delete a run from the runs list's context menu.

The dialogs only ask; the store does the work (``edit_run`` / ``delete_run``), stores
it in the run itself, and refuses a run that is being written. A refusal or a bad
input is shown as one line in a warning box; nothing is changed then.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QInputDialog, QMenu, QMessageBox, QWidget

from ...store import RunFileError, RunInfo, TrashUnavailable, delete_run, edit_run

LIVE_TIP = "The run is being written: change it when it has ended"


def add_organise_actions(menu: QMenu, parent: QWidget, info: RunInfo,
                         changed: Callable[[], None]) -> None:
    """Add Rename…, Tags…, Note… and Move to trash… for ``info``'s run to ``menu``;
    ``changed`` is called after a change (e.g. to rescan the list)."""
    live = info.status == "running"
    menu.addSeparator()
    for text, act_on in (("Rename…", _rename), ("Tags…", _tags), ("Note…", _note),
                         ("Move to trash…", _delete)):
        act = QAction(text, menu)
        act.setObjectName("organise:" + text.rstrip("…").lower().replace(" ", "-"))
        if live:
            act.setEnabled(False)
            act.setToolTip(LIVE_TIP)
        act.triggered.connect(lambda _=False, f=act_on: f(parent, info, changed))
        menu.addAction(act)
    menu.setToolTipsVisible(True)


def tooltip_lines(info: RunInfo) -> str:
    """Tags and note as extra tooltip lines ('' when the run has neither)."""
    text = f"\ntags: {', '.join(info.tags)}" if info.tags else ""
    return text + (f"\nnote: {info.note}" if info.note else "")


def _apply(parent: QWidget, change: Callable[[], object], changed: Callable[[], None]) -> bool:
    try:
        change()
    except (ValueError, RunFileError) as e:
        _warn(parent, str(e))
        return False
    changed()
    return True


def _warn(parent: QWidget, text: str) -> None:
    box = QMessageBox(QMessageBox.Icon.Warning, "Run not changed", text,
                      QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("organiseErrorBox")
    box.exec()


def _ask_text(parent: QWidget, title: str, label: str, text: str, multiline: bool = False) -> str | None:
    dlg = QInputDialog(parent)
    dlg.setObjectName("organiseDialog")
    dlg.setWindowTitle(title)
    dlg.setLabelText(label)
    if multiline:
        dlg.setOption(QInputDialog.InputDialogOption.UsePlainTextEditForTextInput)
    dlg.setTextValue(text)
    dlg.resize(420, dlg.sizeHint().height())
    return dlg.textValue() if dlg.exec() else None


def _rename(parent: QWidget, info: RunInfo, changed) -> None:
    name = _ask_text(parent, "Rename run", f"New name for {info.path.name}:", info.name or "")
    if name is not None and name.strip() != (info.name or ""):
        _apply(parent, lambda: edit_run(info.path, name=name), changed)


def _tags(parent: QWidget, info: RunInfo, changed) -> None:
    text = _ask_text(parent, "Tags", "Tags, separated by spaces or commas:", " ".join(info.tags))
    if text is None:
        return
    want = list(dict.fromkeys(t for t in text.replace(",", " ").split() if t))
    add = [t for t in want if t not in info.tags]
    remove = [t for t in info.tags if t not in want]
    if add or remove:
        _apply(parent, lambda: edit_run(info.path, add_tags=add, remove_tags=remove), changed)


def _note(parent: QWidget, info: RunInfo, changed) -> None:
    text = _ask_text(parent, "Note", f"Note on {info.name or info.path.name} (stored in the run):",
                     info.note or "", multiline=True)
    if text is not None and text.strip() != (info.note or ""):
        _apply(parent, lambda: edit_run(info.path, note=text), changed)


def _delete(parent: QWidget, info: RunInfo, changed) -> None:
    name = info.name or info.path.name
    if not _confirm(parent, "Move to trash", f"Move the run “{name}” to the trash?\n{info.path}"):
        return
    try:
        delete_run(info.path)
    except TrashUnavailable as e:
        if _confirm(parent, "Delete permanently",
                    f"{e.problem}.\nDelete the run “{name}” permanently? This cannot be undone.",
                    danger=True):
            _apply(parent, lambda: delete_run(Path(info.path), permanent=True), changed)
        return
    except RunFileError as e:
        _warn(parent, str(e))
        return
    changed()


def _confirm(parent: QWidget, title: str, text: str, danger: bool = False) -> bool:
    box = QMessageBox(QMessageBox.Icon.Warning if danger else QMessageBox.Icon.Question, title, text,
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, parent)
    box.setObjectName("organiseConfirmBox")
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    return box.exec() == QMessageBox.StandardButton.Yes
