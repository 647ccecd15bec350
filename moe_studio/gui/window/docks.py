"""The main window's docks and what it remembers between sessions.

The experiment dock (setup form, the note on what holds Train back, Train / Pause /
Stop) runs the full height on the left; the runs dock lies under the dashboards.
Geometry, dock layout, palette, open form sections, last preset and config folder are
kept in the window's ``settings`` and restored at start (a first start fits the screen).
A mixin of ``MainWindow``.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import (QDockWidget, QHBoxLayout, QLabel, QSizePolicy, QToolButton,
                               QVBoxLayout, QWidget)

from .. import theme
from ..panels.runs import RunsPanel
from ..panels.setup import SetupPanel
from ...config import PRESETS, ExperimentConfig


class WindowDocksMixin:
    """Docks and remembered settings of ``MainWindow``."""

    def _build_setup_dock(self) -> None:
        self.setup_panel = SetupPanel()
        box = QWidget()
        col = QVBoxLayout(box)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.setup_panel, 1)
        # One line above the buttons, when there is something to say: what to fix before
        # Train works, or that edits made while a run trains apply to the next run.
        self.run_note = QLabel()
        self.run_note.setObjectName("runNote")
        self.run_note.setWordWrap(True)
        self.run_note.setContentsMargins(12, 6, 12, 0)
        self.run_note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.run_note.hide()
        col.addWidget(self.run_note)
        self._run_row = QWidget()
        row = QHBoxLayout(self._run_row)
        row.setContentsMargins(10, 8, 10, 10)
        row.setSpacing(6)
        self.train_button = QToolButton()
        self.pause_button = QToolButton()
        self.stop_button = QToolButton()
        for b in (self.train_button, self.pause_button, self.stop_button):
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            b.setMinimumHeight(30)
            row.addWidget(b)
        f = self.train_button.font()
        f.setBold(True)
        self.train_button.setFont(f)
        col.addWidget(self._run_row)
        self.setup_dock = QDockWidget("Experiment", self)
        self.setup_dock.setObjectName("setupDock")
        self.setup_dock.setWidget(box)
        self.setup_dock.setAllowedAreas(Qt.DockWidgetArea.LeftDockWidgetArea |
                                        Qt.DockWidgetArea.RightDockWidgetArea)
        self.setup_dock.setMinimumWidth(340)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.setup_dock)

    def _build_runs_dock(self, dirs: list[Path]) -> None:
        """The runs dock: the runs panel over ``dirs`` (new runs, then sample runs)."""
        self.runs_panel = RunsPanel(dirs)
        self.runs_dock = QDockWidget("Runs", self)
        self.runs_dock.setObjectName("runsDock")
        self.runs_dock.setWidget(self.runs_panel)
        # Below the dashboards: the runs table gets the width its columns want and the
        # plots keep theirs; the experiment dock still runs the full height on the left.
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.TopLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.runs_dock)

    # ================================================================ settings
    def _screen_room(self):
        screen = self.screen() or QGuiApplication.primaryScreen()
        room = screen.availableGeometry() if screen is not None else None
        return room if room is not None and room.width() > 0 and room.height() > 0 else None

    def _restore_settings(self, config: ExperimentConfig | None) -> None:
        s = self.settings
        geo = s.value("window/geometry")
        room = self._screen_room()
        here = f"{room.width()}x{room.height()}" if room is not None else ""
        # A geometry saved on a screen of another size (a laptop after an external
        # monitor) is not restored: Qt squeezes it into the smaller screen at an odd size
        # (1400 x 900 came back as 1215 x 627 on 1280 x 800) with the docks crushed.
        saved_on = str(s.value("window/screen", "") or "")
        if saved_on:
            same_screen = saved_on == here
        else:       # settings of an older version: the width Qt keeps in the geometry
            width = _saved_screen_width(geo)
            screen = self.screen() or QGuiApplication.primaryScreen()
            same_screen = width is None or screen is None or width == screen.geometry().width()
        restored = (isinstance(geo, QByteArray) and not geo.isEmpty() and same_screen
                    and self.restoreGeometry(geo))
        if not restored:
            # 1400 x 900, or the screen's free area where that is smaller (a 1280 x 800
            # laptop): a first window never starts partly off the screen.
            w, h = 1400, 900
            if room is not None:
                w, h = min(w, room.width()), min(h, room.height())
            self.resize(w, h)
            self.resizeDocks([self.setup_dock], [360], Qt.Orientation.Horizontal)
        state = s.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        if not restored:
            self._give_runs_dock_room()
        # A restored layout is laid out when the window is first shown: checked then.
        self._check_runs_dock = restored
        dark = _as_bool(s.value("view/dark", theme.is_dark()))
        self.dark_action.setChecked(dark)
        if dark != theme.is_dark():
            self.set_dark(dark)
        expanded = s.value("setup/expanded")
        if isinstance(expanded, str):
            expanded = [expanded] if expanded else []
        if isinstance(expanded, list):
            self.setup_panel.set_expanded_sections([str(x) for x in expanded])
        self.setup_panel.config_path = str(s.value("config/last_path", "") or "")
        if config is not None:
            self.setup_panel.set_config(config)
        else:
            preset = s.value("config/last_preset")
            if isinstance(preset, str) and preset in PRESETS:
                self.setup_panel.set_preset(preset)
        self._update_title()

    def _runs_dock_height(self, rows: int) -> int:
        title = max(0, self.runs_dock.minimumSizeHint().height()
                    - self.runs_panel.minimumSizeHint().height())
        return self.runs_panel.preferred_height(rows) + title

    def _give_runs_dock_room(self) -> None:
        # Six runs under the two section rows, not the four that 210 px showed.
        self.resizeDocks([self.runs_dock], [self._runs_dock_height(6)], Qt.Orientation.Vertical)

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if getattr(self, "_check_runs_dock", False):
            self._check_runs_dock = False
            if self._runs_dock_crushed():
                self._give_runs_dock_room()

    def _runs_dock_crushed(self) -> bool:
        """Whether a restored layout left the docked runs panel too short to show three
        runs (a layout saved in a taller window)."""
        d = self.runs_dock
        return (not d.isHidden() and not d.isFloating()
                and d.height() < self._runs_dock_height(3))

    def _save_settings(self) -> None:
        s = self.settings
        room = self._screen_room()
        s.setValue("window/screen", f"{room.width()}x{room.height()}" if room is not None else "")
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("view/dark", self.dark_action.isChecked())
        s.setValue("setup/expanded", self.setup_panel.expanded_sections())
        s.sync()


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


def _saved_screen_width(geo) -> int | None:
    """The width of the screen a ``saveGeometry()`` blob was saved on (Qt's format 2 and
    later: magic, version, frame and normal rectangles, screen number, maximised and
    full-screen flags, then that width), or None where it cannot be read."""
    try:
        raw = bytes(geo)
        magic, major = struct.unpack(">IH", raw[:6])
        if magic != 0x1D9D0CB or major < 2 or len(raw) < 50:
            return None
        return struct.unpack(">i", raw[46:50])[0]
    except (TypeError, struct.error):
        return None
