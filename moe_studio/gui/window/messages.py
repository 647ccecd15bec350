"""The message boxes the main window shows: errors (with the traceback one click away),
warnings, and the Help menu's boxes (what a view shows, shortcuts, about).

None of them blocks: each is window-modal or modeless and deletes itself on close.
``MessagesMixin`` is a mixin of ``MainWindow`` (it uses its ``tabs``, ``menuBar`` and
``runs_dir``).
"""
from __future__ import annotations

import html

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMessageBox, QWidget

from ... import __version__
from .. import app_log
from ..views.help import shortcuts_html, view_help_html


def show_error(parent: QWidget, title: str, message: str, details: str | None = None,
               informative: str | None = None, object_name: str = "errorBox") -> QMessageBox:
    """A non-blocking error box: the message, and the traceback behind "Show Details…"."""
    box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok,
                      parent)
    box.setObjectName(object_name)
    box.setTextFormat(Qt.TextFormat.PlainText)
    if informative:
        box.setInformativeText(informative)
    if details:
        box.setDetailedText(details)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.open()
    return box


class MessagesMixin:
    """Warning, information and help boxes of ``MainWindow``."""

    def _warn(self, title: str, message: str) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok,
                          self)
        box.setObjectName("warningBox")
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        return box

    def _info(self, title: str, text: str, object_name: str) -> QMessageBox:
        """A non-blocking information box with rich ``text``; one per ``object_name``."""
        for old in self.findChildren(QMessageBox, object_name):
            old.setObjectName("")    # closing only schedules its deletion
            old.close()
        box = QMessageBox(QMessageBox.Icon.Information, title, text,
                          QMessageBox.StandardButton.Close, self)
        box.setObjectName(object_name)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        return box

    @Slot()
    def show_view_help(self, title: str | None = None) -> QMessageBox:
        """Help > What Am I Looking At?: a few lines on the view ``title`` (default: the
        current tab)."""
        if not isinstance(title, str):
            title = self.tabs.tabText(self.tabs.currentIndex())
        return self._info(f"{title} view", view_help_html(title), "viewHelpBox")

    @Slot()
    def show_shortcuts(self) -> QMessageBox:
        """Help > Keyboard Shortcuts: every action in the menus that has a shortcut."""
        actions: list[QAction] = []
        menus = [a.menu() for a in self.menuBar().actions() if a.menu() is not None]
        while menus:
            menu = menus.pop(0)
            for a in menu.actions():
                if a.menu() is not None:
                    menus.append(a.menu())
                elif not a.isSeparator():
                    actions.append(a)
        return self._info("Keyboard shortcuts", shortcuts_html(actions), "shortcutsBox")

    def _about(self) -> None:
        QMessageBox.about(self, "About MoE Studio",
                          f"<b>MoE Studio</b> {__version__}<br><br>See inside Mixture-of-Experts "
                          f"language models while they train: routing, expert load, mixed "
                          f"precision and ensembles.<br><br>New runs are saved in<br>"
                          f"<tt>{html.escape(str(self.runs_dir))}</tt>" + self._log_line())

    @staticmethod
    def _log_line() -> str:
        path = app_log.log_path()
        return (f"<br><br>The app's log (errors, warnings):<br><tt>{html.escape(str(path))}</tt>"
                if path is not None else "")
