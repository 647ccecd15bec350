"""One editor per config knob, chosen from the knob's type and metadata.

``make_editor`` reads a schema field (``min``/``max``, ``choices``, ``kind``, ``help``)
and returns an ``Editor``: the widget that goes in the form, the input the person
types in, and how to read, write and watch its value. Number editors let a value
outside the range be typed and seen (the form names the problem) instead of Qt
silently refusing the keystroke; none of them takes the mouse wheel unless focused.
"""
from __future__ import annotations

import re
from dataclasses import Field
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QLocale, Qt
from PySide6.QtGui import QDoubleValidator, QValidator
from PySide6.QtWidgets import (QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox,
                               QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from ..formats import format_float

# What a zero means for knobs where zero switches something off; shown in the spin box.
SPECIAL_ZERO = {
    "moe.d_expert": "0  (= model.d_ff)",
    "moe.capacity_factor": "0  (dropless)",
    "train.checkpoint_every": "0  (at the end only)",
    "train.grad_clip": "0  (off)",
}
LAYER_SETS = ("all", "none", "every_other")

_INT_MIN, _INT_MAX = -(2 ** 31), 2 ** 31 - 1
_C_LOCALE = QLocale.c()
_C_LOCALE.setNumberOptions(QLocale.NumberOption.OmitGroupSeparator)


def type_name(f: Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


# Spin boxes and combos inside a scrolling form must not grab the mouse wheel while the
# person scrolls past them: they take the wheel only when focused (StrongFocus).

class _NoWheelMixin:
    def _init_wheel(self) -> None:
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self, event):  # noqa: N802 (Qt name)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


# A number typed outside a spin box's range: Qt would refuse the keystroke (a minus sign
# where the minimum is 0) or, when editing ends, silently put the previous value back.
_NUMBER_TEXT = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)?([eE][-+]?\d*)?\s*")


class RangeGuardMixin:
    """Lets a number outside the range be typed and seen; when editing ends and Qt puts
    the last good value back, ``on_corrected(typed_text)`` is called so the form says so."""

    on_corrected: Callable[[str], None] | None = None

    def validate(self, text: str, pos: int):
        state, text2, pos2 = super().validate(text, pos)
        if state == QValidator.State.Invalid and _NUMBER_TEXT.fullmatch(text):
            state = QValidator.State.Intermediate
        return state, text2, pos2

    def _guarded(self, handler, event) -> None:
        typed = self.lineEdit().text()
        handler(event)
        if typed != self.lineEdit().text() and typed.strip() and self.on_corrected and \
                super().validate(typed, 0)[0] != QValidator.State.Acceptable:
            self.on_corrected(typed.strip())

    def focusOutEvent(self, event):  # noqa: N802
        self._guarded(super().focusOutEvent, event)

    def keyPressEvent(self, event):  # noqa: N802
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self._guarded(super().keyPressEvent, event)
        else:
            super().keyPressEvent(event)


class _SpinBox(RangeGuardMixin, _NoWheelMixin, QSpinBox):
    def __init__(self):
        super().__init__()
        self._init_wheel()
        self.setLocale(_C_LOCALE)
        self.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)


class _FloatSpin(RangeGuardMixin, _NoWheelMixin, QDoubleSpinBox):
    """A double spin box that shows 0.1 rather than 0.100000."""

    def __init__(self):
        super().__init__()
        self._init_wheel()
        self.setLocale(_C_LOCALE)
        self.setDecimals(6)
        self.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)

    def textFromValue(self, value: float) -> str:  # noqa: N802
        s = _C_LOCALE.toString(value, "f", self.decimals())
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s


class NoWheelCombo(_NoWheelMixin, QComboBox):
    """A combo box of the form: takes the mouse wheel only when focused."""

    def __init__(self):
        super().__init__()
        self._init_wheel()
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)


class Editor:
    """One knob's editor: ``widget`` goes in the form, ``input`` is what the person
    types in (``SetupPanel.field_widget`` returns it)."""

    def __init__(self, widget: QWidget, input_: QWidget, get: Callable[[], Any],
                 put: Callable[[Any], None], connect: Callable[[Callable[[], None]], None]):
        self.widget, self.input = widget, input_
        self.get, self.put, self.connect = get, put, connect
        self.tip = ""    # help, range and path (make_editor); the label shows it too


def _int_editor(path: str, md: dict) -> Editor:
    w = _SpinBox()
    lo = _INT_MIN if md.get("min") is None else int(md["min"])
    hi = _INT_MAX if md.get("max") is None else int(md["max"])
    w.setRange(lo, hi)
    if path in SPECIAL_ZERO and lo == 0:
        w.setSpecialValueText(SPECIAL_ZERO[path])
    return Editor(w, w, w.value, lambda v: w.setValue(int(v)),
                  lambda cb: w.valueChanged.connect(lambda _v: cb()))


def _float_editor(path: str, md: dict) -> Editor:
    w = _FloatSpin()
    lo = -1e12 if md.get("min") is None else float(md["min"])
    hi = 1e12 if md.get("max") is None else float(md["max"])
    w.setRange(lo, hi)
    if path in SPECIAL_ZERO and lo == 0:
        w.setSpecialValueText(SPECIAL_ZERO[path])
    return Editor(w, w, w.value, lambda v: w.setValue(float(v)),
                  lambda cb: w.valueChanged.connect(lambda _v: cb()))


class ParseError(Exception):
    pass


def _log_editor(path: str, md: dict) -> Editor:
    """Learning rates and loss weights span decades: typed as text (3e-3, 0.001)."""
    w = QLineEdit()
    v = QDoubleValidator(w)
    v.setNotation(QDoubleValidator.Notation.ScientificNotation)
    v.setLocale(_C_LOCALE)
    v.setDecimals(15)
    # No bottom / top: a validator with a range drops a typed minus sign without a word
    # ("-0.01" became 0.01); out-of-range values are named by the form's validation.
    w.setValidator(v)
    w.setPlaceholderText("a number, e.g. 3e-3")

    def get() -> float:
        text = w.text().strip()
        try:
            return float(text)
        except ValueError:
            raise ParseError(f"{path} must be a number such as 3e-3 or 0.001, "
                              f"got {text!r}") from None

    return Editor(w, w, get, lambda val: w.setText(format_float(float(val))),
                  lambda cb: w.textChanged.connect(lambda _t: cb()))


def _bool_editor(path: str, md: dict) -> Editor:
    w = QCheckBox()
    return Editor(w, w, w.isChecked, lambda v: w.setChecked(bool(v)),
                  lambda cb: w.toggled.connect(lambda _v: cb()))


def _choice_editor(path: str, md: dict) -> Editor:
    w = NoWheelCombo()
    choices = tuple(md["choices"])
    w.addItems(list(choices))

    def put(v: Any) -> None:
        # A value from a hand-written TOML that is not a choice stays visible (and is
        # flagged by validation) instead of silently becoming the first choice.
        while w.count() > len(choices):
            w.removeItem(w.count() - 1)
        i = w.findText(str(v))
        if i < 0:
            w.addItem(str(v))
            i = w.count() - 1
        w.setCurrentIndex(i)

    return Editor(w, w, w.currentText, put,
                  lambda cb: w.currentTextChanged.connect(lambda _t: cb()))


def _layers_editor(path: str, md: dict) -> Editor:
    w = NoWheelCombo()
    w.setEditable(True)
    w.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    w.addItems(list(LAYER_SETS))
    w.lineEdit().setPlaceholderText("all, none, every_other or 1,3")
    return Editor(w, w, lambda: w.currentText().strip(), lambda v: w.setEditText(str(v)),
                  lambda cb: w.editTextChanged.connect(lambda _t: cb()))


def _path_editor(path: str, md: dict, parent_for_dialogs: Callable[[], QWidget]) -> Editor:
    box = QWidget()
    col = QVBoxLayout(box)
    col.setContentsMargins(0, 0, 0, 0)
    col.setSpacing(3)
    line = QLineEdit()
    line.setPlaceholderText("embedded, a text file, or a folder of domains")
    line.setClearButtonEnabled(True)
    col.addWidget(line)
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(4)
    embedded = QPushButton("Embedded")
    embedded.setToolTip("Use the built-in corpus (prose + Python source), no files needed.")
    file_btn = QPushButton("File…")
    file_btn.setToolTip("Pick one UTF-8 text file.")
    folder_btn = QPushButton("Folder…")
    folder_btn.setToolTip("Pick a folder: each file or subfolder in it is one domain.")
    for b in (embedded, file_btn, folder_btn):
        b.setAutoDefault(False)
        row.addWidget(b)
    row.addStretch(1)
    col.addLayout(row)

    def start_dir() -> str:
        t = line.text().strip()
        if t and t != "embedded":
            p = Path(t).expanduser()
            return str(p if p.is_dir() else p.parent)
        return str(Path.home())

    def pick_file() -> None:
        fn, _ = QFileDialog.getOpenFileName(parent_for_dialogs(), "Training text", start_dir(),
                                            "Text files (*.txt *.md *.py *.rst);;All files (*)")
        if fn:
            line.setText(fn)

    def pick_folder() -> None:
        d = QFileDialog.getExistingDirectory(parent_for_dialogs(), "Corpus folder", start_dir())
        if d:
            line.setText(d)

    embedded.clicked.connect(lambda: line.setText("embedded"))
    file_btn.clicked.connect(pick_file)
    folder_btn.clicked.connect(pick_folder)
    return Editor(box, line, lambda: line.text().strip(), lambda v: line.setText(str(v)),
                  lambda cb: line.textChanged.connect(lambda _t: cb()))


def _text_editor(path: str, md: dict) -> Editor:
    w = QLineEdit()
    w.setClearButtonEnabled(True)
    if path == "data.probe_text":
        w.setPlaceholderText("(a fixed sample: one passage per domain)")
    return Editor(w, w, w.text, lambda v: w.setText(str(v)),
                  lambda cb: w.textChanged.connect(lambda _t: cb()))


def make_editor(path: str, f: Field, parent_for_dialogs: Callable[[], QWidget]) -> Editor:
    """The editor of knob ``f`` at ``path`` (e.g. ``"moe.top_k"``), its input named
    ``path`` and carrying the knob's help, range and path as tool tip."""
    md = dict(f.metadata)
    t = type_name(f)
    kind = md.get("kind")
    if md.get("choices"):
        ed = _choice_editor(path, md)
    elif kind == "path":
        ed = _path_editor(path, md, parent_for_dialogs)
    elif kind == "layers":
        ed = _layers_editor(path, md)
    elif t == "bool":
        ed = _bool_editor(path, md)
    elif t == "int":
        ed = _int_editor(path, md)
    elif t == "float" and kind == "log":
        ed = _log_editor(path, md)
    elif t == "float":
        ed = _float_editor(path, md)
    else:
        ed = _text_editor(path, md)
    help_ = md.get("help") or ""
    rng = range_text(md, t)
    tip = help_ + (f"\n\nRange: {rng}" if rng else "") + f"\n\n[{path}]"
    ed.input.setToolTip(tip)
    ed.input.setAccessibleName(path)
    ed.input.setAccessibleDescription(help_)
    ed.input.setObjectName(path)
    ed.tip = tip
    return ed


def range_text(md: dict, t: str) -> str:
    """A knob's range as the tool tip says it: its choices, or "lo … hi" ("" if none)."""
    lo, hi = md.get("min"), md.get("max")
    if md.get("choices"):
        return ", ".join(md["choices"])
    if lo is None and hi is None:
        return ""
    fmt = (lambda v: str(int(v))) if t == "int" else (lambda v: format_float(float(v)))
    return f"{fmt(lo) if lo is not None else '−∞'} … {fmt(hi) if hi is not None else '∞'}"
