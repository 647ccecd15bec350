"""The list of recorded runs: your runs and the sample runs, live-updating.

A tree with one section per folder ("Runs", "Sample runs"). The model is updated by
diffing the new ``list_runs`` result against what it holds (insert / remove / change
rows), never reset, so selection, check marks and scroll position survive a rescan.
The automatic rescan (every 2 s) reads the run files in a worker thread, so a folder
of many runs never stalls the GUI; ``rescan()`` does the same synchronously.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import (QAbstractItemModel, QEvent, QModelIndex, QObject, QSortFilterProxyModel, Qt, QTimer, Signal)
from PySide6.QtGui import QAction, QFont, QGuiApplication, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMenu, QStyledItemDelegate, QToolButton, QTreeView, QVBoxLayout,
                               QWidget)

from ..formats import format_started
from ...store import RunFileError, RunInfo, describe_setup, display_labels, list_runs, matches
from ..run.live_run import hub as live_hub, live_status
from ..run.tasks import BackgroundTask, CancelToken
from .run_organise import add_organise_actions, tooltip_lines
from ..theme import is_dark_palette, status_color

RESCAN_MS = 2000

COLUMNS = ("Name", "Status", "Started", "Steps", "Setup", "Val loss")
COL_NAME, COL_STATUS, COL_STARTED, COL_STEPS, COL_SETUP, COL_VAL = range(len(COLUMNS))
PathRole = Qt.ItemDataRole.UserRole + 1
SortRole = Qt.ItemDataRole.UserRole + 2
# internalId of section rows; a run row carries 1 + its section's row (ids are unsigned)
_SECTION = 0


def _scan(dirs: list[Path], cancel: CancelToken | None = None) -> list[tuple[list[RunInfo], str | None]]:
    """list_runs for every folder; a missing folder is an empty list with a note. Between
    folders it stops if ``cancel`` says so (the panel is closing)."""
    out = []
    for d in dirs:
        if cancel is not None:
            cancel.check()
        try:
            out.append((list_runs(d), None))
        except RunFileError as exc:
            # A runs folder that does not exist yet is the normal first start, not an error.
            out.append(([], "none yet" if not d.exists() else exc.problem))
        except OSError as exc:
            out.append(([], str(exc)))
    return out


setup_summary = describe_setup  # the runs list's "Setup" column, as `moe-studio runs` shows it


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.inf
    return f if not math.isnan(f) else math.inf


class _Section:
    __slots__ = ("title", "path", "runs", "note")

    def __init__(self, title: str, path: Path):
        self.title = title
        self.path = path
        self.runs: list[RunInfo] = []
        self.note: str | None = None


class RunsModel(QAbstractItemModel):
    """Two-level model: section rows (one per folder), then one row per run."""

    checkedChanged = Signal(list)

    def __init__(self, dirs: list[tuple[str, Path]], parent: QObject | None = None):
        super().__init__(parent)
        self._sections = [_Section(title, Path(p)) for title, p in dirs]
        self._checked: list[str] = []   # in the order they were checked
        self._dark = False
        self._labels: dict[str, str] = {}   # path -> "name #k" where names repeat

    # -- updating
    def apply(self, results: list[tuple[list[RunInfo], str | None]]) -> None:
        """Bring the model to ``results`` (one (runs, note) per section) by row-level diff."""
        for si, (runs, note) in enumerate(results):
            sec = self._sections[si]
            sec_index = self.index(si, 0)
            new_by_path = {str(r.path): r for r in runs}
            # Removals, bottom up so the row numbers still hold.
            for row in range(len(sec.runs) - 1, -1, -1):
                if str(sec.runs[row].path) not in new_by_path:
                    self.beginRemoveRows(sec_index, row, row)
                    gone = sec.runs.pop(row)
                    self.endRemoveRows()
                    if str(gone.path) in self._checked:
                        self._checked.remove(str(gone.path))
                        self.checkedChanged.emit(list(self._checked))
            # Changes in place.
            for row, old in enumerate(sec.runs):
                new = new_by_path.pop(str(old.path))
                if new != old:
                    sec.runs[row] = new
                    self.dataChanged.emit(self.index(row, 0, sec_index),
                                          self.index(row, len(COLUMNS) - 1, sec_index))
            # Additions (the proxy sorts them into place).
            if new_by_path:
                fresh = [r for r in runs if str(r.path) in new_by_path]
                first = len(sec.runs)
                self.beginInsertRows(sec_index, first, first + len(fresh) - 1)
                sec.runs.extend(fresh)
                self.endInsertRows()
            if note != sec.note:
                sec.note = note
            self.dataChanged.emit(sec_index, self.index(si, len(COLUMNS) - 1))
        self._relabel()

    def _relabel(self) -> None:
        """Runs that share a name get "#1", "#2", ... in the order they started, so the
        rows (and what is compared) are told apart by more than a date."""
        labels = display_labels([info for sec in self._sections for info in sec.runs])
        if labels != self._labels:
            changed = set(labels) ^ set(self._labels) | {p for p in labels
                                                         if labels[p] != self._labels.get(p)}
            self._labels = labels
            for path in changed:
                loc = self.locate(path)
                if loc is not None:
                    idx = self.index(loc[1], COL_NAME, self.index(loc[0], 0))
                    self.dataChanged.emit(idx, idx)

    def refresh_run(self, path: str) -> None:
        """Show the run at ``path`` again (its live state changed)."""
        loc = self.locate(str(path))
        if loc is not None:
            parent = self.index(loc[0], 0)
            self.dataChanged.emit(self.index(loc[1], 0, parent),
                                  self.index(loc[1], len(COLUMNS) - 1, parent))

    def label(self, path: str) -> str:
        """The name the panel shows for the run at ``path`` (``name #k`` when several
        runs share its name)."""
        loc = self.locate(str(path))
        if loc is None:
            return ""
        info = self._sections[loc[0]].runs[loc[1]]
        return self._labels.get(str(path)) or info.name or info.path.name

    def set_dark(self, dark: bool) -> None:
        if dark != self._dark:
            self._dark = dark
            for si in range(len(self._sections)):
                n = len(self._sections[si].runs)
                if n:
                    parent = self.index(si, 0)
                    self.dataChanged.emit(self.index(0, 0, parent),
                                          self.index(n - 1, len(COLUMNS) - 1, parent))

    def checked_paths(self) -> list[str]:
        return list(self._checked)

    def set_checked(self, path: str, on: bool) -> None:
        path = str(path)
        if on == (path in self._checked):
            return
        loc = self.locate(path)
        if loc is None:
            return
        info = self._sections[loc[0]].runs[loc[1]]
        if on and info.error:
            return
        if on:
            self._checked.append(path)
        else:
            self._checked.remove(path)
        idx = self.index(loc[1], 0, self.index(loc[0], 0))
        self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.CheckStateRole])
        self.checkedChanged.emit(list(self._checked))

    def locate(self, path: str) -> tuple[int, int] | None:
        for si, sec in enumerate(self._sections):
            for row, info in enumerate(sec.runs):
                if str(info.path) == str(path):
                    return si, row
        return None

    def info(self, index: QModelIndex) -> RunInfo | None:
        if not index.isValid() or index.internalId() == _SECTION:
            return None
        return self._sections[index.internalId() - 1].runs[index.row()]

    def section_runs(self, si: int) -> list[RunInfo]:
        return list(self._sections[si].runs)

    # -- Qt model interface
    def index(self, row: int, column: int, parent: QModelIndex = QModelIndex()) -> QModelIndex:
        if not self.hasIndex(row, column, parent):
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, _SECTION)
        return self.createIndex(row, column, parent.row() + 1)

    def parent(self, index: QModelIndex = QModelIndex()) -> QModelIndex:  # type: ignore[override]
        if not index.isValid() or index.internalId() == _SECTION:
            return QModelIndex()
        return self.createIndex(index.internalId() - 1, 0, _SECTION)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        if not parent.isValid():
            return len(self._sections)
        if parent.internalId() == _SECTION and parent.column() == 0:
            return len(self._sections[parent.row()].runs)
        return 0

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return len(COLUMNS)

    def headerData(self, section: int, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.TextAlignmentRole and section in (COL_STEPS, COL_VAL):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def flags(self, index: QModelIndex):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        if index.internalId() == _SECTION:
            return Qt.ItemFlag.ItemIsEnabled
        info = self.info(index)
        if info.error:
            # Listed (so the user sees it and why), but neither openable nor checkable.
            return Qt.ItemFlag.ItemIsSelectable
        f = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == COL_NAME:
            f |= Qt.ItemFlag.ItemIsUserCheckable
        return f

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        col = index.column()
        if index.internalId() == _SECTION:
            sec = self._sections[index.row()]
            if role == Qt.ItemDataRole.DisplayRole and col == COL_NAME:
                n = len(sec.runs)
                text = f"{sec.title}  ({n})"
                return text + (f" — {sec.note}" if sec.note and not n else "")
            if role == Qt.ItemDataRole.FontRole and col == COL_NAME:
                f = QFont()
                f.setBold(True)
                return f
            if role == Qt.ItemDataRole.ToolTipRole:
                return str(sec.path)
            if role == SortRole:
                return index.row()
            return None
        info = self._sections[index.internalId() - 1].runs[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_NAME and str(info.path) in self._labels:
                return self._labels[str(info.path)]
            return self._display(info, col)
        if role == Qt.ItemDataRole.CheckStateRole and col == COL_NAME and not info.error:
            return (Qt.CheckState.Checked if str(info.path) in self._checked
                    else Qt.CheckState.Unchecked)
        if role == Qt.ItemDataRole.ToolTipRole:
            if info.error:
                return info.error
            tip = f"{info.path}\nrun id {info.run_id}"
            if info.train_loss is not None:
                tip += f"\nfinal train loss {info.train_loss:.4f}"
            return tip + tooltip_lines(info)
        if role == Qt.ItemDataRole.ForegroundRole and not info.error and col == COL_STATUS:
            return status_color(self._display(info, col), self._dark)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_STEPS, COL_VAL):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == PathRole:
            return str(info.path)
        if role == SortRole:
            return self._sort_key(info, col)
        return None

    @staticmethod
    def _display(info: RunInfo, col: int) -> str:
        if info.error:
            if col == COL_NAME:
                return info.path.name
            if col == COL_STATUS:
                return "unreadable"
            if col == COL_SETUP:
                return info.error.split(": ", 1)[-1]
            return ""
        if col == COL_NAME:
            return info.name or info.path.name
        if col == COL_STATUS:
            # The app's own run: paused / stopping as the status bar says, not the
            # store's "running".
            live = live_status(info.path) if info.status == "running" else None
            return live.status if live is not None else info.status or ""
        if col == COL_STARTED:
            return format_started(info.started)
        if col == COL_STEPS:
            if info.last_step is None:
                return ""
            total = f" / {info.total_steps:,}" if info.total_steps else ""
            # The store says -1 before the first recorded step: none done yet. The app's
            # own run counts what the status bar counts (the store lags by a commit).
            live = live_status(info.path) if info.status == "running" else None
            done = max(0, info.last_step, live.step if live is not None else 0)
            return f"{done:,}{total}"
        if col == COL_SETUP:
            return setup_summary(info)
        if col == COL_VAL:
            return "" if info.val_loss is None else f"{info.val_loss:.4f}"
        return ""

    @staticmethod
    def _sort_key(info: RunInfo, col: int):
        if col == COL_STARTED:   # ties (same second) by run id, which starts with the time
            return (_num(info.started) if info.started is not None else -math.inf,
                    info.run_id)
        if col == COL_STEPS:
            return _num(info.last_step)
        if col == COL_VAL:
            return _num(info.val_loss)
        return (RunsModel._display(info, col) or "").lower()

    def setData(self, index: QModelIndex, value, role=Qt.ItemDataRole.EditRole) -> bool:
        if role == Qt.ItemDataRole.CheckStateRole and index.column() == COL_NAME:
            info = self.info(index)
            if info is None or info.error:
                return False
            on = Qt.CheckState(value) == Qt.CheckState.Checked if not isinstance(value, bool) \
                else value
            self.set_checked(str(info.path), on)
            return True
        return False


class _RunsFilter(QSortFilterProxyModel):
    """Sections always shown, in their own order; runs filtered by every word typed."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._words: list[str] = []
        self.setSortRole(SortRole)
        self.setDynamicSortFilter(True)

    def set_text(self, text: str) -> None:
        if hasattr(self, "beginFilterChange"):   # Qt >= 6.9; invalidateFilter is deprecated
            self.beginFilterChange()
            self._words = text.lower().split()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._words = text.lower().split()
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        if not parent.isValid() or not self._words:
            return True
        m = self.sourceModel()
        info = m.info(m.index(row, 0, parent))
        if info is None:
            return True
        return matches(info, " ".join(self._words), also=[format_started(info.started)])

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:
        if not left.parent().isValid():
            # Keep "Runs" above "Sample runs" whichever way the runs are sorted.
            first_left = left.row() < right.row()
            return first_left if self.sortOrder() == Qt.SortOrder.AscendingOrder \
                else not first_left
        lv, rv = left.data(SortRole), right.data(SortRole)
        try:
            return lv < rv
        except TypeError:
            return str(lv) < str(rv)


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
        self._proxy = _RunsFilter(self)
        self._proxy.setSourceModel(self._model)

        self._filter = QLineEdit()
        self._filter.setPlaceholderText("Filter: text, tag:NAME, status:failed, moe.top_k=2…")
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
        self._apply(self._generation, _scan(self._dirs))

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
        self._scan_task.start(_scan, list(self._dirs), cancellable=True)

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
