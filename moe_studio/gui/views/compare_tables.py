"""Compare's tables: the summary of each run (sortable, CSV export) beside the config
differences (only the keys that differ; cells that differ from the first run
highlighted). Each run's row or column carries its colour swatch."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QLabel,
                               QMessageBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QToolButton, QVBoxLayout, QWidget)

from ...store import compare as C
from ..formats import format_summary
from ..theme import is_dark_palette, series_color, status_color
from .compare_pair import swatch


class _SortItem(QTableWidgetItem):
    """A table cell that sorts by a number (NaN last), not by its text."""

    def __lt__(self, other):  # noqa: D105
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            a = math.inf if a != a else a
            b = math.inf if b != b else b
            return a < b
        return str(self.text()).lower() < str(other.text()).lower()


def splitter(orientation, *panes: tuple[QWidget, int, int]) -> QSplitter:
    """A splitter of ``(widget, stretch, initial size)`` panes."""
    sp = QSplitter(orientation)
    for i, (w, stretch, _) in enumerate(panes):
        sp.addWidget(w)
        sp.setStretchFactor(i, stretch)
    sp.setSizes([size for _, _, size in panes])
    return sp


class CompareTables(QSplitter):
    """The summary table (left) and the config diff (right) of the compared runs."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(Qt.Orientation.Horizontal, parent)
        self._summary: list[dict[str, Any]] = []
        self._paths: list[Path] = []
        self.summary_table = QTableWidget()
        self.summary_table.setObjectName("compareSummary")
        # in the runs' order until a header is clicked
        self.summary_table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.summary_table.setSortingEnabled(True)
        self.summary_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary_table.verticalHeader().setVisible(False)
        self.summary_table.setAlternatingRowColors(True)
        self.diff_table = QTableWidget()
        self.diff_table.setObjectName("compareDiff")
        self.diff_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.diff_table.setAlternatingRowColors(True)
        self.export_button = QToolButton()
        self.export_button.setText("Export CSV…")
        self.export_button.setToolTip("Save the summary table as CSV")
        self.export_button.clicked.connect(self._ask_csv)
        self._summary_title = QLabel("<b>Summary</b>")
        self._diff_title = QLabel("<b>Config differences</b>")
        self._diff_title.setToolTip("Only the keys whose values differ; highlighted: "
                                    "different from the first run")
        sbox, dbox = QWidget(), QWidget()
        sl, dl = QVBoxLayout(sbox), QVBoxLayout(dbox)
        for lay in (sl, dl):
            lay.setContentsMargins(0, 0, 0, 0)
            lay.setSpacing(2)
        head = QHBoxLayout()
        head.addWidget(self._summary_title)
        head.addStretch(1)
        head.addWidget(self.export_button)
        sl.addLayout(head)
        sl.addWidget(self.summary_table, 1)
        dl.addWidget(self._diff_title)
        dl.addWidget(self.diff_table, 1)
        for i, (w, stretch) in enumerate(((sbox, 3), (dbox, 2))):
            self.addWidget(w)
            self.setStretchFactor(i, stretch)
        self.setSizes([800, 400])

    # ------------------------------------------------------------------ filling
    def fill(self, summary: list[dict[str, Any]], diff: pd.DataFrame,
             labels: Sequence[str], paths: Sequence[Path]) -> None:
        """Show ``summary`` (one ``store.compare.summary_row`` per run) and ``diff``
        (``store.compare.config_diff``: keys x runs) of the runs named ``labels``."""
        self._summary = list(summary)
        self._paths = list(paths)
        self._fill_summary()
        self._fill_diff(diff, list(labels))

    def _fill_summary(self) -> None:
        t = self.summary_table
        dark = is_dark_palette(self.palette())
        sort_col = t.horizontalHeader().sortIndicatorSection()
        sort_order = t.horizontalHeader().sortIndicatorOrder()
        t.setSortingEnabled(False)
        t.clear()
        t.setColumnCount(len(C.SUMMARY_COLUMNS))
        t.setRowCount(len(self._summary))
        t.setHorizontalHeaderLabels([h for _, h in C.SUMMARY_COLUMNS])
        for col, (key, _) in enumerate(C.SUMMARY_COLUMNS):
            t.horizontalHeaderItem(col).setToolTip(C.SUMMARY_HELP.get(key, ""))
        for row, rec in enumerate(self._summary):
            for col, (key, _) in enumerate(C.SUMMARY_COLUMNS):
                v = rec.get(key)
                it = _SortItem(format_summary(key, v))
                it.setData(Qt.ItemDataRole.UserRole, v)
                if key == "run":
                    it.setIcon(swatch(series_color(row, dark)))
                    it.setData(Qt.ItemDataRole.UserRole + 1, row)
                    it.setToolTip(str(self._paths[row]))
                elif key == "status":
                    c = status_color(str(v), dark)
                    if c is not None:
                        it.setForeground(QBrush(c))
                else:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                t.setItem(row, col, it)
        for col, (key, _) in enumerate(C.SUMMARY_COLUMNS):
            # a figure none of these runs records (ensemble gain without ensembles)
            # would only push the others out of view; the CSV keeps every column
            empty = all(format_summary(key, r.get(key)) == "" for r in self._summary)
            t.setColumnHidden(col, empty and key != "run")
        t.setSortingEnabled(True)
        if 0 <= sort_col < t.columnCount():
            t.sortByColumn(sort_col, sort_order)
        else:
            t.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        t.resizeColumnsToContents()
        t.horizontalHeader().setStretchLastSection(True)

    def _fill_diff(self, d: pd.DataFrame, labels: list[str]) -> None:
        t = self.diff_table
        dark = is_dark_palette(self.palette())
        t.clear()
        t.setColumnCount(len(labels))
        t.setHorizontalHeaderLabels(labels)
        for c in range(len(labels)):
            t.horizontalHeaderItem(c).setIcon(swatch(series_color(c, dark)))
        if not len(d):
            t.setRowCount(1)
            t.setVerticalHeaderLabels([""])
            if labels:
                it = QTableWidgetItem("the same config (apart from the names)")
                it.setForeground(QBrush(self.palette().color(QPalette.ColorRole.PlaceholderText)))
                t.setItem(0, 0, it)
            return
        t.setRowCount(len(d))
        t.setVerticalHeaderLabels(list(d.index))
        hl = QColor(self.palette().color(QPalette.ColorRole.Highlight))
        hl.setAlpha(70 if dark else 45)
        bold = QFont(self.font())
        bold.setBold(True)
        for row, key in enumerate(d.index):
            vals = list(d.loc[key])
            for col, v in enumerate(vals):
                it = QTableWidgetItem(C.value_text(v))
                it.setToolTip(f"{key} = {C.value_text(v)!r}")
                if col > 0 and not C.same_value(v, vals[0]):
                    it.setBackground(QBrush(hl))
                    it.setFont(bold)
                t.setItem(row, col, it)
        t.resizeColumnsToContents()
        t.horizontalHeader().setStretchLastSection(True)

    # ------------------------------------------------------------------ sizes
    def needed_height(self) -> int:
        """The height that shows every row of both tables (px)."""
        rows = max(self.summary_table.rowCount(), self.diff_table.rowCount(), 1)
        row_h = max(self.summary_table.verticalHeader().defaultSectionSize(),
                    self.diff_table.verticalHeader().defaultSectionSize())
        head = self.summary_table.horizontalHeader().sizeHint().height()
        title = max(self.export_button.sizeHint().height(),
                    self._summary_title.sizeHint().height())
        scroll = self.summary_table.horizontalScrollBar().sizeHint().height()
        return title + head + rows * row_h + scroll + 12

    def size_diff(self) -> None:
        """Give the config diff the width its columns need (at most half)."""
        width = sum(self.sizes())
        if width > 0:
            t = self.diff_table
            need = (t.verticalHeader().width() + t.frameWidth() * 2 + 4
                    + sum(t.columnWidth(c) for c in range(t.columnCount())))
            w = int(min(need, 0.5 * width))
            self.setSizes([width - w, w])

    # ------------------------------------------------------------------ CSV
    def export_summary_csv(self, path) -> Path:
        """Write the summary table (as sorted on screen) to ``path`` as CSV."""
        path = Path(path)
        order = []
        for row in range(self.summary_table.rowCount()):
            it = self.summary_table.item(row, 0)
            order.append(int(it.data(Qt.ItemDataRole.UserRole + 1)))
        C.write_summary_csv([self._summary[i] for i in order], path)
        return path

    def _ask_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export summary", "compare-summary.csv",
                                              "CSV (*.csv)")
        if not path:
            return
        if not path.lower().endswith(".csv"):
            path += ".csv"
        try:
            self.export_summary_csv(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export summary", f"Could not write {path}:\n{exc}")
