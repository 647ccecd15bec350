"""The experiment setup form, generated from the config schema.

Every knob in ``moe_studio.config.schema`` becomes one editor chosen from its type and
metadata (``min``/``max``, ``choices``, ``kind``), with its ``help`` as tool tip. After
every edit the form builds a config, runs ``problems(cfg)`` and shows each problem next
to the field it names, so the person sees what to fix before pressing Train.
"""
from __future__ import annotations

import html
import re
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QEvent, QLocale, Qt, Signal
from PySide6.QtGui import QColor, QDoubleValidator, QPalette, QValidator
from PySide6.QtWidgets import (QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QFrame, QHBoxLayout, QLabel, QLineEdit,
                               QMessageBox, QPushButton, QScrollArea, QSizePolicy, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from ..formats import format_float, human_count
from .launch_command import LaunchCommand
from ...config import (PRESETS, SECTIONS, ConfigError, ExperimentConfig, copy_config, default,
                       problems, section_fields, to_dict)
from ...config import toml_io
from ...config.inputs import load as load_config
from ...engine.memory import fit_problems
from ...engine.params import count_params

SECTION_TITLES = {
    "data": "Data",
    "model": "Model",
    "moe": "Mixture of experts",
    "precision": "Precision",
    "ensemble": "Ensemble",
    "train": "Training",
}
# Sections open on first start; the rest are one click away (the state is remembered).
DEFAULT_EXPANDED = ("model", "moe", "train")

# What a zero means for knobs where zero switches something off; shown in the spin box.
SPECIAL_ZERO = {
    "moe.d_expert": "0  (= model.d_ff)",
    "moe.capacity_factor": "0  (dropless)",
    "train.checkpoint_every": "0  (at the end only)",
    "train.grad_clip": "0  (off)",
}
LAYER_SETS = ("all", "none", "every_other")
CUSTOM_PRESET = "Custom"

_INT_MIN, _INT_MAX = -(2 ** 31), 2 ** 31 - 1
_C_LOCALE = QLocale.c()
_C_LOCALE.setNumberOptions(QLocale.NumberOption.OmitGroupSeparator)


def _type_name(f: Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


# ---------------------------------------------------------------- editors
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


class _RangeGuardMixin:
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


class _SpinBox(_RangeGuardMixin, _NoWheelMixin, QSpinBox):
    def __init__(self):
        super().__init__()
        self._init_wheel()
        self.setLocale(_C_LOCALE)
        self.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)


class _FloatSpin(_RangeGuardMixin, _NoWheelMixin, QDoubleSpinBox):
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


class _Combo(_NoWheelMixin, QComboBox):
    def __init__(self):
        super().__init__()
        self._init_wheel()
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)


class _Editor:
    """One knob's editor: ``widget`` goes in the form, ``input`` is what the person
    types in (``SetupPanel.field_widget`` returns it)."""

    def __init__(self, widget: QWidget, input_: QWidget, get: Callable[[], Any],
                 put: Callable[[Any], None], connect: Callable[[Callable[[], None]], None]):
        self.widget, self.input = widget, input_
        self.get, self.put, self.connect = get, put, connect


def _int_editor(path: str, md: dict) -> _Editor:
    w = _SpinBox()
    lo = _INT_MIN if md.get("min") is None else int(md["min"])
    hi = _INT_MAX if md.get("max") is None else int(md["max"])
    w.setRange(lo, hi)
    if path in SPECIAL_ZERO and lo == 0:
        w.setSpecialValueText(SPECIAL_ZERO[path])
    return _Editor(w, w, w.value, lambda v: w.setValue(int(v)),
                   lambda cb: w.valueChanged.connect(lambda _v: cb()))


def _float_editor(path: str, md: dict) -> _Editor:
    w = _FloatSpin()
    lo = -1e12 if md.get("min") is None else float(md["min"])
    hi = 1e12 if md.get("max") is None else float(md["max"])
    w.setRange(lo, hi)
    if path in SPECIAL_ZERO and lo == 0:
        w.setSpecialValueText(SPECIAL_ZERO[path])
    return _Editor(w, w, w.value, lambda v: w.setValue(float(v)),
                   lambda cb: w.valueChanged.connect(lambda _v: cb()))


class _ParseError(Exception):
    pass


def _log_editor(path: str, md: dict) -> _Editor:
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
            raise _ParseError(f"{path} must be a number such as 3e-3 or 0.001, "
                              f"got {text!r}") from None

    return _Editor(w, w, get, lambda val: w.setText(format_float(float(val))),
                   lambda cb: w.textChanged.connect(lambda _t: cb()))


def _bool_editor(path: str, md: dict) -> _Editor:
    w = QCheckBox()
    return _Editor(w, w, w.isChecked, lambda v: w.setChecked(bool(v)),
                   lambda cb: w.toggled.connect(lambda _v: cb()))


def _choice_editor(path: str, md: dict) -> _Editor:
    w = _Combo()
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

    return _Editor(w, w, w.currentText, put,
                   lambda cb: w.currentTextChanged.connect(lambda _t: cb()))


def _layers_editor(path: str, md: dict) -> _Editor:
    w = _Combo()
    w.setEditable(True)
    w.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    w.addItems(list(LAYER_SETS))
    w.lineEdit().setPlaceholderText("all, none, every_other or 1,3")
    return _Editor(w, w, lambda: w.currentText().strip(), lambda v: w.setEditText(str(v)),
                   lambda cb: w.editTextChanged.connect(lambda _t: cb()))


def _path_editor(path: str, md: dict, parent_for_dialogs: Callable[[], QWidget]) -> _Editor:
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
    return _Editor(box, line, lambda: line.text().strip(), lambda v: line.setText(str(v)),
                   lambda cb: line.textChanged.connect(lambda _t: cb()))


def _text_editor(path: str, md: dict) -> _Editor:
    w = QLineEdit()
    w.setClearButtonEnabled(True)
    if path == "data.probe_text":
        w.setPlaceholderText("(a fixed sample: one passage per domain)")
    return _Editor(w, w, w.text, lambda v: w.setText(str(v)),
                   lambda cb: w.textChanged.connect(lambda _t: cb()))


# ---------------------------------------------------------------- layout pieces

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


class _FieldRow(QWidget):
    """Editor in a frame that turns red on a problem, and the problem's text under it."""

    def __init__(self, editor: _Editor):
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


class _Section(QWidget):
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


# ---------------------------------------------------------------- the panel

class SetupPanel(QWidget):
    """The experiment form. ``config()`` / ``set_config(cfg)``; emits ``configChanged(cfg)``
    after every edit and ``validityChanged(bool)`` when the config turns valid/invalid."""

    configChanged = Signal(object)
    validityChanged = Signal(bool)
    presetChanged = Signal(str)       # a preset was chosen (its PRESETS name)
    configFileChanged = Signal(str)   # a TOML was loaded from or saved to this path

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._editors: dict[str, _Editor] = {}
        self._rows: dict[str, _FieldRow] = {}
        self._sections: dict[str, _Section] = {}
        self._section_of: dict[str, str] = {}
        self._loading = False
        self._valid = True
        self._problems: list[ConfigError] = []
        self._notices: dict[str, str] = {}   # path -> what the form did to a typed value
        self._config = default()
        self.config_path: str = ""
        self._build_ui()
        self.set_config(default())

    # ---------------------------------------------------------------- UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)

        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(10, 8, 10, 8)
        tl.setSpacing(6)
        prow = QHBoxLayout()
        plabel = QLabel("&Preset")
        self.preset_combo = _Combo()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.addItem(CUSTOM_PRESET)
        # "Custom" names an edited config; it cannot be chosen.
        self.preset_combo.model().item(self.preset_combo.count() - 1).setEnabled(False)
        self.preset_combo.setToolTip("Load a named starting point. Editing any field turns "
                                     "this into 'Custom'.")
        self.preset_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        plabel.setBuddy(self.preset_combo)
        prow.addWidget(plabel)
        prow.addWidget(self.preset_combo, 1)
        tl.addLayout(prow)

        brow = QHBoxLayout()
        self.load_button = QPushButton("Load TOML…")
        self.load_button.setToolTip("Load an experiment config from a .toml file")
        self.save_button = QPushButton("Save TOML…")
        self.save_button.setToolTip("Save this experiment config as a .toml file")
        for b in (self.load_button, self.save_button):
            b.setAutoDefault(False)
            brow.addWidget(b)
        brow.addStretch(1)
        tl.addLayout(brow)

        self.params_label = QLabel()
        self.params_label.setWordWrap(True)
        self.params_label.setTextFormat(Qt.TextFormat.RichText)
        self.params_label.setToolTip("Trainable parameters of one model, and how many of them a "
                                     "single token passes through (only top_k experts are active).")
        tl.addWidget(self.params_label)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setToolTip("Click a field name to go to it")
        self.summary_label.linkActivated.connect(self.focus_field)
        self.summary_label.setContentsMargins(10, 4, 10, 4)
        self.summary_label.hide()
        outer.addWidget(top)
        sep = QFrame()
        sep.setFrameShape(QFrame.Shape.HLine)
        sep.setFrameShadow(QFrame.Shadow.Sunken)
        outer.addWidget(sep)

        body = QWidget()
        bl = QVBoxLayout(body)
        bl.setContentsMargins(6, 6, 6, 6)
        bl.setSpacing(4)

        # The run name is the one top-level knob.
        name_field = {f.name: f for f in fields(ExperimentConfig)}["name"]
        name_form = QFormLayout()
        name_form.setContentsMargins(14, 2, 4, 6)
        name_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        name_form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        self._add_field(name_form, "name", name_field, section=None)
        bl.addLayout(name_form)
        self._name_form = name_form

        for sec in SECTIONS:
            s = _Section(sec, SECTION_TITLES.get(sec, sec.title()), sec in DEFAULT_EXPANDED)
            self._sections[sec] = s
            for f in section_fields(sec):
                self._add_field(s.form, f"{sec}.{f.name}", f, section=sec)
            if sec == "parallel":   # what runs this on several processes, to copy
                self.launch_command = LaunchCommand()
                s.form.addRow(self.launch_command)
            bl.addWidget(s)
        bl.addStretch(1)

        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        # As needed, not off: content wider than the view must never scroll sideways
        # unseen (labels read "recision"). _fit_width() makes that not happen.
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.scroll.setWidget(body)
        outer.addWidget(self.scroll, 1)
        # Below the form, not above it: appearing, it shortens the form at the bottom
        # instead of moving every field down.
        outer.addWidget(self.summary_label)

        self._fit_width()
        self.configChanged.connect(self.launch_command.set_config)
        self.launch_command.set_config(ExperimentConfig())
        self.preset_combo.activated.connect(self._on_preset_activated)
        self.load_button.clicked.connect(self.open_toml_dialog)
        self.save_button.clicked.connect(self.save_toml_dialog)
        self._apply_colors()

    def _fit_width(self) -> None:
        """The panel's minimum width: every section open, each label and editor at its
        full size next to a vertical scroll bar. A dock cannot squeeze it narrower, so
        nothing is cut and nothing scrolls sideways, whatever is open."""
        body = self.scroll.widget()
        was = self.expanded_sections()
        self.set_expanded_sections(list(self._sections))
        self.ensurePolished()   # the style's sizes, not the unpolished defaults
        # Asked of each section: the body's own layout keeps a size from while they
        # were closed until it is shown.
        m = body.layout().contentsMargins()
        need = max([s.minimumSizeHint().width() for s in self._sections.values()] +
                   [self._name_form.minimumSize().width()]) + m.left() + m.right()
        self.set_expanded_sections(was)
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        frame = 2 * self.scroll.frameWidth()
        self.scroll.setMinimumWidth(need + bar + frame)

    def _add_field(self, form: QFormLayout, path: str, f: Field, section: str | None) -> None:
        md = dict(f.metadata)
        t = _type_name(f)
        kind = md.get("kind")
        if md.get("choices"):
            ed = _choice_editor(path, md)
        elif kind == "path":
            ed = _path_editor(path, md, lambda: self.window())
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
        rng = self._range_text(md, t)
        tip = help_ + (f"\n\nRange: {rng}" if rng else "") + f"\n\n[{path}]"
        ed.input.setToolTip(tip)
        ed.input.setAccessibleName(path)
        ed.input.setAccessibleDescription(help_)
        ed.input.setObjectName(path)
        row = _FieldRow(ed)
        label = QLabel(f.name)
        label.setToolTip(tip)
        label.setBuddy(ed.input)
        # Align the label with the editor's text baseline, not the error under it.
        label.setContentsMargins(0, 4, 0, 0)
        form.addRow(label, row)
        ed.connect(lambda p=path: self._on_edited(p))
        if isinstance(ed.input, _RangeGuardMixin):
            ed.input.on_corrected = lambda typed, p=path: self._on_corrected(p, typed)
        self._editors[path] = ed
        self._rows[path] = row
        if section is not None:
            self._section_of[path] = section

    @staticmethod
    def _range_text(md: dict, t: str) -> str:
        lo, hi = md.get("min"), md.get("max")
        if md.get("choices"):
            return ", ".join(md["choices"])
        if lo is None and hi is None:
            return ""
        fmt = (lambda v: str(int(v))) if t == "int" else (lambda v: format_float(float(v)))
        return f"{fmt(lo) if lo is not None else '−∞'} … {fmt(hi) if hi is not None else '∞'}"

    # ---------------------------------------------------------------- colours
    def _dark(self) -> bool:
        return self.palette().color(QPalette.ColorRole.Window).lightness() < 128

    def _apply_colors(self) -> None:
        err = QColor("#ff8a80") if self._dark() else QColor("#b3261e")
        for row in self._rows.values():
            row.set_error_color(err)
        pal = self.summary_label.palette()
        pal.setColor(QPalette.ColorRole.WindowText, err)
        self.summary_label.setPalette(pal)

    def changeEvent(self, event):  # noqa: N802
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()
        elif event.type() == QEvent.Type.FontChange and self._sections:
            self._fit_width()   # wider labels need a wider panel
        super().changeEvent(event)

    # ---------------------------------------------------------------- public API
    def field_widget(self, path: str) -> QWidget:
        """The input widget of the knob at ``path`` (e.g. ``"moe.top_k"`` -> a QSpinBox)."""
        return self._editors[path].input

    def focus_field(self, path: str) -> None:
        """Open the field's section, scroll to it and give it the keyboard focus."""
        sec = self._section_of.get(path)
        if sec:
            self._sections[sec].set_expanded(True)
        w = self._editors[path].input
        self.scroll.ensureWidgetVisible(self._rows[path], 0, 40)
        w.setFocus(Qt.FocusReason.OtherFocusReason)

    def error_label(self, path: str) -> QLabel:
        """The label that shows the problem of the knob at ``path`` (hidden when none)."""
        return self._rows[path].error

    def field_paths(self) -> list[str]:
        return list(self._editors)

    def section(self, name: str) -> _Section:
        return self._sections[name]

    def expanded_sections(self) -> list[str]:
        return [n for n, s in self._sections.items() if s.is_expanded()]

    def set_expanded_sections(self, names: list[str]) -> None:
        for n, s in self._sections.items():
            s.set_expanded(n in names)

    def config(self) -> ExperimentConfig:
        """The config the form shows (a fresh copy). Fields whose text does not parse
        keep their last valid value; ``problems()`` lists them."""
        return copy_config(self._config)

    def problems(self) -> list[ConfigError]:
        return list(self._problems)

    def is_valid(self) -> bool:
        return self._valid

    def set_config(self, cfg: ExperimentConfig) -> list[str]:
        """Show ``cfg`` in the form. Returns a note for every value the form had to
        change to fit a knob's range (possible only with hand-edited TOML)."""
        cfg = copy_config(cfg)
        self._notices.clear()
        self._loading = True
        try:
            for path, ed in self._editors.items():
                ed.put(self._get(cfg, path))
        finally:
            self._loading = False
        self._revalidate()
        notes = []
        for path in self._editors:
            want, got = self._get(cfg, path), self._get(self._config, path)
            if want != got:
                notes.append(f"{path}: {want!r} is outside its range and was set to {got!r}")
        self._sync_preset_combo()
        self.configChanged.emit(self.config())
        return notes

    def set_preset(self, name: str) -> None:
        """Load the preset called ``name`` (a key of ``PRESETS``)."""
        self.set_config(PRESETS[name]())
        self.presetChanged.emit(name)

    def current_preset(self) -> str | None:
        """The preset the form matches exactly (ignoring the run name), if any."""
        t = self.preset_combo.currentText()
        return None if t == CUSTOM_PRESET else t

    def load_toml(self, path: str | Path) -> list[str]:
        """Load a TOML config into the form. Raises ConfigError with a readable message."""
        notes = self.set_config(load_config(path))
        self.config_path = str(path)
        self.configFileChanged.emit(str(path))
        return notes

    def save_toml(self, path: str | Path) -> None:
        toml_io.save(self.config(), path)
        self.config_path = str(path)
        self.configFileChanged.emit(str(path))

    # ---------------------------------------------------------------- dialogs
    def _dialog_dir(self) -> str:
        return str(Path(self.config_path).parent) if self.config_path else str(Path.cwd())

    def open_toml_dialog(self) -> bool:
        fn, _ = QFileDialog.getOpenFileName(self.window(), "Open experiment config",
                                            self._dialog_dir(), "TOML config (*.toml);;All files (*)")
        if not fn:
            return False
        try:
            notes = self.load_toml(fn)
        except (ConfigError, OSError) as e:
            QMessageBox.warning(self.window(), "Could not load config", str(e))
            return False
        if notes:
            QMessageBox.information(self.window(), "Config adjusted",
                                    "Some values did not fit their range:\n\n" + "\n".join(notes))
        return True

    def save_toml_dialog(self) -> bool:
        start = self.config_path or str(Path(self._dialog_dir()) / f"{self._config.name or 'experiment'}.toml")
        fn, _ = QFileDialog.getSaveFileName(self.window(), "Save experiment config", start,
                                            "TOML config (*.toml)")
        if not fn:
            return False
        if not Path(fn).suffix:
            fn += ".toml"
        try:
            self.save_toml(fn)
        except OSError as e:
            QMessageBox.warning(self.window(), "Could not save config", f"{fn}: {e.strerror or e}")
            return False
        return True

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _get(cfg: ExperimentConfig, path: str) -> Any:
        if path == "name":
            return cfg.name
        sec, key = path.split(".", 1)
        return getattr(getattr(cfg, sec), key)

    @staticmethod
    def _set(cfg: ExperimentConfig, path: str, value: Any) -> None:
        if path == "name":
            cfg.name = value
            return
        sec, key = path.split(".", 1)
        setattr(getattr(cfg, sec), key, value)

    def _on_corrected(self, path: str, typed: str) -> None:
        """A spin box put its last good value back over what was typed: say so."""
        ed = self._editors[path]
        w = ed.input
        lo, hi = w.minimum(), w.maximum()
        fmt = (lambda v: str(int(v))) if isinstance(w, QSpinBox) else format_float
        try:
            inside = lo <= float(typed) <= hi
        except ValueError:
            inside = False
        why = (f"has more than {w.decimals()} decimals" if inside and hasattr(w, "decimals")
               else f"is outside {fmt(lo)} … {fmt(hi)}")
        self._notices[path] = f"{path}: {typed} {why}; kept {fmt(ed.get())}"
        self._show_problems(self._problems)

    def notice(self, path: str) -> str:
        """What the form last did to a value typed into ``path`` ("" if nothing)."""
        return self._notices.get(path, "")

    def _on_preset_activated(self, index: int) -> None:
        name = self.preset_combo.itemText(index)
        if name in PRESETS:
            self.set_preset(name)

    def _on_edited(self, path: str | None = None) -> None:
        if self._loading:
            return
        self._notices.pop(path, None)
        self._revalidate()
        self._sync_preset_combo()
        self.configChanged.emit(self.config())

    def _revalidate(self) -> None:
        cfg = copy_config(self._config)
        errs: list[ConfigError] = []
        for path, ed in self._editors.items():
            try:
                self._set(cfg, path, ed.get())
            except _ParseError as e:
                errs.append(ConfigError(path, str(e)))
        self._config = cfg
        errs += problems(cfg)
        if not errs:  # a config that cannot fit is refused here, not seconds after Train
            errs += fit_problems(cfg)
        self._problems = errs
        self._show_problems(errs)
        self._update_params(cfg)
        valid = not errs
        if valid != self._valid:
            self._valid = valid
            self.validityChanged.emit(valid)

    def _show_problems(self, errs: list[ConfigError]) -> None:
        by_path: dict[str, list[str]] = {}
        general: list[str] = []
        for e in errs:
            if e.path in self._rows:
                by_path.setdefault(e.path, []).append(e.message)
            else:
                general.append(e.message)
        for path, row in self._rows.items():
            msgs = by_path.get(path)
            row.set_error("\n".join(msgs) if msgs else None, self._notices.get(path))
        per_section = {s: 0 for s in self._sections}
        for path, msgs in by_path.items():
            sec = self._section_of.get(path)
            if sec:
                per_section[sec] += len(msgs)
        for sec, n in per_section.items():
            s = self._sections[sec]
            s.set_problem_count(n)
            if n and not s.is_expanded():
                s.set_expanded(True)  # a problem is never hidden in a closed section
        if errs:
            n = len(errs)
            text = f"{n} problem{'s' if n != 1 else ''} to fix before training:"
            # Each whole, with its field as a link: the line under a field may be cut.
            for e in errs:
                if e.path not in by_path:
                    continue
                msg = e.message
                rest = msg[len(e.path):] if msg.startswith(e.path) else ": " + msg
                text += (f'<br><a href="{html.escape(e.path)}">{html.escape(e.path)}</a>'
                         f"{html.escape(rest)}")
            if general:
                text += "<br>" + "<br>".join(html.escape(g) for g in general)
            self.summary_label.setText(text)
            self.summary_label.show()
        else:
            self.summary_label.hide()

    def _update_params(self, cfg: ExperimentConfig) -> None:
        # Counted whenever the shape is known, even while some other knob is invalid.
        try:
            pc = count_params(cfg)
        except (ConfigError, ValueError, TypeError, ZeroDivisionError):
            self.params_label.setText("Parameters: <i>— (fix model.moe_layers)</i>")
            return
        text = (f"Parameters: <b>{human_count(pc.total)}</b> total · "
                f"<b>{human_count(pc.active)}</b> active per token")
        if pc.members > 1:
            text += f" <br>({pc.members} members × {human_count(pc.total)} = " \
                    f"<b>{human_count(pc.run_total)}</b> in the run)"
        self.params_label.setText(text)
        self.params_label.setToolTip(
            f"{pc.total:,} trainable parameters per model; a token passes through "
            f"{pc.active:,} of them" + (f"; {pc.members} members train {pc.run_total:,} in all."
                                        if pc.members > 1 else "."))

    def _sync_preset_combo(self) -> None:
        mine = to_dict(self._config)
        mine.pop("name", None)
        match = None
        for name, make in PRESETS.items():
            d = to_dict(make())
            d.pop("name", None)
            if d == mine:
                match = name
                break
        # setCurrentText does not emit ``activated``, so this never reloads a preset.
        self.preset_combo.setCurrentText(match or CUSTOM_PRESET)
