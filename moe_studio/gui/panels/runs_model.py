"""The runs panel's model: the recorded runs of several folders as a tree, one section
per folder ("Runs", "Sample runs"), with their check marks, and the filter the panel's
search box drives.

The model is updated by diffing a new ``list_runs`` result against what it holds
(insert / remove / change rows), never reset, so selection, check marks and scroll
position survive a rescan. ``scan`` reads the folders (the panel runs it in a worker).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import (QAbstractItemModel, QModelIndex, QObject, QSortFilterProxyModel, Qt, Signal)
from PySide6.QtGui import QFont

from ..formats import format_started
from ...store import RunFileError, RunInfo, describe_setup, display_labels, list_runs, matches
from ..run.live_run import live_status
from ..run.tasks import CancelToken
from .run_organise import tooltip_lines
from ..theme import status_color

COLUMNS = ("Name", "Status", "Started", "Steps", "Setup", "Val loss")
COL_NAME, COL_STATUS, COL_STARTED, COL_STEPS, COL_SETUP, COL_VAL = range(len(COLUMNS))
PathRole = Qt.ItemDataRole.UserRole + 1
SortRole = Qt.ItemDataRole.UserRole + 2
# internalId of section rows; a run row carries 1 + its section's row (ids are unsigned)
_SECTION = 0


def scan_folders(dirs: list[Path], cancel: CancelToken | None = None) -> list[tuple[list[RunInfo], str | None]]:
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


class RunsFilter(QSortFilterProxyModel):
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

    def filtering(self) -> bool:
        """Whether words are typed (some runs may be hidden)."""
        return bool(self._words)

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


