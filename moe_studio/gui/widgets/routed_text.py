"""Text that shows routing: the probe coloured by each token's expert, the expert colour
legend, and the list of tokens behind a clicked heatmap cell.

Tokens are UTF-8 bytes. The text view colours a *character* by the token of its first
byte and maps a character under the mouse back to that token for the tooltip (every
layer's top-k experts and weights).
"""
from __future__ import annotations

import colorsys
import html
from typing import Callable, Sequence

import numpy as np
from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor, QTextOption
from PySide6.QtWidgets import (QLabel, QListWidget, QListWidgetItem, QTextBrowser, QToolTip,
                               QVBoxLayout, QWidget)

from ..theme import plot_colors, series_color

MAX_LISTED = 400   # tokens listed for one cell; the rest are counted


def mono_font(delta: float = 0.0) -> QFont:
    f = QFont("DejaVu Sans Mono")
    f.setStyleHint(QFont.StyleHint.Monospace)
    f.setFixedPitch(True)
    if delta:
        f.setPointSizeF(max(6.0, QFont().pointSizeF() + delta))
    return f


def expert_colors(n_experts: int, dark: bool) -> list[QColor]:
    """One distinct colour per expert: the theme's series colours up to 10 experts,
    evenly spread hues (golden-ratio steps, alternating lightness) beyond."""
    if n_experts <= 10:
        return [QColor(series_color(i, dark)) for i in range(n_experts)]
    out = []
    for i in range(n_experts):
        h = (i * 0.618033988749895) % 1.0
        light = (0.62 if i % 2 else 0.50) if dark else (0.45 if i % 2 else 0.58)
        r, g, b = colorsys.hls_to_rgb(h, light, 0.65)
        out.append(QColor.fromRgbF(r, g, b))
    return out


def text_background(c: QColor, dark: bool) -> QColor:
    """``c`` blended into the page colour so text stays readable on it."""
    bg = QColor(plot_colors(dark)["background"])
    a = 0.50 if dark else 0.38
    return QColor.fromRgbF(a * c.redF() + (1 - a) * bg.redF(), a * c.greenF() + (1 - a) * bg.greenF(),
                           a * c.blueF() + (1 - a) * bg.blueF())


def byte_chars(tokens) -> tuple[str, np.ndarray]:
    """``(text, first_token [n_chars])``: the text of byte tokens, one character per
    UTF-8 character (an invalid sequence is one U+FFFD), and the index of each
    character's first byte. Control characters other than newline and tab show as
    spaces so that text positions stay one per character."""
    b = np.asarray(tokens, dtype=np.uint8).reshape(-1)
    n = b.size
    lead = (b & 0xC0) != 0x80
    if n:
        lead[0] = True
    starts = np.flatnonzero(lead)
    ends = np.r_[starts[1:], n]
    raw = b.tobytes()
    chars = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e - s == 1:
            v = raw[s]
            ch = chr(v) if v < 0x80 else "\ufffd"
        else:
            ch = raw[s:e].decode("utf-8", errors="replace")
            if len(ch) != 1:
                ch = "\ufffd"
        if ch == "\r":
            ch = " "
        elif ch not in "\n\t" and (ord(ch) < 0x20 or ord(ch) == 0x7F):
            ch = " "
        chars.append(ch)
    return "".join(chars), starts.astype(np.int64)


class RoutedTextView(QTextBrowser):
    """The probe text, every character's background the colour of its token's expert.
    Hovering a character shows ``tooltip_fn(token index)``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setUndoRedoEnabled(False)
        self.setFont(mono_font())
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.viewport().setMouseTracking(True)
        self._key: tuple | None = None
        self._first_token = np.zeros(0, np.int64)
        self._char_of_token = np.zeros(0, np.int64)
        self._tooltip_fn: Callable[[int], str] | None = None
        self._experts = np.zeros(0, np.int64)

    def set_routing(self, tokens, experts, colors: Sequence[QColor],
                    tooltip_fn: Callable[[int], str] | None = None) -> None:
        """Show ``tokens`` (bytes [N]) coloured by ``experts`` [N] (an expert index per
        token, -1 = uncoloured) with ``colors[e]`` as the background of expert e."""
        tokens = np.asarray(tokens, dtype=np.uint8).reshape(-1)
        experts = np.asarray(experts, dtype=np.int64).reshape(-1)
        self._tooltip_fn = tooltip_fn
        key = (tokens.tobytes(), experts.tobytes(), tuple(c.rgb() for c in colors))
        if key == self._key:
            return
        self._key = key
        self._experts = experts
        text, first = byte_chars(tokens)
        self._first_token = first
        char_of = np.zeros(tokens.size, np.int64)
        if first.size:
            char_of[first] = 1
            char_of = np.cumsum(char_of) - 1
        self._char_of_token = char_of
        char_expert = experts[first] if first.size else np.zeros(0, np.int64)
        fmts = {}
        for e in np.unique(char_expert).tolist():
            f = QTextCharFormat()
            if 0 <= e < len(colors):
                f.setBackground(colors[e])
            fmts[e] = f
        doc = self.document()
        doc.clear()
        cur = QTextCursor(doc)
        cur.beginEditBlock()
        if char_expert.size:
            cut = np.flatnonzero(np.diff(char_expert)) + 1
            bounds = np.r_[0, cut, char_expert.size]
            for a, z in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                cur.insertText(text[a:z], fmts[int(char_expert[a])])
        cur.endEditBlock()

    def plain_text(self) -> str:
        return self.document().toPlainText()

    def token_at(self, pos: QPoint) -> int | None:
        """The token under viewport point ``pos`` (the first byte of the character)."""
        layout = self.document().documentLayout()
        p = pos + QPoint(self.horizontalScrollBar().value(), self.verticalScrollBar().value())
        c = layout.hitTest(p, Qt.HitTestAccuracy.ExactHit)
        if c < 0 or c >= self._first_token.size:
            return None
        return int(self._first_token[c])

    def char_of_token(self, i: int) -> int:
        return int(self._char_of_token[i])

    def background_of_token(self, i: int) -> QColor:
        """The background colour drawn behind token ``i``'s character (for tests)."""
        cur = QTextCursor(self.document())
        cur.setPosition(self.char_of_token(i))
        cur.movePosition(QTextCursor.MoveOperation.NextCharacter, QTextCursor.MoveMode.KeepAnchor)
        return cur.charFormat().background().color()

    def select_token(self, i: int) -> None:
        """Select token ``i``'s character and scroll it into view."""
        if not 0 <= i < self._char_of_token.size:
            return
        cur = QTextCursor(self.document())
        cur.setPosition(self.char_of_token(i))
        cur.movePosition(QTextCursor.MoveOperation.NextCharacter, QTextCursor.MoveMode.KeepAnchor)
        self.setTextCursor(cur)
        self.ensureCursorVisible()

    def tooltip_for_token(self, i: int) -> str:
        return self._tooltip_fn(i) if self._tooltip_fn is not None else ""

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            i = self.token_at(event.pos())
            if i is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(), self.tooltip_for_token(i), self.viewport())
            return True
        return super().viewportEvent(event)


class TokenListPanel(QWidget):
    """The tokens behind a clicked cell: a heading and one line per token with the text
    around it (``…before[token]after…``)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.heading = QLabel("Click a heatmap cell to list the tokens behind it")
        self.heading.setWordWrap(True)
        self.heading.setTextFormat(Qt.TextFormat.RichText)
        self.list = QListWidget()
        self.list.setFont(mono_font(-1))
        self.list.setAlternatingRowColors(True)
        self.list.setUniformItemSizes(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.heading)
        lay.addWidget(self.list, 1)

    def show_tokens(self, heading: str, rows: Sequence[tuple[int, str, str]]) -> None:
        """``rows``: (token index, line text, tooltip) per token, at most MAX_LISTED shown."""
        self.heading.setText(heading)
        self.list.setUpdatesEnabled(False)
        self.list.clear()
        for i, text, tip in rows[:MAX_LISTED]:
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, int(i))
            if tip:
                item.setToolTip(tip)
            self.list.addItem(item)
        if len(rows) > MAX_LISTED:
            more = QListWidgetItem(f"… and {len(rows) - MAX_LISTED:,} more")
            more.setFlags(Qt.ItemFlag.NoItemFlags)
            self.list.addItem(more)
        self.list.setUpdatesEnabled(True)

    def clear(self, heading: str | None = None) -> None:
        self.list.clear()
        if heading is not None:
            self.heading.setText(heading)

    def token_indices(self) -> list[int]:
        out = []
        for r in range(self.list.count()):
            v = self.list.item(r).data(Qt.ItemDataRole.UserRole)
            if v is not None:
                out.append(int(v))
        return out

    def lines(self) -> list[str]:
        return [self.list.item(r).text() for r in range(self.list.count())]


def legend_html(colors: Sequence[QColor], dark: bool, labels: Sequence[str] | None = None) -> str:
    """A one-line legend of expert colour chips (HTML)."""
    parts = []
    for e, c in enumerate(colors):
        bg = text_background(c, dark).name()
        lab = html.escape(labels[e] if labels else f"e{e}")
        parts.append(f'<span style="background:{bg}; border:1px solid {c.name()}">&nbsp;{lab}&nbsp;</span>')
    return "&nbsp;".join(parts)


def token_rows(tokens, indices, note: Callable[[int], str] | None = None,
               before_width: int = 8, after_width: int = 16) -> list[tuple[int, str, str]]:
    """Concordance lines for :meth:`TokenListPanel.show_tokens`: each token (``«x»``, a
    space as ``␣``) with a little text before it and more after it, aligned in a
    column, plus an optional ``note(i)`` (e.g. the gate weight)."""
    from ...metrics.routing import token_context

    out = []
    wide = max(before_width, after_width)
    for i in np.asarray(indices, dtype=np.int64).tolist():
        before, ch, after = token_context(tokens, i, wide)
        mid = "␣" if ch == " " else ch
        extra = note(i) if note is not None else ""
        text = (f"{i:>5}  {before[-before_width:]:>{before_width}}«{mid}»"
                f"{after[:after_width]:<{after_width}}")
        if extra:
            text += f"  {extra}"
        out.append((i, text, f"token {i}: {before}{ch}{after}"))
    return out
