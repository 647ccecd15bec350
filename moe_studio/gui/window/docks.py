"""The main window's docks and what it remembers between sessions.

The experiment dock (setup form, the note on what holds Train back, Train / Pause /
Stop) runs the full height on the left; the runs dock lies under the dashboards.
Geometry, dock layout, palette, open form sections, last preset and config folder are
kept in the window's ``settings`` and restored at start (a first start fits the screen).
A mixin of ``MainWindow``.
"""
from __future__ import annotations

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
    def _restore_settings(self, config: ExperimentConfig | None) -> None:
        s = self.settings
        geo = s.value("window/geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        else:
            # 1400 x 900, or the screen's free area where that is smaller (a 1280 x 800
            # laptop): a first window never starts partly off the screen.
            screen = self.screen() or QGuiApplication.primaryScreen()
            room = screen.availableGeometry() if screen is not None else None
            w, h = 1400, 900
            if room is not None and room.width() > 0 and room.height() > 0:
                w, h = min(w, room.width()), min(h, room.height())
            self.resize(w, h)
            self.resizeDocks([self.setup_dock], [360], Qt.Orientation.Horizontal)
            # Six runs under the two section rows, not the four that 210 px showed.
            title = max(0, self.runs_dock.minimumSizeHint().height()
                        - self.runs_panel.minimumSizeHint().height())
            self.resizeDocks([self.runs_dock], [self.runs_panel.preferred_height(6) + title],
                             Qt.Orientation.Vertical)
        state = s.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
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

    def _save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("view/dark", self.dark_action.isChecked())
        s.setValue("setup/expanded", self.setup_panel.expanded_sections())
        s.sync()


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)
