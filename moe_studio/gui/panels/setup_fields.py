"""How the setup form shows a problem: each field in a frame that turns red, with the
problem's text in a line reserved under it, and collapsible sections whose headers
count the problems inside.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QFormLayout, QFrame, QLabel, QSizePolicy, QToolButton,
                               QVBoxLayout, QWidget)

from .setup_editors import Editor


class _BorderFrame(QFrame):
    """A 1 px frame around an editor, drawn in the error colour while the field has a
    problem. Painted by hand, not with a style sheet: a style sheet on an ancestor pins
    the editors' palette at polish time, so a light/dark switch would leave them white."""

    def __init__(self) -> None:
        super().__init__()
        self.bad = False
        self.color = QColor("#c62828")

    def paintEvent(self, event):  # noqa: N802
        super().paintEvent(event)
        if not self.bad:
            return
        from PySide6.QtGui import QPainter, QPen
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(QPen(self.color, 1.0))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRoundedRect(self.rect().adjusted(0, 0, -1, -1).toRectF().adjusted(0.5, 0.5, 0, 0),
                          3, 3)
        p.end()


class _OneLineLabel(QLabel):
    """A message kept to its reserved line: cut with "…" when the column is narrower
    than the text, whole on hover and in the panel's summary of problems."""

    def __init__(self) -> None:
        super().__init__()
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def minimumSizeHint(self):  # noqa: N802
        h = super().minimumSizeHint()
        h.setWidth(0)
        return h

    def paintEvent(self, event):  # noqa: N802
        from PySide6.QtGui import QPainter
        p = QPainter(self)
        p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight,
                                             self.contentsRect().width())
        p.drawText(self.contentsRect(), int(Qt.AlignmentFlag.AlignLeft |
                                            Qt.AlignmentFlag.AlignVCenter), text)
        p.end()

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._sync_tip()

    def setText(self, text: str) -> None:  # noqa: N802
        super().setText(text)
        self._sync_tip()

    def _sync_tip(self) -> None:
        cut = self.fontMetrics().horizontalAdvance(self.text()) > self.contentsRect().width()
        self.setToolTip(self.text() if cut else "")


class FieldRow(QWidget):
    """Editor in a frame that turns red on a problem, and the problem's text under it."""

    def __init__(self, editor: Editor):
        super().__init__()
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(2)
        self.frame = _BorderFrame()
        self.frame.setObjectName("fieldFrame")
        inner = QVBoxLayout(self.frame)
        inner.setContentsMargins(1, 1, 1, 1)
        inner.addWidget(editor.widget)
        col.addWidget(self.frame)
        self.error = _OneLineLabel()
        self.error.hide()
        # The message line is reserved even while empty: a message appearing must not
        # push the fields below it down under the pointer (the next click would land
        # in the wrong field).
        slot = QWidget()
        slot.setObjectName("messageSlot")
        sl = QVBoxLayout(slot)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.error)
        slot.setMinimumHeight(self.error.fontMetrics().lineSpacing())
        col.addWidget(slot)
        self._color = QColor("#c62828")

    def set_error_color(self, color: QColor) -> None:
        self._color = color
        pal = self.error.palette()
        pal.setColor(QPalette.ColorRole.WindowText, color)
        self.error.setPalette(pal)
        if self.error.isVisibleTo(self):
            self._paint_border(True)

    def _paint_border(self, bad: bool) -> None:
        self.frame.bad, self.frame.color = bool(bad), QColor(self._color)
        self.frame.update()

    def set_error(self, message: str | None, notice: str | None = None) -> None:
        """``message``: a problem (red frame); ``notice``: something the form did to what
        was typed, said in the same line while there is no problem."""
        self.frame.setProperty("invalid", bool(message))
        self._paint_border(bool(message))
        text = message or notice or ""
        self.error.setText(text)
        self.error.setVisible(bool(text))


class Section(QWidget):
    """A collapsible group: a header button (arrow + title + problem count) and a form."""

    def __init__(self, name: str, title: str, expanded: bool):
        super().__init__()
        self.name, self.title = name, title
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        self._expanded = expanded
        self.header = QToolButton()
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        f = self.header.font()
        f.setBold(True)
        self.header.setFont(f)
        self.header.setAccessibleName(f"{title} section")
        self.header.setToolTip(f"Show or hide the {title} settings")
        col.addWidget(self.header)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        col.addWidget(line)
        self.body = QWidget()
        self.form = QFormLayout(self.body)
        self.form.setContentsMargins(14, 6, 4, 10)
        self.form.setHorizontalSpacing(10)
        self.form.setVerticalSpacing(2)  # the reserved message line spaces the rows
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        self.form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        col.addWidget(self.body)
        self._problems = 0
        self.header.clicked.connect(lambda: self.set_expanded(not self._expanded))
        self._sync()

    def _sync(self) -> None:
        open_ = self._expanded
        self.body.setVisible(open_)
        self.header.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        n = self._problems
        suffix = f"   ·  {n} problem{'s' if n != 1 else ''}" if n else ""
        self.header.setText(self.title + suffix)

    def set_problem_count(self, n: int) -> None:
        self._problems = n
        self._sync()

    def set_expanded(self, on: bool) -> None:
        self._expanded = bool(on)
        self._sync()

    def is_expanded(self) -> bool:
        return self._expanded
