"""Which experts each domain of the corpus went to, over the whole corpus, for a run
that recorded the totals (an inspection: ``inspect/load_per_domain`` [domains, layers,
experts], written when it ends). The Routing view's domain x expert map shows the probe
passages only; this is every routed token. Shown in the Experts view beside the
co-selection map, with its own layer choice; the view hides both for runs without the
totals (training runs)."""
from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QLabel, QWidget

from ...metrics.routing import group_total_variation, load_share
from ..theme import diverging_colormap
from ..widgets.heatmap import HeatmapPlot
from .layer_map_view import LayerMapView
from .run_data import expert_names

TENSOR = "inspect/load_per_domain"
TOKENS = "inspect/tokens_per_domain"


class DomainLoadView(LayerMapView):
    """A layer selector and a domain x expert heatmap: row d, column e = of domain d's
    expert choices (each token's k choices), the share that went to expert e."""

    def __init__(self, parent: QWidget | None = None):
        self._load: np.ndarray | None = None      # [D, layers, E] choices
        self._tokens: np.ndarray | None = None    # [D] tokens
        self._names: list[str] = []
        self._experts: list[str] = []             # [E] the run's names of its experts
        self.spread_label = QLabel()
        self.spread_label.setObjectName("domainSpread")
        self.spread_label.setToolTip("Mean total-variation distance between the domains' rows: "
                                     "0 = every domain uses the same mix of experts, "
                                     "1 = no expert shared")
        # As Routing's domain x expert map: a diverging scale centred on the uniform
        # share 1/E (on 0..1 every share of a balanced layer was the same dark colour).
        heatmap = HeatmapPlot("Load per domain, whole corpus", "", "domain",
                              colormap=diverging_colormap(), fixed_levels=(0.0, 1.0), annotate=True,
                              value_format=lambda v: f"{v:.0%}")
        super().__init__("Load per domain, layer", "load per domain", heatmap,
                         extra=(self.spread_label,), parent=parent)
        self.setObjectName("domainLoadView")
        self.heatmap.set_hover_formatter(self._hover)

    def has_data(self) -> bool:
        return self._load is not None

    def set_reader(self, reader, member: int = 0) -> bool:
        """Read the run's whole-corpus load per domain (the latest record). True when the
        run has it."""
        load = tokens = None
        if reader is not None:
            try:
                got, tok = reader.tensor(TENSOR, member=member), reader.tensor(TOKENS, member=member)
            except Exception:  # noqa: BLE001 - a damaged record: the rest of the view stands
                got = tok = None
            load = None if got is None else np.asarray(got[1], dtype=np.float64)
            tokens = None if tok is None else np.asarray(tok[1], dtype=np.float64).reshape(-1)
        if load is None or load.ndim != 3 or tokens is None or tokens.size != load.shape[0]:
            self._load = None
            return False
        names = [str(n) for n in (reader.meta.get("domain_names") or [])]
        if len(names) != load.shape[0]:
            names = [f"domain {d}" for d in range(load.shape[0])]
        self._load, self._tokens, self._names = load, tokens, names
        self._experts = expert_names(reader.meta, load.shape[2])
        self.set_layers(reader.meta.get("moe_blocks"), load.shape[1])
        self._draw()
        return True

    def rows(self) -> list[int]:
        """The domains shown: those with routed tokens."""
        if self._tokens is None:
            return []
        return [d for d in range(self._tokens.size) if self._tokens[d] > 0]

    def shares(self) -> np.ndarray:
        """The matrix shown: [domains shown, E], each row summing to 1."""
        if self._load is None:
            return np.zeros((0, 0))
        return load_share(self._load[self.rows(), self.layer_index()])

    def spread(self) -> float:
        """How differently the domains are routed in the layer shown: the mean total-
        variation distance between their rows (0 = the same mix, 1 = disjoint)."""
        m = self.shares()
        return float(group_total_variation(m)) if m.shape[0] >= 2 else float("nan")

    def _draw(self) -> None:
        if self._load is None:
            return
        m = self.shares()
        tv = self.spread()
        self.heatmap.set_title(f"Load per domain, whole corpus · {self.layer_name()}")
        self.spread_label.setText(f"domains differ by {tv:.2f}" if np.isfinite(tv) else "")
        E = m.shape[1]
        u = 1.0 / E if E else 0.0
        self.heatmap.set_colormap(diverging_colormap(self.palette()))
        self.heatmap.set_matrix(m, x_labels=self._experts if len(self._experts) == E
                                else [f"e{e}" for e in range(E)],
                                y_labels=[self._names[d] for d in self.rows()],
                                fixed_levels=(0.0, 2.0 * u) if E else None)
        if E:
            self.heatmap.set_bar_ticks([(0.0, "0%"), (u, f"{100 * u:.3g}%"),
                                        (2 * u, f"{200 * u:.3g}%")])


    def _hover(self, row: int, col: int, value: float) -> list[str]:
        rows = self.rows()
        if self._load is None or not 0 <= row < len(rows):
            return []
        d = rows[row]
        n = int(self._load[d, self.layer_index(), col])
        return [f"{self._names[d]}: {int(self._tokens[d]):,} tokens",
                f"{n:,} choices went to expert "
                f"{self._experts[col] if col < len(self._experts) else f'e{col}'}"
                + (f" ({value:.0%})" if np.isfinite(value) else "")]
