"""The list of recorded runs: your runs and the sample runs, live-updating.

A tree with one section per folder ("Runs", "Sample runs"; the model and its filter:
``runs_model.py``). The automatic rescan (every 2 s) reads the run files in a worker
thread, so a folder of many runs never stalls the GUI; ``rescan()`` does the same
synchronously.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import (QEvent, QModelIndex, Qt, QTimer, Signal)
from PySide6.QtGui import QAction, QGuiApplication, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMenu, QStyledItemDelegate, QToolButton, QTreeView, QVBoxLayout,
                               QWidget)

from ...store import RunInfo
from ..run.live_run import hub as live_hub
from ..run.tasks import BackgroundTask
from .run_organise import add_organise_actions
from ..theme import is_dark_palette

from .runs_model import (COL_NAME, COL_SETUP, COL_STARTED, COL_STATUS, COL_STEPS,
                         COL_VAL, PathRole, RunsModel, RunsFilter, scan_folders)

RESCAN_MS = 2000


class _RoomyDelegate(QStyledItemDelegate):
    """Rows a little taller than the font: easier to read and to hit with the mouse."""

    def sizeHint(self, option, index):
        size = super().sizeHint(option, index)
        size.setHeight(size.height() + 4)
        return size


class RunsPanel(QWidget):
    """Runs in ``dirs`` (first: "Runs", second: "Sample runs"; more: by folder name).

    Signals: ``runOpened(str)`` (double-click or Enter on a run: its folder path),
    ``runsChecked(list[str])`` (the checked runs' paths, in the order checked, each time
    a check mark changes: overlay them).
    """

    runOpened = Signal(str)
    runsChecked = Signal(list)   # the runs to compare: checked and not hidden by the filter
    continueRequested = Signal(str)  # a run to continue from its newest checkpoint

    def __init__(self, dirs: list[Path] | list[str], parent: QWidget | None = None,
                 titles: list[str] | None = None, auto_rescan: bool = True):
        super().__init__(parent)
        dirs = [Path(d) for d in dirs]
        default_titles = ["Runs", "Sample runs"]
        titles = list(titles or [])
        named = [(titles[i] if i < len(titles) else
                  default_titles[i] if i < len(default_titles) else d.name, d)
                 for i, d in enumerate(dirs)]
        self._dirs = dirs
        self._scan_task = BackgroundTask(self, name="runs-scan")
        self._scan_task.succeeded.connect(self._on_scan_done)
        self._generation = 0
        self._applied = 0
        self._scan_generation = 0   # of the scan in flight

        self._model = RunsModel(named, self)
        self._model.set_dark(is_dark_palette(self.palette()))
        self._compared: list[str] = []
        self._counts = (0, 0)   # runs listed, unreadable ones
        self._model.checkedChanged.connect(lambda _p: self._sync_compared(always=True))
        live_hub().changed.connect(self._model.refresh_run)
        self._proxy = RunsFilter(self)
        self._proxy.setSourceModel(self._model)

        self._filter = QLineEdit()
        self._filter.setPlaceholderText("Filter: text, tag:NAME, status:failed, moe.top_k=2…")
        self._filter.setToolTip("Every word must match: tag:NAME, status:WORD, sweep:NAME, "
                                "KEY=VALUE on a config value (also != < <= > >=), or text in "
                                "the name, setup, tags or note")
        self._filter.setClearButtonEnabled(True)
        self._filter.textChanged.connect(self._on_filter)
        refresh = QToolButton()
        refresh.setText("⟳")
        refresh.setToolTip("Rescan the run folders now")
        refresh.setAutoRaise(True)
        refresh.clicked.connect(self.rescan)

        v = self._view = QTreeView()
        v.setModel(self._proxy)
        v.setUniformRowHeights(True)
        v.setItemDelegate(_RoomyDelegate(v))
        v.setAlternatingRowColors(True)
        v.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        v.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        v.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        v.setSortingEnabled(True)
        v.setExpandsOnDoubleClick(False)   # activation toggles sections (see _on_activated)
        v.sortByColumn(COL_STARTED, Qt.SortOrder.DescendingOrder)
        v.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        v.customContextMenuRequested.connect(self._context_menu)
        v.activated.connect(self._on_activated)
        h = v.header()
        h.setStretchLastSection(False)
        h.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Interactive)
        h.setSectionResizeMode(COL_SETUP, QHeaderView.ResizeMode.Stretch)
        for col, width in ((COL_NAME, 220), (COL_STATUS, 90), (COL_STARTED, 130),
                           (COL_STEPS, 110), (COL_VAL, 80)):
            v.setColumnWidth(col, width)
        self._proxy.rowsInserted.connect(self._span_sections)
        self._proxy.layoutChanged.connect(self._span_sections)

        self._hint = QLabel()
        self._hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self._filter, 1)
        top.addWidget(refresh)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(top)
        lay.addWidget(v, 1)
        lay.addWidget(self._hint)

        self._timer = QTimer(self)
        self._timer.setInterval(RESCAN_MS)
        self._timer.timeout.connect(self._rescan_async)
        self._auto = False
        self._hidden = False   # hidden by Qt (a hide event), not merely never shown

        self.rescan()
        v.expandAll()
        self._span_sections()
        self.set_auto_rescan(auto_rescan)

    # ------------------------------------------------------------------ public API
    def rescan(self) -> None:
        """Re-read the run folders now (synchronously) and update rows in place."""
        self._generation += 1
        self._apply(self._generation, scan_folders(self._dirs))

    def set_auto_rescan(self, on: bool, interval_ms: int = RESCAN_MS) -> None:
        """Rescan every ``interval_ms`` (2 s) in a worker thread (on by default). Paused
        while the panel is hidden; on show it rescans at once."""
        self._auto = bool(on)
        self._timer.setInterval(int(interval_ms))
        if on and not self._hidden:
            self._timer.start()
        else:
            self._timer.stop()

    def auto_rescan(self) -> bool:
        return self._auto

    def checked_runs(self) -> list[str]:
        """Every checked run, also those the filter hides."""
        return self._model.checked_paths()

    def compared_runs(self) -> list[str]:
        """The checked runs the filter shows: what ``runsChecked`` last sent."""
        return [p for p in self._model.checked_paths() if self._proxy_index(p).isValid()]

    def hidden_checked_runs(self) -> list[str]:
        return [p for p in self._model.checked_paths() if not self._proxy_index(p).isValid()]

    def preferred_height(self, run_rows: int = 6) -> int:
        """Pixels that show the filter, the column header, both section rows and
        ``run_rows`` runs, and the hint line."""
        row = self._view.sizeHintForRow(0) if self._proxy.rowCount() else \
            self.fontMetrics().height() + 10
        header = self._view.header().sizeHint().height()
        m = self.layout().contentsMargins()
        chrome = (self._filter.sizeHint().height() + self._hint.sizeHint().height()
                  + 2 * self.layout().spacing() + m.top() + m.bottom()
                  + 2 * self._view.frameWidth())
        return chrome + header + row * (run_rows + len(self._dirs))

    def set_checked(self, path: str | Path, on: bool = True) -> None:
        self._model.set_checked(str(path), on)

    def clear_checks(self) -> None:
        for p in self._model.checked_paths():
            self._model.set_checked(p, False)

    def runs(self, section: int | None = None) -> list[RunInfo]:
        """The RunInfo rows held (one section, or all), unfiltered."""
        secs = range(len(self._dirs)) if section is None else [section]
        return [r for s in secs for r in self._model.section_runs(s)]

    def selected_runs(self) -> list[str]:
        rows = self._view.selectionModel().selectedRows(COL_NAME)
        return [p for p in (i.data(PathRole) for i in rows) if p]

    def select_run(self, path: str | Path) -> bool:
        idx = self._proxy_index(str(path))
        if not idx.isValid():
            return False
        self._view.setCurrentIndex(idx)
        self._view.scrollTo(idx)
        return True

    def set_filter(self, text: str) -> None:
        self._filter.setText(text)

    def view(self) -> QTreeView:
        return self._view

    def model(self) -> RunsModel:
        return self._model

    def wait_for_scan(self, msecs: int = 5000) -> bool:
        """Block until a background scan in flight has finished (tests, shutdown)."""
        return self._scan_task.wait(msecs)

    # ------------------------------------------------------------------ internals
    def _rescan_async(self) -> None:
        if self._scan_task.busy:
            return
        self._generation += 1
        self._scan_generation = self._generation
        self._scan_task.start(scan_folders, list(self._dirs), cancellable=True)

    def _on_scan_done(self, result) -> None:
        self._apply(self._scan_generation, result)

    def _apply(self, generation: int, result) -> None:
        if generation <= self._applied:
            return   # a slower, older scan: what is shown is newer already
        self._applied = generation
        self._model.apply(result)
        self._counts = (sum(len(r) for r, _ in result),
                        sum(1 for r, _ in result for i in r if i.error))
        self._sync_compared()   # a run whose status changed may now pass the filter or not

    def _update_hint(self) -> None:
        n, bad = self._counts
        hidden = len(self.hidden_checked_runs())
        text = f"{n} run{'s' if n != 1 else ''}" + (f" · {bad} unreadable" if bad else "")
        if self._proxy.filtering():
            # The section titles count every run of their folder; say what the filter left.
            shown = sum(self._proxy.rowCount(self._proxy.index(s, 0))
                        for s in range(self._proxy.rowCount()))
            text = f"{shown} of {text} match the filter"
        if hidden:
            text += (f" · {hidden} checked run{'s' if hidden != 1 else ''} hidden by the "
                     f"filter, not compared")
        else:
            text += " · double-click to open, check several to compare"
        self._hint.setText(text)

    def hint_text(self) -> str:
        return self._hint.text()

    def _span_sections(self, *_) -> None:
        for row in range(self._proxy.rowCount()):
            self._view.setFirstColumnSpanned(row, QModelIndex(), True)
            self._view.expand(self._proxy.index(row, 0))

    def _proxy_index(self, path: str) -> QModelIndex:
        loc = self._model.locate(path)
        if loc is None:
            return QModelIndex()
        src = self._model.index(loc[1], 0, self._model.index(loc[0], 0))
        return self._proxy.mapFromSource(src)

    def _on_filter(self, text: str) -> None:
        self._proxy.set_text(text)
        self._view.expandAll()
        self._sync_compared()

    def _sync_compared(self, always: bool = False) -> None:
        """Runs the filter hides leave the comparison (they stay checked, and come
        back when the filter shows them again); the hint line says so."""
        compared = self.compared_runs()
        self._update_hint()
        if always or compared != self._compared:
            self._compared = compared
            self.runsChecked.emit(list(compared))

    def _on_activated(self, index: QModelIndex) -> None:
        path = index.siblingAtColumn(COL_NAME).data(PathRole)
        if path is None:
            if not index.parent().isValid():
                self._view.setExpanded(index, not self._view.isExpanded(index))
            return
        info = self._model.info(self._proxy.mapToSource(index))
        if info is not None and not info.error:
            self.runOpened.emit(path)

    def _context_menu(self, pos) -> None:
        index = self._view.indexAt(pos)
        path = index.siblingAtColumn(COL_NAME).data(PathRole) if index.isValid() else None
        menu = QMenu(self)
        if path:
            info = self._model.info(self._proxy.mapToSource(index))
            if info is not None and not info.error:
                act = QAction("Open", menu)
                act.triggered.connect(lambda: self.runOpened.emit(path))
                menu.addAction(act)
                checked = path in self._model.checked_paths()
                act = QAction("Uncheck (compare)" if checked else "Check (compare)", menu)
                act.triggered.connect(lambda: self._model.set_checked(path, not checked))
                menu.addAction(act)
                add_organise_actions(menu, self, info, self.rescan)
                from .continue_dialog import add_continue_action
                add_continue_action(menu, info, self.continueRequested.emit)
                menu.addSeparator()
            act = QAction("Copy path", menu)
            act.triggered.connect(lambda: QGuiApplication.clipboard().setText(path))
            menu.addAction(act)
            if info is not None and info.error:
                act = QAction("Copy error", menu)
                act.triggered.connect(lambda: QGuiApplication.clipboard().setText(info.error))
                menu.addAction(act)
            menu.addSeparator()
        if self._model.checked_paths():
            act = QAction("Clear all checks", menu)
            act.triggered.connect(self.clear_checks)
            menu.addAction(act)
        act = QAction("Rescan now", menu)
        act.triggered.connect(self.rescan)
        menu.addAction(act)
        menu.popup(self._view.viewport().mapToGlobal(pos))

    def changeEvent(self, event) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._model.set_dark(is_dark_palette(self.palette()))
        super().changeEvent(event)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self._hidden = True
        self._timer.stop()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._hidden = False
        if self._auto and not self._timer.isActive():
            self._rescan_async()
            self._timer.start()

    def shutdown(self) -> None:
        """Stop rescanning and wait for a scan in flight (also done on close)."""
        self._auto = False
        self._timer.stop()
        self._scan_task.shutdown(5000)
