"""Shaded ranges behind ``CurvePlot`` series (a group's min-max or ±std around its mean).

A mixin of ``CurvePlot``: it uses the plot's ``_series``, ``_pi``, ``_style_series`` and
``_update_items``, which smooth and colour a band together with its series.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor

from .curve_series import CurveBand, CurveSeries


class CurveBandsMixin:
    """``set_band`` / ``band_data`` of ``CurvePlot``."""

    def set_band(self, key: str, x, lo, hi) -> None:
        """Shade ``lo``..``hi`` over ``x`` (1-D, equal length) behind series ``key`` (which
        must exist) in its colour: e.g. the min-max or ±std range of a group of runs
        around their mean. Smoothed, hidden and removed together with the series; empty
        arrays remove the band."""
        s = self._series[key]
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        lo = np.asarray(lo, dtype=np.float64).reshape(-1)
        hi = np.asarray(hi, dtype=np.float64).reshape(-1)
        if not (x.shape == lo.shape == hi.shape):
            raise ValueError(f"band {key!r}: x, lo, hi must have equal lengths")
        if x.size == 0:
            self._remove_band(s)
            return
        if s.band is None:
            # Edges drawn with a transparent pen: with no pen at all pyqtgraph keeps no
            # curve path, and the fill between them would stay empty.
            opts = dict(connect="finite", autoDownsample=True, clipToView=True,
                        pen=pg.mkPen(QColor(0, 0, 0, 0)))
            lo_item, hi_item = pg.PlotDataItem(**opts), pg.PlotDataItem(**opts)
            fill = pg.FillBetweenItem(lo_item, hi_item)
            fill.setZValue(-10)
            for item in (lo_item, hi_item, fill):
                self._pi.addItem(item)
            s.band = CurveBand(lo_item, hi_item, fill, x, lo, hi)
            self._style_series(s)
        else:
            s.band.x, s.band.y_lo, s.band.y_hi = x, lo, hi
        s.band.fill.setVisible(s.smooth.isVisible())
        self._update_items(s)

    def band_data(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The raw (x, lo, hi) of series ``key``'s band, or None."""
        b = self._series[key].band
        return None if b is None else (b.x, b.y_lo, b.y_hi)

    def _remove_band(self, s: CurveSeries) -> None:
        if s.band is not None:
            for item in (s.band.fill, s.band.lo, s.band.hi):
                self._pi.removeItem(item)
            s.band = None
