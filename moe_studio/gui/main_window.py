"""The main window: setup form (left), dashboards (centre), runs (below), status bar.

Data flow (DESIGN.md): the form makes a config; Train hands it to the
``TrainingController`` (the one place Qt meets the engine); the engine writes the run
store; every dashboard reads that store. The window itself only routes run folders to
dashboards and shows the controller's small progress signals in the status bar.
"""
from __future__ import annotations

import html
import importlib
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QHBoxLayout, QLabel,
                               QMainWindow, QMessageBox, QProgressBar, QSizePolicy,
                               QStyle, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from .. import __version__
from ..config import PRESETS, ExperimentConfig, default
from ..paths import sample_runs_dir
from ..store import RunFileError, list_runs, open_run
from . import app_log, theme
from .panels.runs import RunsPanel
from ..store.export import export_run
from .widgets.export_dialog import ExportDialog
from .formats import format_eta, format_rate  # noqa: F401 (format_eta: API)
from .run.live_run import LiveRun
from .startup_checks import environment_problem, runs_location
from .panels.setup import SetupPanel
from .views.help import shortcuts_html, view_help_html
from .run.tasks import BackgroundTask
from .run.worker import TrainingController

# The centre tabs, in order: (title, "module:Class"). Every dashboard is a QWidget made
# without arguments that offers set_runs(paths), start_follow(), stop_follow(), refresh().
# Adding a dashboard is one line here.
DASHBOARDS: list[tuple[str, str]] = [
    ("Training", "moe_studio.gui.views.training:TrainingDashboard"),
    ("Gates", "moe_studio.gui.views.gates:GateDashboard"),
    ("Experts", "moe_studio.gui.views.experts:ExpertsDashboard"),
    ("Routing", "moe_studio.gui.views.routing:RoutingDashboard"),
    ("Precision", "moe_studio.gui.views.precision:PrecisionDashboard"),
    ("Ensemble", "moe_studio.gui.views.ensemble:EnsembleDashboard"),
    ("Compare", "moe_studio.gui.views.compare:CompareDashboard"),
]

# Seconds between the stop request of a close during training and killing the engine
# process (a step, evaluation and checkpoint normally end well within it).
CLOSE_KILL_S = 20.0

log = logging.getLogger(__name__)

START_HINT = "Ready: press Train (F5), or double-click a sample run to open it."

STATE_TEXT = {
    "idle": "Ready", "starting": "Starting…", "running": "Running", "paused": "Paused",
    "stopping": "Stopping…", "finished": "Finished", "stopped": "Stopped", "failed": "Failed",
}
# The theme's run-status colours, for the controller's states.
_STATE_COLOR = {"running": "running", "starting": "running", "paused": "interrupted",
                "stopping": "interrupted", "stopped": "stopped", "failed": "failed"}


def _load_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def show_error(parent: QWidget, title: str, message: str, details: str | None = None,
               informative: str | None = None, object_name: str = "errorBox") -> QMessageBox:
    """A non-blocking error box: the message, and the traceback behind "Show Details…"."""
    box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok,
                      parent)
    box.setObjectName(object_name)
    box.setTextFormat(Qt.TextFormat.PlainText)
    if informative:
        box.setInformativeText(informative)
    if details:
        box.setDetailedText(details)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.open()
    return box


class MainWindow(QMainWindow):
    """MoE Studio's main window.

    ``settings``: where geometry, palette, last preset and last config folder are kept
    (default: the application's QSettings). ``runs_dir``: where new runs go (default:
    ``default_runs_dir()``). ``trainer_factory``: for tests, passed to the controller.
    ``engine_mode``: "process" or "thread" (see ``worker``; default: its default).
    """

    def __init__(self, *, settings: QSettings | None = None, runs_dir: str | Path | None = None,
                 trainer_factory: Any = None, config: ExperimentConfig | None = None,
                 engine_mode: str | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings if settings is not None else QSettings()
        # A bad $MOE_STUDIO_* or runs folder holds Train back with its one line (run_note).
        self.runs_dir, problem = runs_location(runs_dir)
        self.environment_problem = environment_problem() or problem
        self.controller = TrainingController(self, trainer_factory=trainer_factory,
                                             mode=engine_mode)
        # The live run's state, step, rate and ETA: the status bar, the runs panel and
        # the dashboards' status lines all show it from here.
        self.live = LiveRun(self.controller, self)
        self.export_task = BackgroundTask(self, name="export")
        self._closing = False        # close requested while busy: close once idle
        # Closing escalates: a stop request, then after CLOSE_KILL_S the engine is killed.
        self._close_timer = QTimer(self)
        self._close_timer.setObjectName("closeEscalation")
        self._close_timer.setSingleShot(True)
        self._close_timer.timeout.connect(self._end_engine)
        self._shown_runs: list[Path] = []
        self._live = False           # follow the shown runs (they are still growing)
        self._stale: set[int] = set()  # tab indexes that have not seen the shown runs yet
        # Tab indexes showing the right runs but not what they gained since: a visit
        # reads only the new rows (a tab switch must never rebuild a view from scratch).
        self._behind: set[int] = set()
        self._error_box: QMessageBox | None = None
        self._export_target: Path | None = None
        self._running_name = ""
        self._run_status_cleared = False   # the status bar no longer shows the last run

        self.setObjectName("MainWindow")
        self.setWindowTitle("MoE Studio")
        self.setDockNestingEnabled(True)
        self._build_central()
        self._build_setup_dock()
        self._build_runs_dock()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self._connect()
        self._restore_settings(config)
        self._update_actions()
        # What to do first, until anything else is said there.
        self.statusBar().showMessage(START_HINT)

    # ================================================================ building
    def _build_central(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.setObjectName("dashboardTabs")
        self.dashboards: list[QWidget] = []
        for title, spec in DASHBOARDS:
            self.add_dashboard(_load_class(spec)(), title)
        self.setCentralWidget(self.tabs)

    def add_dashboard(self, widget: QWidget, title: str) -> int:
        """Add a centre tab; it is shown the current runs the first time it is opened."""
        widget.setObjectName(f"dashboard:{title}")
        wants_controller = getattr(widget, "set_training_controller", None)
        if wants_controller is not None:   # e.g. Routing: text through the live weights
            wants_controller(self.controller)
        self.dashboards.append(widget)
        i = self.tabs.addTab(widget, title)
        if self._shown_runs:
            self._stale.add(i)
        return i

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

    def _build_runs_dock(self) -> None:
        dirs = [self.runs_dir, sample_runs_dir()]
        self.runs_panel = RunsPanel(dirs)
        self.runs_dock = QDockWidget("Runs", self)
        self.runs_dock.setObjectName("runsDock")
        self.runs_dock.setWidget(self.runs_panel)
        # Below the dashboards: the runs table gets the width its columns want and the
        # plots keep theirs; the experiment dock still runs the full height on the left.
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.TopLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.runs_dock)

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

    def _build_menus(self) -> None:
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
        from .widgets.sweep_dialog import install_sweep_actions
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
        for title, _spec in DASHBOARDS:
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

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.device_label = QLabel("Device: —")
        self.device_label.setToolTip("The device of the current run")
        self.state_label = QLabel(STATE_TEXT["idle"])
        self.state_label.setTextFormat(Qt.TextFormat.RichText)
        self.step_label = QLabel("Step —")
        self.rate_label = QLabel(format_rate(None))
        self.rate_label.setToolTip("Training throughput (tokens per second, all members)")
        self.eta_label = QLabel("ETA —")
        self.eta_label.setToolTip("Estimated time to the last step")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFixedWidth(180)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("")  # no "0%" before any run; "%p%" once one starts
        # Widths fixed for the longest text each label shows, so 20 progress updates a
        # second neither make the status bar jitter nor re-lay it out.
        fm = self.fontMetrics()
        for w, longest in ((self.device_label, "Device: cuda:0"),
                           (self.state_label, "● Stopping…"),
                           (self.step_label, "Step 1,000,000 / 1,000,000"),
                           (self.rate_label, "999.9 k tok/s"),
                           (self.eta_label, "ETA 10 h 00 min")):
            w.setContentsMargins(6, 0, 6, 0)
            w.setMinimumWidth(fm.horizontalAdvance(longest) + 14)
            sb.addPermanentWidget(w)
        for w in (self.step_label, self.rate_label, self.eta_label):
            w.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        sb.addPermanentWidget(self.progress_bar)

    def _connect(self) -> None:
        p = self.setup_panel
        p.validityChanged.connect(lambda _ok: self._update_actions())
        p.configChanged.connect(self._on_config_changed)
        p.presetChanged.connect(lambda name: self.settings.setValue("config/last_preset", name))
        p.configFileChanged.connect(self._on_config_file)
        c = self.controller
        c.started.connect(self._on_started)
        self.live.changed.connect(self._show_live)
        c.stateChanged.connect(self._on_state)
        c.failed.connect(self._on_failed)
        c.finished.connect(self._on_finished)
        self.export_task.succeeded.connect(self._on_export_done)
        self.export_task.failed.connect(self._on_export_failed)
        self.export_task.finished.connect(self._on_export_finished)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.runs_panel.runOpened.connect(self.open_run_path)
        self.runs_panel.runsChecked.connect(self._on_runs_checked)
        from .panels.continue_dialog import continue_run
        self.runs_panel.continueRequested.connect(lambda path: continue_run(self, path))

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

    # ================================================================ commands
    @Slot()
    def new_experiment(self) -> None:
        self.setup_panel.set_config(default())
        self.settings.remove("config/last_preset")
        self.statusBar().showMessage("New experiment: the default setup", 4000)

    @Slot()
    def open_config_dialog(self) -> None:
        self.setup_panel.open_toml_dialog()

    @Slot()
    def save_config_dialog(self) -> None:
        self.setup_panel.save_toml_dialog()

    @Slot()
    def train(self) -> None:
        if self.controller.busy or not self.setup_panel.is_valid() or self.environment_problem:
            return
        cfg = self.setup_panel.config()
        self.start_run(cfg, cfg)

    def start_run(self, cfg, job) -> None:
        """Start ``job``: the config ``cfg`` itself, or a run of ``cfg`` to continue
        (``engine.resume.ResumeRequest``)."""
        self._running_name = cfg.name
        self.live.begin(cfg)
        self._run_status_cleared = False
        self.device_label.setText("Device: …")
        self.step_label.setText(f"Step 0 / {cfg.train.steps:,}")
        self.rate_label.setText(format_rate(None))
        self.eta_label.setText("ETA —")
        self.progress_bar.setRange(0, max(1, cfg.train.steps))
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        self.controller.start(job, self.runs_dir)

    @Slot()
    def toggle_pause(self) -> None:
        self.controller.toggle_pause()

    @Slot()
    def stop(self) -> None:
        self.controller.stop()

    @Slot(bool)
    def set_dark(self, dark: bool) -> None:
        app = QApplication.instance()
        if app is not None:
            theme.apply_palette(app, bool(dark))
        if self.dark_action.isChecked() != bool(dark):
            self.dark_action.setChecked(bool(dark))
        self.settings.setValue("view/dark", bool(dark))
        self._on_state(self.controller.state)  # re-colour the state label

    @Slot()
    def sample_dialog(self) -> None:
        from .widgets.sample_dialog import open_sample_dialog
        self._sample_dialog = open_sample_dialog(self)

    @Slot()
    def inspect_dialog(self) -> None:
        if not self.controller.busy:
            from .widgets.inspect_dialog import open_inspect_dialog
            self._inspect_dialog = open_inspect_dialog(self)

    @Slot()
    def open_run_dialog(self) -> None:
        start = str(self.runs_dir if self.runs_dir.exists() else Path.cwd())
        d = QFileDialog.getExistingDirectory(self, "Open run folder", start)
        if d:
            self.open_run_path(d)

    def open_run_path(self, path: str | Path) -> bool:
        """Show the run at ``path`` in the dashboards. A run that cannot be read gives a
        message box with the store's one-line error and changes nothing."""
        try:
            reader = open_run(path)
        except RunFileError as e:
            self._warn("Could not open run", str(e))
            return False
        try:
            status, name, run_dir = reader.status, reader.name, Path(reader.path)
        finally:
            reader.close()
        self.show_runs([run_dir], live=(status == "running"))
        self.statusBar().showMessage(f"Opened run {name} ({status})", 5000)
        return True

    def show_runs(self, paths: list[Path], live: bool = False) -> None:
        """Show ``paths`` in the dashboards (several: overlaid). ``live``: keep polling.
        The runs already shown (a run that just finished, a run checked again) are only
        read on from where each view is, never reloaded."""
        paths = [Path(p) for p in paths]
        same = paths == self._shown_runs
        self._shown_runs = paths
        self._live = live
        last = self.live.last_run_dir
        if not self.controller.busy and last and \
                Path(last) not in self._shown_runs and self.controller.state in \
                ("finished", "stopped", "failed"):
            # "Failed" (or "Finished") belonged to that run, not to the runs now viewed.
            self._clear_run_status()
        for d in self.dashboards:
            d.stop_follow()
        if same:
            self._behind = set(range(self.tabs.count())) - self._stale
        else:
            self._stale = set(range(self.tabs.count()))
            self._behind = set()
        self._sync_current_tab()
        self._update_actions()

    @Slot()
    def export_dialog(self) -> None:
        """Ask for format and folder, then export the shown run in the background."""
        if not self._shown_runs or self.export_task.busy:
            return
        run = self._shown_runs[0]
        start = Path(str(self.settings.value("export/last_dir", "") or Path.home()))
        dlg = ExportDialog(run, run.name, start, self)
        if dlg.exec() != ExportDialog.DialogCode.Accepted:
            return
        self.settings.setValue("export/last_dir", str(dlg.folder().parent))
        self.export_run_to(run, dlg.fmt(), dlg.folder())

    def export_run_to(self, run: Path, fmt: str, folder: Path) -> None:
        """Export ``run`` as ``fmt`` files into ``folder``, off the GUI thread."""
        self._export_target = folder
        self.statusBar().showMessage(f"Exporting {run.name} to {folder}…")
        self.export_task.start(export_run, run, fmt, folder)
        self._update_actions()

    @Slot(object)
    def _on_export_done(self, files: Any) -> None:
        n = len(files) if isinstance(files, (list, tuple)) else 0
        self.statusBar().showMessage(f"Exported {n} files to {self._export_target}", 8000)

    @Slot(str, str)
    def _on_export_failed(self, message: str, tb: str) -> None:
        self.statusBar().clearMessage()
        show_error(self, "Export failed", message, tb, object_name="exportErrorBox")

    @Slot()
    def _on_export_finished(self) -> None:
        self._update_actions()
        if self._closing:
            QTimer.singleShot(0, self.close)

    def stop_and_close(self) -> None:
        """Close without asking: a run in progress is stopped (checkpoint, 'stopped')
        and the window closes once it has (SIGTERM / SIGINT to the app)."""
        if self.controller.busy or self.export_task.busy:
            self._closing = True
            if self.controller.busy:
                self.statusBar().showMessage("Stopping the run and saving a checkpoint…")
                self.controller.stop()
                self._close_timer.start(int(CLOSE_KILL_S * 1000))   # then the engine is killed
            else:
                self.statusBar().showMessage("Finishing the export…")
            return
        self.close()

    def confirm_stop_and_close(self) -> bool:
        """Ask before closing during training. True: stop the run and close."""
        box = QMessageBox(QMessageBox.Icon.Question, "Training in progress",
                          "A run is still training.", QMessageBox.StandardButton.NoButton, self)
        box.setInformativeText("Stop it (a checkpoint is saved and the run is kept) and close "
                               "MoE Studio?")
        stop = box.addButton("Stop and Close", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(stop)
        box.exec()
        return box.clickedButton() is stop

    # ================================================================ reactions
    def _update_actions(self) -> None:
        busy = self.controller.busy
        state = self.controller.state
        valid = self.setup_panel.is_valid() and not self.environment_problem
        self.train_action.setEnabled(valid and not busy)
        n = len(self.setup_panel.problems())
        if busy:
            tip = "A run is in progress"
        elif self.environment_problem:
            tip = self.environment_problem
        elif not valid:
            tip = f"Fix the {n} problem{'s' if n != 1 else ''} in the experiment setup first"
        else:
            tip = "Train the experiment in the setup panel (F5)"
        self.train_action.setToolTip(tip)
        if busy:
            name = self._running_name or "the run"
            note = f"Training {name}. Changes here apply to the next run."
        elif self.environment_problem:
            note = (f"Cannot train: {self.environment_problem}. Fix it and restart "
                    "MoE Studio; runs can still be opened.")
        elif not valid:
            note = f"Fix the {n} problem{'s' if n != 1 else ''} above to train."
        else:
            note = ""
        self.run_note.setText(note)
        self.run_note.setVisible(bool(note))
        self.pause_action.setEnabled(busy and state in ("starting", "running", "paused"))
        paused = state == "paused"
        self.pause_action.setText("&Resume" if paused else "&Pause")
        self.pause_action.setIcon(self.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaPlay if paused else QStyle.StandardPixmap.SP_MediaPause))
        self.stop_action.setEnabled(busy and state != "stopping")
        self.inspect_action.setEnabled(not busy)
        self.new_action.setEnabled(True)
        self.export_action.setEnabled(bool(self._shown_runs) and not self.export_task.busy)

    def _update_title(self) -> None:
        name = self.setup_panel.config().name or "experiment"
        self.setWindowTitle(f"{name} — MoE Studio")

    @Slot(object)
    def _on_config_changed(self, cfg: ExperimentConfig) -> None:
        self._update_title()

    @Slot(str)
    def _on_config_file(self, path: str) -> None:
        self.settings.setValue("config/last_path", path)
        self.statusBar().showMessage(f"Config: {path}", 5000)

    @Slot(str)
    def _on_started(self, run_dir: str) -> None:
        c = self.controller
        self.device_label.setText(f"Device: {c.device}")
        self.progress_bar.setRange(0, max(1, c.total_steps))
        self.show_runs([Path(run_dir)], live=True)
        self._rescan_runs()
        self.statusBar().showMessage(f"Training into {run_dir}", 5000)

    @Slot()
    def _show_live(self) -> None:
        """The status bar from the live run (the same numbers every view shows)."""
        st = self.live.status()
        if st is None:
            return
        total = st.total_steps
        self.step_label.setText(f"Step {st.step:,} / {total:,}")
        self.rate_label.setText(format_rate(st.tokens_per_s))
        eta = "paused" if st.status == "paused" else format_eta(st.eta_s)
        self.eta_label.setText(f"ETA {eta}")
        if self.progress_bar.maximum() != max(1, total):
            self.progress_bar.setRange(0, max(1, total))
        self.progress_bar.setValue(min(int(st.step), self.progress_bar.maximum()))

    def _clear_run_status(self) -> None:
        """The status bar's run part back to idle: the run it described is not shown."""
        self.state_label.setText(STATE_TEXT["idle"])
        self.device_label.setText("Device: —")
        self.step_label.setText("Step —")
        self.rate_label.setText(format_rate(None))
        self.eta_label.setText("ETA —")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self._run_status_cleared = True

    @Slot(str)
    def _on_state(self, state: str) -> None:
        if state in ("finished", "stopped", "failed") and self._run_status_cleared:
            state = "idle"
        text = STATE_TEXT.get(state, state)
        color = theme.status_color(_STATE_COLOR.get(state, ""), self.dark_action.isChecked())
        if color is not None:
            text = f'<span style="color:{color.name()}">●</span> {text}'
        self.state_label.setText(text)
        self._update_actions()

    @Slot(str, str)
    def _on_failed(self, message: str, tb: str) -> None:
        run = self.controller.run_dir
        informative = ("The run is marked failed; everything it recorded is kept in\n" + run
                       if run else "No run folder was created.")
        self._error_box = show_error(self, "Training failed", message, tb, informative,
                                     object_name="trainingErrorBox")

    @Slot(str)
    def _on_finished(self, status: str) -> None:
        self.eta_label.setText("ETA —")
        self.rate_label.setText(format_rate(None))  # a stopped run has no throughput
        if status == "finished":
            self.progress_bar.setValue(self.progress_bar.maximum())
        if self._live:
            self._live = False
            for d in self.dashboards:
                d.stop_follow()
            # one last read of the rows written while closing: now here, elsewhere on a visit
            self._behind = set(range(self.tabs.count())) - self._stale
            self._sync_current_tab()
        self._rescan_runs()
        self._update_actions()
        self.statusBar().showMessage(f"Run {status}", 5000)
        if self._closing:
            QTimer.singleShot(0, self.close)

    @Slot(int)
    def _on_tab_changed(self, index: int) -> None:
        for i, d in enumerate(self.dashboards):
            if i != index:
                d.stop_follow()  # only the visible dashboard polls the store
        self._sync_current_tab()

    def _sync_current_tab(self) -> None:
        i = self.tabs.currentIndex()
        if i < 0:
            return
        d = self.tabs.widget(i)
        if i in self._stale:
            self._stale.discard(i)
            self._behind.discard(i)
            d.set_runs(list(self._shown_runs))
        elif i in self._behind and not self._live:
            self._behind.discard(i)
            d.refresh()         # only the rows the runs gained since this view last read
        if self._live:
            # Shown at once as it was; its next frame reads what the run gained meanwhile
            # (the catch-up is no part of the switch).
            self._behind.discard(i)
            d.start_follow()

    @Slot(list)
    def _on_runs_checked(self, paths: list) -> None:
        """Checked runs are overlaid; unchecking them all keeps what is shown, unless
        what is shown is checked runs the filter now hides: those leave the views."""
        if not paths:
            hidden = set(self.runs_panel.hidden_checked_runs())
            if self._shown_runs and hidden and all(str(p) in hidden for p in self._shown_runs):
                self.show_runs([])
            return
        live = self.controller.busy and self.controller.run_dir in [str(p) for p in paths]
        self.show_runs([Path(p) for p in paths], live=live)

    def _rescan_runs(self) -> None:
        # The panel also rescans every 2 s by itself; this makes a new or just-ended
        # run show up at once. In the background: a synchronous scan opens every run
        # file in the GUI thread (80-130 ms measured with a few runs on a busy machine).
        panel = self.runs_panel
        scan = (getattr(panel, "rescan_async", None) or getattr(panel, "_rescan_async", None)
                or panel.rescan)
        scan()

    def _fill_sample_menu(self) -> None:
        m = self.sample_menu
        m.clear()
        try:
            infos = list_runs(sample_runs_dir())
        except RunFileError:
            infos = []
        for info in infos:
            label = info.name or info.run_id
            a = m.addAction(f"{label}   ({info.status})")
            if info.error:
                a.setEnabled(False)
                a.setToolTip(info.error)
            else:
                a.setToolTip(str(info.path))
                a.triggered.connect(lambda _=False, p=info.path: self.open_run_path(p))
        if not infos:
            a = m.addAction("(no sample runs)")
            a.setEnabled(False)

    def _warn(self, title: str, message: str) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok,
                          self)
        box.setObjectName("warningBox")
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        return box

    def _info(self, title: str, text: str, object_name: str) -> QMessageBox:
        """A non-blocking information box with rich ``text``; one per ``object_name``."""
        for old in self.findChildren(QMessageBox, object_name):
            old.setObjectName("")    # closing only schedules its deletion
            old.close()
        box = QMessageBox(QMessageBox.Icon.Information, title, text,
                          QMessageBox.StandardButton.Close, self)
        box.setObjectName(object_name)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        return box

    @Slot()
    def show_view_help(self, title: str | None = None) -> QMessageBox:
        """Help > What Am I Looking At?: a few lines on the view ``title`` (default: the
        current tab)."""
        if not isinstance(title, str):
            title = self.tabs.tabText(self.tabs.currentIndex())
        return self._info(f"{title} view", view_help_html(title), "viewHelpBox")

    @Slot()
    def show_shortcuts(self) -> QMessageBox:
        """Help > Keyboard Shortcuts: every action in the menus that has a shortcut."""
        actions: list[QAction] = []
        menus = [a.menu() for a in self.menuBar().actions() if a.menu() is not None]
        while menus:
            menu = menus.pop(0)
            for a in menu.actions():
                if a.menu() is not None:
                    menus.append(a.menu())
                elif not a.isSeparator():
                    actions.append(a)
        return self._info("Keyboard shortcuts", shortcuts_html(actions), "shortcutsBox")

    def _about(self) -> None:
        QMessageBox.about(self, "About MoE Studio",
                          f"<b>MoE Studio</b> {__version__}<br><br>See inside Mixture-of-Experts "
                          f"language models while they train: routing, expert load, mixed "
                          f"precision and ensembles.<br><br>New runs are saved in<br>"
                          f"<tt>{html.escape(str(self.runs_dir))}</tt>" + self._log_line())

    @staticmethod
    def _log_line() -> str:
        path = app_log.log_path()
        return (f"<br><br>The app's log (errors, warnings):<br><tt>{html.escape(str(path))}</tt>"
                if path is not None else "")

    # ================================================================ closing
    @Slot()
    def _end_engine(self) -> None:
        """The engine did not stop within CLOSE_KILL_S of the close: kill its process
        (the run keeps what it recorded; the window closes once its thread reports)."""
        if self.controller.busy and self.controller.terminate():
            log.warning("the engine did not stop within %g s of closing: killed it", CLOSE_KILL_S)
            self.statusBar().showMessage(f"The run did not stop within {CLOSE_KILL_S:g} s: "
                                         "ended its engine process")

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.controller.busy or self.export_task.busy:
            # Never block the GUI thread on a training step or an export: ask, request
            # the stop, and close once everything reports finished.
            event.ignore()
            if self._closing:
                return
            if self.controller.busy and not self.confirm_stop_and_close():
                return
            self.stop_and_close()
            return
        self._close_timer.stop()
        self._save_settings()
        for d in self.dashboards:
            d.stop_follow()
        self.runs_panel.shutdown()  # docked widgets get no closeEvent of their own
        # Nothing is left to wait for; this keeps the invariant explicit.
        self.controller.shutdown(5000)
        self.export_task.shutdown(5000)
        event.accept()


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)
