"""The Precision view's table of the tensors closest to a format's edges at one step:
headroom in bits ``log2(format max / abs-max)``, footroom ``log2(min non-zero / min
normal)``, the shares that would overflow or underflow; sortable by the numbers, the
cells near an edge coloured."""
from __future__ import annotations

import math

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

from ..formats import fmt_num, fmt_share
from ..theme import is_dark_palette, status_color
from .precision_data import short_name

NUM_ROLE = Qt.ItemDataRole.UserRole + 1     # the number a cell sorts by
HEADERS = ["module", "kind", "max |x|", "headroom", "min |x|", "footroom", "over %",
           "under %", "inf/NaN"]
TIPS = ["", "act: output, grad: parameter gradient (× loss scale), weight",
        "largest finite magnitude", "log2(format max / max |x|): doublings left "
        "before overflow", "smallest non-zero magnitude", "log2(min |x| / format's "
        "min normal): halvings left before the subnormal range (negative: already "
        "below)", "share that would overflow the format", "share that would be "
        "subnormal or flushed to zero", "inf/NaN elements in the tensor"]


class EdgeTable(QWidget):
    """Its title line above the sortable table (``fill`` with edge-table rows)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel()
        self.model = QStandardItemModel(0, len(HEADERS), self)
        self.model.setHorizontalHeaderLabels(HEADERS)
        for c, tip in enumerate(TIPS):
            if tip:
                self.model.horizontalHeaderItem(c).setToolTip(tip)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(NUM_ROLE)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(3, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        f = self.view.font()
        f.setPointSizeF(max(7.0, f.pointSizeF() - 1.0))
        self.view.setFont(f)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        hh = self.view.horizontalHeader()
        # Every column as wide as its contents, module names whole (a narrow window
        # scrolls sideways rather than cutting them to "b1...."); the last one stretches.
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setStretchLastSection(True)
        hh.setMinimumSectionSize(36)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        tl = QVBoxLayout(self)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(2)
        tl.addWidget(self.title)
        tl.addWidget(self.view, 1)

    def fill(self, rows: list[dict]) -> None:
        """The rows of ``metrics.precision.edge_table``, coloured where near an edge."""
        dark = is_dark_palette(self.palette())
        bad, warn = status_color("failed", dark), status_color("interrupted", dark)
        model = self.model
        model.setRowCount(len(rows))
        # Each cell set would tell the sorting proxy and the view (columns sized to their
        # contents) on its own, about 3 ms each: seconds for a default model's table, at
        # every step while training. The cells change quietly; then one update.
        model.blockSignals(True)
        for i, row in enumerate(rows):
            cells = [(short_name(row["module"]), row["module"]), (row["kind"], row["kind"]),
                     (fmt_num(row["absmax"]), row["absmax"]),
                     (("inf/NaN", -math.inf) if row["nonfinite"] else
                      (fmt_num(row["headroom_bits"]), row["headroom_bits"])),
                     (fmt_num(row["min_nonzero"]), row["min_nonzero"]),
                     (fmt_num(row["footroom_bits"]), row["footroom_bits"]),
                     (fmt_share(row["overflow"]), row["overflow"]),
                     (fmt_share(row["underflow"]), row["underflow"]),
                     (f"{row['nonfinite']:,}", row["nonfinite"])]
            for c, (text, value) in enumerate(cells):
                item = model.item(i, c)
                if item is None:
                    item = QStandardItem()
                    model.setItem(i, c, item)
                item.setText(text)
                if isinstance(value, float) and math.isnan(value):
                    value = math.inf           # unmeasured sorts last
                item.setData(value, NUM_ROLE)
                if c == 0:
                    item.setToolTip(row["module"])
                if c >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                color = None
                if c == 3 and (row["headroom_bits"] < 1 or row["nonfinite"]) \
                        or c == 6 and row["overflow"] > 0 \
                        or c == 8 and row["nonfinite"] > 0:
                    color = bad
                elif c == 3 and row["headroom_bits"] < 4 or c == 5 and row["footroom_bits"] < 0:
                    color = warn
                item.setForeground(color if color is not None else self.palette().text())
        model.blockSignals(False)
        if rows:
            model.dataChanged.emit(model.index(0, 0),
                                   model.index(len(rows) - 1, model.columnCount() - 1))
        self.proxy.invalidate()
