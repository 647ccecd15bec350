"""The experiment setup form, generated from the config schema.

Every knob in ``moe_studio.config.schema`` becomes one editor chosen from its type and
metadata (``min``/``max``, ``choices``, ``kind``), with its ``help`` as tool tip. After
every edit the form builds a config, runs ``problems(cfg)`` and shows each problem next
to the field it names, so the person sees what to fix before pressing Train.

The form's parts beside this module: ``setup_editors`` (one editor per knob),
``setup_fields`` (a field's frame and problem line, collapsible sections) and
``setup_load_save`` (presets and TOML files).
"""
from __future__ import annotations

import html
from dataclasses import Field, fields
from typing import Any

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QAction, QColor, QPalette
from PySide6.QtWidgets import (QFormLayout, QFrame, QHBoxLayout, QLabel, QMenu, QPushButton,
                               QScrollArea, QSizePolicy, QSpinBox, QVBoxLayout, QWidget)

from ..formats import format_float, human_count
from .launch_command import LaunchCommand
from .setup_editors import Editor, NoWheelCombo, ParseError, RangeGuardMixin, make_editor
from .setup_fields import FieldRow, Section
from .setup_load_save import CUSTOM_PRESET, SetupLoadSaveMixin
# Importable from here as before the form's parts moved out:
from .setup_editors import LAYER_SETS, SPECIAL_ZERO  # noqa: F401
from ...config import (PRESETS, SECTIONS, ConfigError, ExperimentConfig, copy_config, default,
                       problems, section_fields)
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


# ---------------------------------------------------------------- the panel

class SetupPanel(SetupLoadSaveMixin, QWidget):
    """The experiment form. ``config()`` / ``set_config(cfg)``; emits ``configChanged(cfg)``
    after every edit and ``validityChanged(bool)`` when the config turns valid/invalid."""

    configChanged = Signal(object)
    validityChanged = Signal(bool)
    presetChanged = Signal(str)       # a preset was chosen (its PRESETS name)
    configFileChanged = Signal(str)   # a TOML was loaded from or saved to this path
    sweepRequested = Signal(str)      # "Vary in a Sweep…" on a field's label: its path

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._editors: dict[str, Editor] = {}
        self._rows: dict[str, FieldRow] = {}
        self._labels: dict[str, QLabel] = {}
        self._sections: dict[str, Section] = {}
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
        self.preset_combo = NoWheelCombo()
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
            s = Section(sec, SECTION_TITLES.get(sec, sec.title()), sec in DEFAULT_EXPANDED)
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
        ed = make_editor(path, f, lambda: self.window())
        tip = ed.tip
        row = FieldRow(ed)
        label = QLabel(f.name)
        label.setToolTip(tip)
        label.setBuddy(ed.input)
        # Align the label with the editor's text baseline, not the error under it.
        label.setContentsMargins(0, 4, 0, 0)
        # Right-click on the name: vary this field in a sweep (the Run menu's Sweep…
        # starts from the field with the focus).
        label.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        label.customContextMenuRequested.connect(lambda pos, p=path, lb=label: self._label_menu(p, lb, pos))
        self._labels[path] = label
        form.addRow(label, row)
        ed.connect(lambda p=path: self._on_edited(p))
        if isinstance(ed.input, RangeGuardMixin):
            ed.input.on_corrected = lambda typed, p=path: self._on_corrected(p, typed)
        self._editors[path] = ed
        self._rows[path] = row
        if section is not None:
            self._section_of[path] = section


    def _label_menu(self, path: str, label: QLabel, pos) -> None:
        menu = QMenu(label)
        act = QAction(f"Vary {path} in a Sweep…", menu)
        act.setObjectName("varyFieldAction")
        act.triggered.connect(lambda: self.sweepRequested.emit(path))
        menu.addAction(act)
        menu.popup(label.mapToGlobal(pos))

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
    def field_label(self, path: str) -> QLabel:
        """The name shown left of the knob at ``path`` (its right-click menu varies it)."""
        return self._labels[path]

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

    def section(self, name: str) -> Section:
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
            except ParseError as e:
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

