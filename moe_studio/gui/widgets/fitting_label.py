"""A status line that fits its width by leaving out its last parts, never by cutting
letters off.

Dashboards' status lines are rich text joined by " · " ("<b>run</b> · ● running ·
step 1,200 / 2,000 · 4,100 tok/s · val 1.93"). A QLabel cuts rich text at its edge
("moe-top2 · finished · 4 MoE layers :"), and rich text cannot be elided. This label
shows as many leading parts as fit, then "…"; the whole line is its tool tip.
``text()`` is the whole line, as set.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QLabel, QSizePolicy

SEPARATOR = " · "


class FittingLabel(QLabel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._full = ""
        self._full_width = 0   # of the whole line, as its size hint asks
        self._tip = ""
        self.setTextFormat(Qt.TextFormat.RichText)
        # Takes the room its text wants when there is some; can shrink to almost nothing.
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(40)

    def text(self) -> str:  # noqa: D102 - the whole line, not the part shown
        return self._full

    # A dashboard sets its status line on every timer frame, mostly to the same text or
    # to one of the same width (the next step number): neither asks the window for a
    # new layout, which it did ~300 times a second while a run was followed.
    def setText(self, text: str) -> None:  # noqa: N802
        text = str(text)
        if text == self._full:
            return
        self._full = text
        width = self._width(text)
        if width != self._full_width:
            self._full_width = width
            self.updateGeometry()
        self._fit()

    def setToolTip(self, tip: str) -> None:  # noqa: N802
        if tip == self._tip:
            return
        self._tip = tip
        self._fit()

    def sizeHint(self):  # noqa: N802
        h = super().sizeHint()
        h.setWidth(self._full_width + 4)
        return h

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit()

    def changeEvent(self, event) -> None:  # noqa: N802
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:   # the line's width with the new font
            self._full_width = self._width(self._full)
            self.updateGeometry()
            self._fit()

    def _width(self, html_text: str) -> int:
        doc = QTextDocument()
        doc.setDefaultFont(self.font())
        doc.setDocumentMargin(0)
        doc.setHtml(html_text)
        return int(doc.idealWidth() + 0.999)

    def shown_text(self) -> str:
        """The part of the line on screen."""
        return super().text()

    def _fit(self) -> None:
        avail = self.contentsRect().width() - 2
        parts = self._full.split(SEPARATOR)
        shown = self._full
        if self._full_width > avail:
            for n in range(len(parts) - 1, 0, -1):
                shown = SEPARATOR.join(parts[:n]) + " …"
                if self._width(shown) <= avail:
                    break
        if shown != super().text():
            super().setText(shown)
        plain = self._plain(self._full)
        tip = self._tip or (plain if shown != self._full else "")
        if shown != self._full and self._tip and plain not in self._tip:
            tip = plain + "\n" + self._tip
        super().setToolTip(tip)

    @staticmethod
    def _plain(html_text: str) -> str:
        doc = QTextDocument()
        doc.setHtml(html_text)
        return doc.toPlainText()
