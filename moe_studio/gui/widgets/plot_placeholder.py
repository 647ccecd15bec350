"""A notice over an empty plot ("nothing to show yet, because ..."): an empty axis box
alone reads as broken. The text takes the largest size that fits the axis box, and is
cut at a word where even the smallest does not.

``PlaceholderMixin`` is a mixin of ``CurvePlot`` (it uses the frame's ``_plot`` and
``_vb``); ``fit_label`` serves any word-wrapped label.
"""
from __future__ import annotations

from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QLabel

PLACEHOLDER_POINT_SIZES = (11.0, 10.0, 9.0, 8.0)


def fit_label(label: QLabel, box: QRect, text: str) -> None:
    """Place ``text`` in the word-wrapped ``label`` inside ``box`` at the largest of
    ``PLACEHOLDER_POINT_SIZES`` whose text fits there (every word within the width, every
    line within the height). Where even the smallest does not fit (a short plot), the
    text is cut at a word and ends in " …", whole in the label's tooltip: a notice never
    spills over the axes or out of its plot."""
    f = label.font()     # a copy
    words = text.split()
    label.setText(text)
    for pt in PLACEHOLDER_POINT_SIZES:
        f.setPointSizeF(pt)
        label.setFont(f)
        widest = max((label.fontMetrics().horizontalAdvance(w) for w in words), default=0)
        if widest <= box.width() and label.heightForWidth(box.width()) <= box.height():
            label.setToolTip("")
            label.setGeometry(box)
            return
    n = len(words)
    while n > 1 and label.heightForWidth(box.width()) > box.height():
        n -= 1
        label.setText(" ".join(words[:n]) + " …")
    label.setToolTip(text)
    label.setGeometry(box)


class PlaceholderMixin:
    """``set_placeholder`` / ``placeholder`` of ``CurvePlot``."""

    def _init_placeholder(self) -> None:
        self._placeholder = QLabel(self)
        self._placeholder_text = ""
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setWordWrap(True)
        self._placeholder.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._placeholder.hide()

    def set_placeholder(self, text: str) -> None:
        """Show ``text`` centred over the plot area ("" hides it)."""
        self._placeholder_text = text
        self._placeholder.setText(text)
        self._placeholder.setVisible(bool(text))
        self._place_placeholder()

    def placeholder(self) -> str:
        """The notice shown over the plot, whole (the label may show it cut to fit)."""
        return "" if self._placeholder.isHidden() else self._placeholder_text

    def _place_placeholder(self) -> None:
        """Over the axis box (the view box), wrapped inside it, never over the axes."""
        if self._placeholder.isHidden():
            return
        w, h = self.width(), self.height()
        box = QRect(int(w * 0.1), int(h * 0.25), int(w * 0.8), int(h * 0.5))
        r = self._plot.mapFromScene(self._vb.sceneBoundingRect()).boundingRect()
        if r.width() > 40 and r.height() > 20:
            r.moveTopLeft(self._plot.mapTo(self, r.topLeft()))
            mx, my = int(r.width() * 0.05), int(r.height() * 0.1)
            box = r.adjusted(mx, my, -mx, -my)
        fit_label(self._placeholder, box, self._placeholder_text)
        self._placeholder.raise_()
