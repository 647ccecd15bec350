"""The main window's actions, menus and toolbar.

Every command is one ``QAction`` made by ``_action`` (text, shortcut, icon, tip), added
to the window itself so its shortcut works even with the menu bar hidden, and placed in
the menus and the toolbar from there. A mixin of ``MainWindow``: the slots the actions
call (``train``, ``open_run_dialog``, ...) and the docks they toggle are the window's.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QStyle


class WindowActionsMixin:
    """Actions, menus and toolbar of ``MainWindow``."""

    def _action(self, text: str, slot, shortcut=None, icon=None, tip: str = "",
                checkable: bool = False) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        if icon is not None:
            a.setIcon(self.style().standardIcon(icon))
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.setCheckable(checkable)
        a.triggered.connect(slot)
        self.addAction(a)  # shortcuts work even when the menu bar is hidden
        return a

    def _build_actions(self) -> None:
        SP = QStyle.StandardPixmap
        K = QKeySequence.StandardKey
        self.new_action = self._action("&New Experiment", self.new_experiment, K.New,
                                       SP.SP_FileIcon, "Reset the setup to the default experiment")
        self.open_config_action = self._action("&Open Config…", self.open_config_dialog, K.Open,
                                               SP.SP_DialogOpenButton, "Load an experiment from a TOML file")
        self.save_config_action = self._action("&Save Config…", self.save_config_dialog, K.Save,
                                               SP.SP_DialogSaveButton, "Save the experiment as a TOML file")
        self.open_run_action = self._action("Open &Run…", self.open_run_dialog, "Ctrl+Shift+O",
                                            SP.SP_DirIcon, "Show a recorded run folder")
        self.inspect_action = self._action("&Inspect a Checkpoint…", self.inspect_dialog, None,
                                           None, "Route a corpus through a pretrained Hugging "
                                           "Face MoE checkpoint and record its routing")
        self.sample_action = self._action("Sample &Text from a Run…", self.sample_dialog, None,
                                          None, "Generate text from a run's weights and time it")
        self.export_action = self._action("&Export Run Data…", self.export_dialog, "Ctrl+E",
                                          None, "Export the shown run's records to CSV or Parquet")
        self.quit_action = self._action("&Quit", self.close, K.Quit, None, "Quit MoE Studio")
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)

        self.train_action = self._action("&Train", self.train, "F5", SP.SP_MediaPlay,
                                         "Train the experiment in the setup panel")
        self.pause_action = self._action("&Pause", self.toggle_pause, "F6", SP.SP_MediaPause,
                                         "Pause or resume after the current step")
        self.stop_action = self._action("&Stop", self.stop, "Shift+F5", SP.SP_MediaStop,
                                        "Stop after the current step and save a checkpoint")

        self.dark_action = self._action("&Dark Palette", self.set_dark, "Ctrl+Shift+D", None,
                                        "Switch between the light and the dark palette",
                                        checkable=True)
        self.about_action = self._action("&About MoE Studio", self._about)
        self.view_help_action = self._action("&What Am I Looking At?", self.show_view_help,
                                             "F1", None,
                                             "What the current view shows")
        self.shortcuts_action = self._action("&Keyboard Shortcuts", self.show_shortcuts,
                                             "Ctrl+/", None, "Every keyboard shortcut")
        self.train_button.setDefaultAction(self.train_action)
        self.pause_button.setDefaultAction(self.pause_action)
        self.stop_button.setDefaultAction(self.stop_action)

    def _build_menus(self, view_titles: list[str]) -> None:
        """The menu bar; the Help menu has one item per view of ``view_titles``."""
        mb = self.menuBar()
        m = mb.addMenu("&File")
        m.addAction(self.new_action)
        m.addAction(self.open_config_action)
        m.addAction(self.save_config_action)
        m.addSeparator()
        m.addAction(self.open_run_action)
        m.addAction(self.inspect_action)
        m.addAction(self.sample_action)
        self.sample_menu = m.addMenu("Open &Sample Run")
        self.sample_menu.aboutToShow.connect(self._fill_sample_menu)
        m.addAction(self.export_action)
        m.addSeparator()
        m.addAction(self.quit_action)

        m = mb.addMenu("&Run")
        m.addAction(self.train_action)
        m.addAction(self.pause_action)
        m.addAction(self.stop_action)
        from ..widgets.sweep_dialog import install_sweep_actions
        install_sweep_actions(self, m)

        m = mb.addMenu("&View")
        m.addAction(self.dark_action)
        m.addSeparator()
        a = self.setup_dock.toggleViewAction()
        a.setText("&Experiment Panel")
        a.setShortcut(QKeySequence("Ctrl+1"))
        m.addAction(a)
        a = self.runs_dock.toggleViewAction()
        a.setText("&Runs Panel")
        a.setShortcut(QKeySequence("Ctrl+2"))
        m.addAction(a)
        self._view_menu = m
        m = self.help_menu = mb.addMenu("&Help")
        m.addAction(self.view_help_action)
        # One item per view, flat: a submenu would hide them behind a hover.
        m.addSection("Each view")
        for title in view_titles:
            a = m.addAction(f"{title} View")
            a.setStatusTip(f"What the {title} view shows")
            a.triggered.connect(lambda _=False, t=title: self.show_view_help(t))
        m.addSeparator()
        m.addAction(self.shortcuts_action)
        m.addSeparator()
        m.addAction(self.about_action)

    def _build_toolbar(self) -> None:
        tb = self.addToolBar("Run")
        tb.setObjectName("runToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addAction(self.train_action)
        tb.addAction(self.pause_action)
        tb.addAction(self.stop_action)
        tb.addSeparator()
        tb.addAction(self.open_run_action)
        # Hidden until asked for (View > Toolbar): the experiment panel has the same
        # Train / Pause / Stop buttons, and two sets confuse a first look.
        tb.hide()
        a = tb.toggleViewAction()
        a.setText("&Toolbar")
        self._view_menu.addAction(a)
        self.toolbar = tb
