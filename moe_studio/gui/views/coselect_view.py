"""Which expert pairs fire together, for a run that recorded co-selection counts (an
inspection: ``inspect/coselect`` [layers, experts, experts]). Shown in the Experts view
beside the expert x step heatmap, with its own layer choice; the view hides it for runs
without the counts (training runs)."""
from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QWidget

from ...metrics.coselection import also_chose
from ..widgets.heatmap import HeatmapPlot
from .layer_map_view import LayerMapView
from .run_data import expert_names

TENSOR = "inspect/coselect"


class CoSelectionView(LayerMapView):
    """A layer selector and an expert x expert heatmap: row a, column b = of the tokens
    routed to expert a, the share also routed to expert b."""

    def __init__(self, parent: QWidget | None = None):
        self._counts: np.ndarray | None = None   # [layers, E, E]
        self._experts: list[str] = []              # [E] labels of the experts
        heatmap = HeatmapPlot("Expert pairs chosen together", "also chose expert",
                              "tokens routed to expert", colormap="viridis",
                              fixed_levels=(0.0, 1.0), annotate=True,
                              value_label="share also routed", value_format=lambda v: f"{v:.0%}")
        super().__init__("Co-selection, layer", "expert pairs", heatmap, parent=parent)
        self.setObjectName("coselectView")
        self.heatmap.set_hover_formatter(self._hover)

    def has_data(self) -> bool:
        return self._counts is not None

    def set_reader(self, reader, member: int = 0) -> bool:
        """Read the run's co-selection counts (the latest record). True when the run has
        them."""
        got = None
        if reader is not None:
            try:
                got = reader.tensor(TENSOR, member=member)
            except Exception:  # noqa: BLE001 - a damaged record: the rest of the view stands
                got = None
        counts = None if got is None else np.asarray(got[1])
        if counts is None or counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
            self._counts = None
            return False
        self._counts = counts
        meta = reader.meta if isinstance(reader.meta, dict) else {}
        # digits keep an E x E map compact; a run naming its classes (ZAYA1's skip) shows them
        self._experts = (expert_names(meta, counts.shape[1]) if meta.get("expert_names")
                         else [str(i) for i in range(counts.shape[1])])
        self.set_layers(reader.meta.get("moe_blocks"), counts.shape[0])
        self._draw()
        return True

    def shares(self) -> np.ndarray:
        """The matrix shown: [E, E] shares of the selected layer (NaN diagonal)."""
        if self._counts is None:
            return np.zeros((0, 0))
        return also_chose(self._counts[self.layer_index()])

    def _draw(self) -> None:
        if self._counts is None:
            return
        m = self.shares()
        experts = self._experts if len(self._experts) == m.shape[0] else \
            [str(i) for i in range(m.shape[0])]
        self.heatmap.set_title(f"Expert pairs chosen together · {self.layer_name()}")
        self.heatmap.set_matrix(m, x_labels=experts, y_labels=experts)

    def _hover(self, row: int, col: int, value: float) -> list[str]:
        c = self._counts[self.layer_index()] if self._counts is not None else None
        if c is None:
            return []
        n_a, n_ab = int(c[row, row]), int(c[row, col])
        a, b = (self._experts[i] if i < len(self._experts) else str(i) for i in (row, col))
        if row == col:
            return [f"expert {a}: {n_a:,} tokens"]
        return [f"expert {a}: {n_a:,} tokens", f"{n_ab:,} of them also chose expert {b}"
                + (f" ({value:.0%})" if np.isfinite(value) else "")]
