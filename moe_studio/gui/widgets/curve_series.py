"""What ``CurvePlot`` keeps per series: its data, its style and its plot items.

A series is keyed by a string and owns up to two ``PlotDataItem`` objects (a faint raw
curve, made on first use, and a bold smoothed curve) plus an optional shaded band; the
plot only ever calls ``setData`` on them. ``resolve_color`` turns a series' colour spec
into a colour of the current theme.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor

from ..theme import series_color


# int: index into the theme's series palette; (int, shade): a shade of that colour (the
# members of one run in an overlay); a plot_colors() key such as "ensemble" or
# "foreground": that theme colour; any other str / QColor: a fixed colour.
ColorSpec = Union[int, tuple, str, QColor, None]


@dataclass
class CurveSeries:
    """One series of a ``CurvePlot``: its style, its plot items and its data."""

    key: str
    label: str
    color: ColorSpec
    dash: bool
    symbol: str | None
    smoothable: bool
    raw: pg.PlotDataItem | None     # made when first needed (see CurvePlot._raw)
    smooth: pg.PlotDataItem
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    ys: np.ndarray = field(default_factory=lambda: np.empty(0))   # smoothed y
    sorted_x: bool = True
    band: "CurveBand | None" = None     # a shaded range behind the series (set_band)
    legend_group: str | None = None  # series sharing one legend entry (set_series)


@dataclass
class CurveBand:
    """A shaded range behind a series: two invisible edges and the fill between them."""

    lo: pg.PlotDataItem
    hi: pg.PlotDataItem
    fill: pg.FillBetweenItem
    x: np.ndarray
    y_lo: np.ndarray
    y_hi: np.ndarray


def resolve_color(color: ColorSpec, dark: bool, colors: dict) -> QColor:
    """The QColor of ``color`` (a ``ColorSpec``) on a dark or light background;
    ``colors``: the plot's theme colours (``plot_colors()``)."""
    if isinstance(color, QColor):
        return QColor(color)
    if isinstance(color, (int, np.integer)):
        return QColor(series_color(int(color), dark))
    if isinstance(color, tuple):
        # (palette index, shade): shade 0 is the palette colour; higher shades step
        # away from it, darker on a light background and lighter on a dark one.
        base = QColor(series_color(int(color[0]), dark))
        shade = int(color[1]) % 5
        if shade == 0:
            return base
        return base.lighter(100 + 35 * shade) if dark else base.darker(100 + 35 * shade)
    if isinstance(color, str) and color in colors:
        return QColor(colors[color])
    return QColor(color)

