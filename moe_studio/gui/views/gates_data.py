"""What the Gates view shows, read from a run store: free of Qt, so it is tested without
a QApplication and the view only draws.

``GatesData`` holds one member's router-probability histograms (``router_probs/L{i}``:
steps, bin edges, counts) and the per-layer router scalars (``moe/L{i}/entropy``,
``top1_prob``, ``logit_absmean``, ``logit_absmax``); ``load`` reads a run, ``ingest``
adds what a follower's poll brought. ``version`` grows with every change, so a view
redraws only what is new.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...metrics.routing import histogram_percentiles
from ...store import RunReader

CURVES = ("entropy", "top1_prob", "logit_absmean", "logit_absmax")


def _empty_histogram() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.linspace(0, 1, 51), np.zeros((0, 50))


class GatesData:
    """The router records of one member of one run (see the module docstring)."""

    def __init__(self) -> None:
        self.version = 0
        self.reset()

    def reset(self) -> None:
        self.blocks: list[int] = []
        self.n_experts = 0
        # block -> (steps [S], edges [B+1] or [S, B+1], counts [S, B])
        self.hist: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # (block, curve) -> (steps [S], values [S]), steps ascending
        self.scal: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self.version += 1

    # ------------------------------------------------------------------ reading
    def load(self, reader: RunReader, member: int, blocks: list[int]) -> None:
        """Everything ``reader`` holds for ``member`` in the MoE ``blocks`` (after
        ``reset``); ``blocks`` come from the caller, which knows how to find them in a
        run that does not name them in its meta."""
        self.blocks = list(blocks)
        cfg = reader.config if isinstance(reader.config, dict) else {}
        self.n_experts = int((cfg.get("moe") or {}).get("n_experts") or 0)
        self.read_histograms(reader, member)
        names = [f"moe/L{b}/{c}" for b in self.blocks for c in CURVES]
        self.add_scalars(reader.scalars(names, member=member))

    def ingest(self, reader: RunReader, upd, member: int) -> bool:
        """Add what a follower's poll ``upd`` brought; True if anything changed."""
        changed = False
        if upd.new_histograms:
            self.read_histograms(reader, member)
            changed = True
        df = upd.scalars
        if len(df):
            df = df[(df["member"] == member) & df["name"].astype(str).str.startswith("moe/L")]
            if len(df):
                changed |= self.add_scalars(df)
        return changed

    def read_histograms(self, reader: RunReader, member: int) -> None:
        for b in self.blocks:
            steps, edges, counts = reader.histogram_series(f"router_probs/L{b}", member=member)
            if steps.size:
                self.hist[b] = (steps, edges, counts)
        self.version += 1

    def add_scalars(self, df: pd.DataFrame) -> bool:
        """Append the ``moe/L{i}/<curve>`` rows of ``df`` (any order); True if any."""
        if not len(df):
            return False
        added = False
        for name, g in df.groupby(df["name"].astype(str), sort=False):
            parts = name.split("/")
            if len(parts) != 3 or parts[2] not in CURVES:
                continue
            key = (int(parts[1][1:]), parts[2])
            g = g.sort_values("step")
            s, v = g["step"].to_numpy(np.int64), g["value"].to_numpy(np.float64)
            old = self.scal.get(key)
            if old is not None:
                s, v = np.concatenate([old[0], s]), np.concatenate([old[1], v])
                if np.any(np.diff(s) < 0):
                    o = np.argsort(s, kind="stable")
                    s, v = s[o], v[o]
            self.scal[key] = (s, v)
            added = True
        if added:
            self.version += 1
        return added

    # ------------------------------------------------------------------ queries
    def steps(self) -> np.ndarray:
        """The steps to scrub: those of the histograms; without histograms (statistics
        off), those of the scalars."""
        steps = [h[0] for h in self.hist.values()]
        if not steps:
            steps = [v[0] for v in self.scal.values()]
        return np.unique(np.concatenate(steps)) if steps else np.zeros(0, np.int64)

    def curve(self, block: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(steps, values)`` of scalar ``moe/L{block}/{name}``, or None."""
        return self.scal.get((block, name))

    def pooled_histogram(self, layer: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, edges, counts [S, B])`` of one layer, or of all layers pooled (the
        steps every layer recorded)."""
        blocks = self.blocks if layer is None else [layer]
        have = [self.hist[b] for b in blocks if b in self.hist]
        if not have:
            return _empty_histogram()
        if len(have) == 1:
            return have[0]
        common = have[0][0]
        for h in have[1:]:
            common = np.intersect1d(common, h[0])
        counts = sum(h[2][np.searchsorted(h[0], common)].astype(np.float64) for h in have)
        edges = have[0][1]
        return common, (edges if edges.ndim == 1 else edges[np.searchsorted(have[0][0], common)]), counts

    def percentile_bands(self, layer: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [S], percentiles [S, 9])`` of the router probabilities shown."""
        steps, edges, counts = self.pooled_histogram(layer)
        return steps, histogram_percentiles(edges, counts)


def histogram_at(pooled: tuple[np.ndarray, np.ndarray, np.ndarray], step: int | None):
    """The histogram of ``pooled`` (``GatesData.pooled_histogram``) at the recorded step
    nearest ``step``: ``(step, bin centres [B], narrowest bin width, % of all
    probabilities [B])``, or None without records."""
    steps, edges, counts = pooled
    if not steps.size or step is None:
        return None
    i = int(np.argmin(np.abs(steps - step)))
    e = edges if edges.ndim == 1 else edges[i]
    c = counts[i].astype(np.float64)
    share = 100.0 * c / c.sum() if c.sum() > 0 else c
    return int(steps[i]), (e[:-1] + e[1:]) / 2, float(np.min(np.diff(e))), share
