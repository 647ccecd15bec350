"""A heatmap of one MoE layer at a time, with the layer chosen in a combo above it: what
the Experts view's whole-corpus maps of an inspection share (coselect_view.py,
domain_load_view.py)."""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..widgets.heatmap import HeatmapPlot


class LayerMapView(QWidget):
    """``caption`` and the layer combo in a row (``extra`` widgets after them), the
    ``heatmap`` below. Subclasses read their data, call :meth:`set_layers` and draw the
    layer :meth:`layer_index` in ``_draw``."""

    def __init__(self, caption: str, what: str, heatmap: HeatmapPlot,
                 extra: tuple[QWidget, ...] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self._blocks: list[int] = []
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip(f"The MoE layer whose {what} is shown")
        self.heatmap = heatmap
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel(caption))
        row.addWidget(self.layer_combo)
        for w in extra:
            row.addSpacing(8)
            row.addWidget(w)
        row.addStretch(1)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(2)
        col.addLayout(row)
        col.addWidget(self.heatmap, 1)
        self.layer_combo.currentIndexChanged.connect(lambda _i: self._draw())

    def set_layers(self, blocks, n_layers: int) -> None:
        """The combo lists layers ``blocks`` (the run's moe_blocks; 0..n-1 when they do not
        match the data's ``n_layers``), keeping the layer chosen where it still exists."""
        blocks = list(blocks or range(n_layers))
        if len(blocks) != n_layers:
            blocks = list(range(n_layers))
        keep = self.layer_combo.currentIndex()
        self._blocks = [int(b) for b in blocks]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems([f"L{b}" for b in self._blocks])
        self.layer_combo.setCurrentIndex(keep if 0 <= keep < len(self._blocks) else 0)
        self.layer_combo.blockSignals(False)

    def layer_index(self) -> int:
        return max(self.layer_combo.currentIndex(), 0)

    def layer_name(self) -> str:
        return f"L{self._blocks[self.layer_index()]}" if self._blocks else ""

    def _draw(self) -> None:
        raise NotImplementedError
