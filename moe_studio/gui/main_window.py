"""The main window: setup form (left), dashboards (centre), runs (below), status bar.

Data flow (DESIGN.md): the form makes a config; Train hands it to the
``TrainingController`` (the one place Qt meets the engine); the engine writes the run
store; every dashboard reads that store. The window itself only routes run folders to
dashboards and shows the controller's small progress signals in the status bar.

This module puts the window together and holds its commands (train, export, close);
its other parts are in ``gui/window/``, one idea each: ``actions`` (actions, menus,
toolbar), ``docks`` (the docks and remembered settings), ``following`` (which runs the
dashboards show and which one reads them), ``status`` (the status bar) and
``messages`` (error, warning and help boxes).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QTimer, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (QApplication, QMainWindow, QMessageBox, QStyle, QTabWidget,
                               QWidget)

from ..config import ExperimentConfig, default
from ..paths import sample_runs_dir
from ..store import RunFileError, list_runs
from . import theme
from ..store.export import export_run
from .widgets.export_dialog import ExportDialog
from .formats import format_eta, format_rate  # noqa: F401 (format_eta: API)
from .run.live_run import LiveRun
from .startup_checks import environment_problem, runs_location
from .run.tasks import BackgroundTask
from .run.weights_export import export_weights_in_child
from .run.worker import TrainingController
from .window.actions import WindowActionsMixin
from .window.docks import WindowDocksMixin
from .window.following import RunFollowingMixin
from .window.messages import MessagesMixin, show_error
from .window.status import RunStatusMixin
# Importable from here as before the window's parts moved out:
from .window.status import STATE_TEXT  # noqa: F401

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

def _load_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class MainWindow(WindowActionsMixin, WindowDocksMixin, RunFollowingMixin, RunStatusMixin,
                 MessagesMixin, QMainWindow):
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
        self._confirm_stop = None    # the question's "Stop and Close" while it is open
        # Closing escalates: a stop request, then after CLOSE_KILL_S the engine is killed.
        self._close_timer = QTimer(self)
        self._close_timer.setObjectName("closeEscalation")
        self._close_timer.setSingleShot(True)
        self._close_timer.timeout.connect(self._end_engine)
        self._init_following()
        self._error_box: QMessageBox | None = None
        self._export_target: Path | None = None
        self._running_name = ""
        self._run_status_cleared = False   # the status bar no longer shows the last run

        self.setObjectName("MainWindow")
        self.setWindowTitle("MoE Studio")
        self.setDockNestingEnabled(True)
        self._build_central()
        self._build_setup_dock()
        self._build_runs_dock([self.runs_dir, sample_runs_dir()])
        self._build_actions()
        self._build_menus([title for title, _spec in DASHBOARDS])
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
        if fmt == "safetensors":    # the weights: read with torch, in an engine process
            self.export_task.start(export_weights_in_child, run, folder)
        else:
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
        and the window closes once it has (SIGTERM / SIGINT to the app).

        The "Training in progress" question, if open, is answered "Stop and Close": it
        runs inside the window's close, which cannot close the window again until it
        returns (a signal during the question stopped the run and left window and
        question open)."""
        if self._confirm_stop is not None:
            self._confirm_stop.click()
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
        self._confirm_stop = stop
        try:
            box.exec()
        finally:
            self._confirm_stop = None
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
            if self._closing or (self.controller.busy and not self.confirm_stop_and_close()):
                event.ignore()
                return
            if self.controller.busy or self.export_task.busy:
                event.ignore()
                self.stop_and_close()
                return
            # (the run ended while the question was open: close now, as asked; a close
            # from here would be ignored, this close being still in progress)
        self._close_timer.stop()
        self._save_settings()
        for d in self.dashboards:
            d.stop_follow()
        self.runs_panel.shutdown()  # docked widgets get no closeEvent of their own
        # Nothing is left to wait for; this keeps the invariant explicit.
        self.controller.shutdown(5000)
        self.export_task.shutdown(5000)
        event.accept()
