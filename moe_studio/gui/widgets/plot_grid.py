"""``PlotGrid``: CurvePlots laid out in a grid, sharing smoothing, log-y and the x axis
(the Training and Compare views)."""
from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QWidget

from .plots import CurvePlot


class PlotGrid(QWidget):
    """CurvePlots in a grid sharing smoothing / log-y / x label.

    ``link_x=True`` links every plot's x range to the first one. Only do that for plots
    stacked in one column: pyqtgraph aligns linked views by screen position, so plots
    side by side would show different ranges.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._plots: dict[str, CurvePlot] = {}
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(6)

    def add_plot(self, key: str, title: str, row: int, col: int, rowspan: int = 1,
                 colspan: int = 1, link_x: bool = False, **kwargs) -> CurvePlot:
        plot = CurvePlot(title, parent=self, **kwargs)
        if link_x and self._plots:
            first = next(iter(self._plots.values()))
            plot.plot_item.setXLink(first.plot_item)
        self._plots[key] = plot
        self._grid.addWidget(plot, row, col, rowspan, colspan)
        return plot

    def set_row_stretch(self, row: int, stretch: int) -> None:
        self._grid.setRowStretch(row, stretch)

    def set_column_stretch(self, col: int, stretch: int) -> None:
        self._grid.setColumnStretch(col, stretch)

    def plot(self, key: str) -> CurvePlot:
        return self._plots[key]

    def plots(self) -> dict[str, CurvePlot]:
        return dict(self._plots)

    def set_smoothing(self, weight: float) -> None:
        for p in self._plots.values():
            p.set_smoothing(weight)

    def set_log_y(self, on: bool, keys=None) -> None:
        for k, p in self._plots.items():
            if keys is None or k in keys:
                p.set_log_y(on)

    def set_x_label(self, text: str) -> None:
        for p in self._plots.values():
            p.set_x_label(text)

    def set_x_format(self, fmt: str) -> None:
        for p in self._plots.values():
            p.set_x_format(fmt)

    def auto_range(self) -> None:
        for p in self._plots.values():
            p.auto_range()
