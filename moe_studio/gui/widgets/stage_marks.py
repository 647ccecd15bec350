"""Staged training on time axes: a dashed vertical line where each stage of
``train.stages`` begins (and where the last one ends), labelled with what it freezes.
The stages come from the run's meta (``stages``: start, end, freeze per stage)."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from .plots import CurvePlot


def stage_boundaries(meta: Mapping) -> list[tuple[int, str]]:
    """(step, label) of every boundary after step 0: each stage's start and the end of
    the last stage, which is where everything trains again."""
    stages = meta.get("stages") or []
    out: list[tuple[int, str]] = []
    for s in stages:
        frozen = "+".join(s.get("freeze") or []) or "nothing"
        out.append((int(s["start"]), f"frozen: {frozen}"))
    if stages:
        out.append((int(stages[-1]["end"]), "frozen: nothing"))
    # a stage that freezes nothing followed by the end: one line, not two
    seen: dict[int, str] = {}
    for step, label in out:
        seen[step] = label
    return [(s, lab) for s, lab in sorted(seen.items()) if s > 0]


class StageMarks:
    """The stage lines on a set of plots; :meth:`show` replaces them."""

    def __init__(self) -> None:
        self._lines: dict[int, tuple[CurvePlot, list[pg.InfiniteLine]]] = {}

    def show(self, plots: Iterable[CurvePlot], boundaries: Sequence[tuple[int, str]],
             x_of_steps: Callable[[np.ndarray], np.ndarray]) -> None:
        xs = x_of_steps(np.array([b[0] for b in boundaries], dtype=float)) if boundaries else []
        for plot in plots:
            self.clear(plot)
            lines = []
            for x, (_, label) in zip(np.asarray(xs, dtype=float).tolist(), boundaries):
                if not np.isfinite(x):
                    continue
                line = pg.InfiniteLine(pos=x, angle=90, movable=False,
                                       pen=pg.mkPen((150, 110, 40), width=1, style=Qt.PenStyle.DashLine),
                                       label=label, labelOpts={"position": 0.92, "color": (150, 110, 40)})
                line.setToolTip(f"training stage: {label}")
                plot.plot_item.addItem(line, ignoreBounds=True)
                lines.append(line)
            self._lines[id(plot)] = (plot, lines)

    def clear(self, plot: CurvePlot) -> None:
        _, lines = self._lines.pop(id(plot), (plot, []))
        for line in lines:
            plot.plot_item.removeItem(line)

