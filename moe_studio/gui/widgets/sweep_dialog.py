"""Sweeps from the app: Run > Sweep… varies fields of the setup form's experiment (the
field with the keyboard focus first), shows how many runs that makes or what is wrong,
and starts the queue as a ``moe-studio sweep`` process; the queue window shows every
run's state, cancels, and opens the finished runs in Compare grouped by the swept keys.

The queue lives in the sweep folder (``sweep.queue``): the window only reads it and
asks for cancels, so a sweep started here or in a terminal looks the same, and it goes
on when the app closes.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
                               QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from ...config import ConfigError, ExperimentConfig
from ...sweep.grid import GridError, expand, parse_grid
from ...sweep.queue import QUEUE_NAME, SweepError, SweepQueue, cancel, runner_alive
from ..run.worker import child_command

POLL_MS = 500


def _focused_field(panel) -> str | None:
    """The setup form's field holding the keyboard focus (the one to vary), if any."""
    from PySide6.QtWidgets import QApplication
    w = QApplication.focusWidget()
    paths = panel.field_paths()
    while w is not None:
        for p in paths:
            if panel.field_widget(p) is w:
                return p
        w = w.parentWidget()
    return None


class _VaryRow(QWidget):
    def __init__(self, paths: list[str], key: str, values: str, on_change, on_remove):
        super().__init__()
        self.key_box = QComboBox()
        self.key_box.setObjectName("sweepKey")
        self.key_box.addItems(paths)
        self.key_box.setCurrentText(key)
        self.values_edit = QLineEdit(values)
        self.values_edit.setObjectName("sweepValues")
        self.values_edit.setPlaceholderText("values, separated by commas: 1,2,4")
        remove = QPushButton("Remove")
        remove.setObjectName("sweepRemove")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.key_box, 2)
        lay.addWidget(self.values_edit, 3)
        lay.addWidget(remove)
        self.key_box.currentTextChanged.connect(on_change)
        self.values_edit.textChanged.connect(on_change)
        remove.clicked.connect(lambda: on_remove(self))

    def arg(self) -> str:
        return f"{self.key_box.currentText()}={self.values_edit.text()}"


class SweepDialog(QDialog):
    """Vary fields of ``base``; Start makes the sweep folder in ``runs_dir`` and its
    queue process, then shows the queue (``queue_window``)."""

    def __init__(self, base: ExperimentConfig, runs_dir: Path, paths: list[str],
                 first: str | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("sweepDialog")
        self.setWindowTitle("Sweep")
        self.base, self.runs_dir, self.paths = base, Path(runs_dir), paths
        self.queue_window: SweepQueueWindow | None = None
        self.rows: list[_VaryRow] = []
        self._rows_box = QVBoxLayout()
        add = QPushButton("Vary another field")
        add.setObjectName("sweepAdd")
        add.clicked.connect(lambda: self.add_row())
        self.seeds = QSpinBox()
        self.seeds.setObjectName("sweepSeeds")
        self.seeds.setRange(1, 100)
        self.seeds.setToolTip("Runs per grid point, seeds train.seed, +1, +2, …")
        self.parallel = QSpinBox()
        self.parallel.setObjectName("sweepParallel")
        self.parallel.setRange(1, 64)
        self.parallel.setToolTip("Runs trained at the same time")
        self.summary = QLabel()
        self.summary.setObjectName("sweepSummary")
        self.summary.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Seeds", self.seeds)
        form.addRow("At a time", self.parallel)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = buttons.addButton("Start sweep", QDialogButtonBox.ButtonRole.AcceptRole)
        self.start_button.setObjectName("sweepStart")
        buttons.accepted.connect(self._start)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Vary these fields of the experiment in the setup panel:"))
        lay.addLayout(self._rows_box)
        lay.addWidget(add, 0, Qt.AlignmentFlag.AlignLeft)
        lay.addLayout(form)
        lay.addWidget(self.summary)
        lay.addWidget(buttons)
        self.seeds.valueChanged.connect(self._check)
        self.add_row(first or "moe.top_k")

    def add_row(self, key: str | None = None) -> _VaryRow:
        key = key or next(p for p in self.paths if p not in {r.key_box.currentText() for r in self.rows})
        from ...store.compare import flatten_config
        from ...config.schema import to_dict
        current = flatten_config(to_dict(self.base)).get(key)
        row = _VaryRow(self.paths, key, "" if current is None else str(current).lower()
                       if isinstance(current, bool) else str(current), self._check, self._remove)
        self.rows.append(row)
        self._rows_box.addWidget(row)
        self._check()
        return row

    def _remove(self, row: _VaryRow) -> None:
        self.rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self._check()

    def grid(self):
        """``(axes, points)``; GridError / ConfigError naming the problem."""
        axes = parse_grid([r.arg() for r in self.rows], self.base, self.seeds.value())
        return axes, expand(self.base, axes)

    def _check(self, *_) -> None:
        try:
            axes, points = self.grid()
        except (GridError, ConfigError) as e:
            self.summary.setText(f"<span style='color:#c0392b'>{_esc(str(e))}</span>")
            self.start_button.setEnabled(False)
            return
        shape = " × ".join(f"{len(a.values)} {a.key.rsplit('.', 1)[-1]}" for a in axes)
        self.summary.setText(f"{len(points)} runs ({shape}) of {self.base.train.steps:,} steps each")
        self.start_button.setEnabled(True)

    def _start(self) -> None:
        from ...sweep.runner import create_sweep
        try:
            axes, points = self.grid()
            q = create_sweep(self.base, [a.key for a in axes], points, self.runs_dir,
                             parallel=self.parallel.value())
        except (GridError, ConfigError, OSError) as e:
            QMessageBox.warning(self, "Cannot start the sweep", str(e))
            return
        self.queue_window = SweepQueueWindow(q.dir, self.parent(), start=True)
        self.queue_window.show()
        self.accept()


class SweepQueueWindow(QDialog):
    """A sweep folder's queue, re-read every POLL_MS while shown: each run's state,
    Cancel (the sweep, or the selected runs), Continue (a stopped or crashed queue),
    Compare (the finished runs, grouped by the swept keys)."""

    def __init__(self, sweep_dir: str | Path, window=None, start: bool = False):
        super().__init__(window)
        self.setObjectName("sweepQueue")
        self.dir = Path(sweep_dir)
        self.window_ = window
        self.proc: subprocess.Popen | None = None
        self.table = QTableWidget(0, 4)
        self.table.setObjectName("sweepTable")
        self.table.setHorizontalHeaderLabels(["#", "State", "Values", "Run"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.status = QLabel()
        self.status.setObjectName("sweepStatus")
        self.cancel_button = QPushButton("Cancel sweep")
        self.cancel_button.setObjectName("sweepCancel")
        self.cancel_selected_button = QPushButton("Cancel selected")
        self.cancel_selected_button.setObjectName("sweepCancelSelected")
        self.continue_button = QPushButton("Continue")
        self.continue_button.setObjectName("sweepContinue")
        self.continue_button.setToolTip("Run what is left: unfinished runs go on from their "
                                        "checkpoints, cancelled and failed ones run again")
        self.compare_button = QPushButton("Compare")
        self.compare_button.setObjectName("sweepCompare")
        close = QPushButton("Close")
        bar = QHBoxLayout()
        for b in (self.cancel_button, self.cancel_selected_button, self.continue_button,
                  self.compare_button):
            bar.addWidget(b)
        bar.addStretch(1)
        bar.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.status)
        lay.addWidget(self.table)
        lay.addLayout(bar)
        self.cancel_button.clicked.connect(lambda: self._cancel(None))
        self.cancel_selected_button.clicked.connect(
            lambda: self._cancel(sorted({i.row() for i in self.table.selectedIndexes()})))
        self.continue_button.clicked.connect(lambda: self.start_runner())
        self.compare_button.clicked.connect(self.compare)
        close.clicked.connect(self.close)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.refresh)
        self.resize(760, 360)
        self.queue: SweepQueue | None = None
        self.refresh()
        if start:
            self.start_runner(fresh=True)

    # ------------------------------------------------------------------ runner
    def start_runner(self, *, fresh: bool = False) -> None:
        """Run the queue in its own process (it outlives the app; this window follows it).
        Not ``fresh``: what is left, unfinished runs continued from their checkpoints and
        cancelled or failed ones queued again (``--resume``)."""
        if self.running():
            return
        cmd, env = child_command("moe_studio")
        log = open(self.dir / "logs" / "runner.log", "a", encoding="utf-8")
        try:
            self.proc = subprocess.Popen(cmd + ["sweep", "--run" if fresh else "--resume",
                                                     str(self.dir)], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        finally:
            log.close()
        self.refresh()

    def running(self) -> bool:
        if self.proc is not None and self.proc.poll() is None:
            return True
        return runner_alive(self.dir)

    # ------------------------------------------------------------------ actions
    def _cancel(self, indices: list[int] | None) -> None:
        try:
            cancel(self.dir, indices)
        except SweepError as e:
            QMessageBox.warning(self, "Cancel", str(e))
        self.refresh()

    def compare(self) -> None:
        q = self.queue
        w = self.window_
        if q is None or w is None:
            return
        paths = q.run_paths()
        w.show_runs(paths)
        dash = w.findChild(QWidget, "dashboard:Compare")
        if dash is not None:
            w.tabs.setCurrentWidget(dash)
            # the grid's points (every swept key but the seed), else the one swept key
            swept = {k for k in q.keys if k != "train.seed"}
            combined = [k for k in dash.group_choices() if set(k.split(" + ")) == swept]
            key = combined[0] if combined else q.group_key()
            if key in dash.group_choices():
                dash.set_group_by(key)

    # ------------------------------------------------------------------ view
    def refresh(self) -> None:
        try:
            q = SweepQueue.load(self.dir)
        except SweepError as e:
            self.status.setText(str(e))
            return
        self.queue = q
        self.setWindowTitle(f"Sweep {q.name}")
        alive = self.running()
        self.status.setText(q.describe() + (" · running" if alive else
                                            "" if q.finished else " · not running: Continue to go on"))
        self.table.setRowCount(len(q.entries))
        for e in q.entries:
            run = q.run_path(e)
            cells = (str(e.index + 1), e.state + (" (cancelling)" if e.cancel else ""), e.label,
                     run.name if run else "")
            for c, text in enumerate(cells):
                item = self.table.item(e.index, c)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(e.index, c, item)
                if item.text() != text:
                    item.setText(text)
                    if c == 1 and e.error:
                        item.setToolTip(e.error)
        busy = alive and not q.finished
        self.cancel_button.setEnabled(busy and not q.cancel)
        self.cancel_selected_button.setEnabled(busy)
        self.continue_button.setEnabled(not alive and not all(e.state == "done" for e in q.entries))
        self.compare_button.setEnabled(len(q.run_paths()) >= 2 and self.window_ is not None)
        if alive and not self.timer.isActive() and self.isVisible():
            self.timer.start()
        elif not alive and self.timer.isActive():
            self.timer.stop()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.timer.start()

    def hideEvent(self, event) -> None:
        self.timer.stop()
        super().hideEvent(event)

    def closeEvent(self, event) -> None:
        self.timer.stop()
        super().closeEvent(event)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def open_sweep_dialog(window, key: str | None = None) -> SweepDialog | None:
    """Run > Sweep…: vary fields of the setup panel's experiment, starting with ``key``
    (a field's "Vary in a Sweep…"), else the field with the keyboard focus."""
    panel = window.setup_panel
    if not panel.is_valid():
        QMessageBox.information(window, "Sweep", "Fix the experiment in the setup panel first: "
                                + "; ".join(str(p) for p in panel.problems()[:3]))
        return None
    dlg = SweepDialog(panel.config(), Path(window.runs_dir), panel.field_paths(),
                      key or _focused_field(panel), window)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.open()
    return dlg


def open_sweep_queue(window, folder: str | Path | None = None) -> SweepQueueWindow | None:
    """Run > Open Sweep Queue…: a sweep folder's queue (one started in a terminal too)."""
    if folder is None:
        folder = QFileDialog.getExistingDirectory(window, "Open a sweep folder", str(window.runs_dir))
        if not folder:
            return None
    if not (Path(folder) / QUEUE_NAME).exists():
        QMessageBox.warning(window, "Open sweep", f"{folder}: not a sweep folder (no {QUEUE_NAME})")
        return None
    w = SweepQueueWindow(folder, window)
    w.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    w.show()
    return w


def install_sweep_actions(window, menu) -> None:
    """Add Sweep… and Open Sweep Queue… to ``menu`` (the Run menu)."""
    a = QAction("S&weep…", window)
    a.setObjectName("sweepAction")
    a.setToolTip("Vary fields of this experiment: one run per combination, in a queue")
    a.triggered.connect(lambda: open_sweep_dialog(window))
    menu.addAction(a)
    b = QAction("Open Sweep &Queue…", window)
    b.setObjectName("sweepQueueAction")
    b.triggered.connect(lambda: open_sweep_queue(window))
    menu.addAction(b)
    window.sweep_action, window.sweep_queue_action = a, b
    window.setup_panel.sweepRequested.connect(lambda key: open_sweep_dialog(window, key))
