"""Line plots for training curves: one ``CurvePlot`` per chart, series updated in place.

A series is keyed by a string. ``set_series`` keeps its two ``PlotDataItem`` objects (a
faint raw curve and a bold smoothed curve) for the life of the plot and only calls
``setData`` on them, so a live view can push a frame at 8 Hz without churning the scene.
"""
from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401  (registers ImageExporter / SVGExporter)
from PySide6.QtCore import QRect, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap, QTransform
from PySide6.QtWidgets import (QGridLayout, QLabel, QWidget)

from ..formats import fmt_step, fmt_value, format_duration
from ...metrics.smoothing import ema
from . import line_labels
from .. import theme
from .axes import XAxis
from .figure import FigureWidget, menu_button
from ..theme import is_dark_palette, series_color

# int: index into the theme's series palette; (int, shade): a shade of that colour (the
# members of one run in an overlay); a plot_colors() key such as "ensemble" or
# "foreground": that theme colour; any other str / QColor: a fixed colour.
ColorSpec = Union[int, tuple, str, QColor, None]

_RAW_ALPHA = 70          # of 255: the unsmoothed curve behind a smoothed one
_BOLD_WIDTH = 2.0
_THIN_WIDTH = 1.0        # the single curve drawn when smoothing is off (1 px strokes fast)
_ITEM_OPTS = dict(connect="finite", autoDownsample=True, downsampleMethod="peak",
                  clipToView=True)
_BAND_ALPHA = 48         # of 255: a band (e.g. a group's min-max) behind its series


@dataclass
class _Series:
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
    band: "_Band | None" = None     # a shaded range behind the series (set_band)
    legend_group: str | None = None  # series sharing one legend entry (set_series)


@dataclass
class _Band:
    lo: pg.PlotDataItem
    hi: pg.PlotDataItem
    fill: pg.FillBetweenItem
    x: np.ndarray
    y_lo: np.ndarray
    y_hi: np.ndarray




class _TimedPlotWidget(pg.PlotWidget):
    """A PlotWidget that remembers how long its last paint took (for frame pacing)."""

    last_paint_s = 0.0

    def paintEvent(self, ev):
        t0 = time.perf_counter()
        super().paintEvent(ev)
        self.last_paint_s = time.perf_counter() - t0


class CurvePlot(FigureWidget):
    """A titled line chart with legend, smoothing, log-y, hover read-out and export.

    Series x/y are 1-D float arrays of equal length (x ascending for the fast hover and
    view clipping; unsorted x still works). Non-finite y values leave gaps.
    """

    seriesVisibilityChanged = Signal(str, bool)
    userChangedRange = Signal()   # the user zoomed or panned (mouse, wheel)
    plot_widget_class = _TimedPlotWidget
    min_plot_size = (160, 120)

    def __init__(self, title: str = "", x_label: str = "step", y_label: str = "",
                 parent: QWidget | None = None):
        self._x_axis = XAxis(orientation="bottom")
        super().__init__(title, x_label, y_label, axis_items={"bottom": self._x_axis},
                         parent=parent)
        self._shown_title: str | None = None   # the title as drawn (elided to fit)
        self._smoothing = 0.0
        self._log_y = False
        self._x_label = x_label
        self._series: dict[str, _Series] = {}
        pi = self._pi
        # the placeholder follows the axis box as the layout settles
        self._vb.sigResized.connect(lambda *_: self._place_placeholder())
        pi.setLabel("bottom", x_label)
        pi.getAxis("left").setWidth(52)   # aligned plots in a grid, room for 1.5e-03
        # The title spans the y axis's column too: a narrow plot in a row of four keeps
        # "Load-balancing loss" whole instead of 52 px less of it.
        pi.layout.removeItem(pi.titleLabel)
        pi.layout.addItem(pi.titleLabel, 0, 0, 1, 2)
        for name in ("left", "bottom"):
            # Major and minor ticks (and grid lines) only: the third level of grid lines
            # made the plot busier and cost more to paint than all the curves together.
            pi.getAxis(name).setStyle(maxTickLevel=1)
        pi.setClipToView(True)
        # PlotItem.addItem() imposes the plot's own downsampling mode on every item added
        # (off by default), whatever the item was made with: auto here, per item below.
        pi.setDownsampling(auto=True, mode="peak")
        self._legend = _Legend(offset=(-6, 6), verSpacing=-8, horSpacing=6, labelTextSize="7.5pt")
        self._legend.layout.setContentsMargins(4, 2, 6, 2)
        self._legend.setParentItem(self._vb)
        pi.legend = self._legend
        # Where the legend goes when every corner of the view has data under it: a
        # column right of the plot that the layout keeps free (zero wide while unused).
        self._legend_slot = pg.GraphicsWidget()
        self._legend_slot.setFlag(self._legend_slot.GraphicsItemFlag.ItemHasNoContents)
        pi.layout.addItem(self._legend_slot, 2, 3)
        # The title spans the whole plot, from above the y axis to above the legend's
        # column: a narrow plot keeps more of its title.
        pi.layout.removeItem(pi.titleLabel)
        pi.layout.addItem(pi.titleLabel, 0, 0, 1, 4)
        pi.layout.setColumnStretchFactor(3, 0)
        self._set_slot_width(0)
        self._legend_outside = False
        self._legend.sigSampleClicked.connect(self._on_legend_clicked)
        self._legend.setVisible(False)    # shown from the second series on
        self._legend_enabled = True
        self._many = False          # set_many_series
        self._legend_corner = (1, 0)
        self._range_moved = False
        self._vb.sigRangeChanged.connect(self._on_range_changed)
        self._vb.sigRangeChangedManually.connect(self.userChangedRange)
        # the view's transform follows its range lazily: labels are placed once it has
        self._vb.sigTransformChanged.connect(lambda *_: self.place_line_labels())

        # Hover read-out: a vertical line and a dot on each visible series beside the
        # frame's text box.
        self._vline = pg.InfiniteLine(angle=90, movable=False)
        self._dots = pg.ScatterPlotItem(size=7, pxMode=True)
        for item in (self._vline, self._dots):
            item.setZValue(1000)
            item.hide()
            pi.addItem(item, ignoreBounds=True)
        self._hover_notes = None     # set_hover_notes

        # The key of a plot too small for its legend beside it: a button that lists the
        # series (click one to show or hide it) instead of a box over the curves.
        self._key_button, self._key_menu = menu_button(
            self, "key", "The key to the curves (click one to show or hide it)")
        self._key_button.setObjectName("legendKeyButton")
        self._key_menu.aboutToShow.connect(self._fill_key_menu)
        self._key_button.hide()
        self._legend_collapsed = False

        # A message over the empty plot ("nothing to show yet, because ..."): an empty
        # axis box alone reads as broken.
        self._placeholder = QLabel(self)
        self._placeholder_text = ""
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setWordWrap(True)
        self._placeholder.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._placeholder.hide()
        self._apply_theme()

    def set_placeholder(self, text: str) -> None:
        """Show ``text`` centred over the plot area ("" hides it)."""
        self._placeholder_text = text
        self._placeholder.setText(text)
        self._placeholder.setVisible(bool(text))
        self._place_placeholder()

    def placeholder(self) -> str:
        """The notice shown over the plot, whole (the label may show it cut to fit)."""
        return "" if self._placeholder.isHidden() else self._placeholder_text

    def _place_placeholder(self) -> None:
        """Over the axis box (the view box), wrapped inside it, never over the axes."""
        if self._placeholder.isHidden():
            return
        w, h = self.width(), self.height()
        box = QRect(int(w * 0.1), int(h * 0.25), int(w * 0.8), int(h * 0.5))
        r = self._plot.mapFromScene(self._vb.sceneBoundingRect()).boundingRect()
        if r.width() > 40 and r.height() > 20:
            r.moveTopLeft(self._plot.mapTo(self, r.topLeft()))
            mx, my = int(r.width() * 0.05), int(r.height() * 0.1)
            box = r.adjusted(mx, my, -mx, -my)
        fit_label(self._placeholder, box, self._placeholder_text)
        self._placeholder.raise_()

    # ------------------------------------------------------------------ series
    def set_series(self, key: str, x, y, label: str | None = None, color: ColorSpec = None,
                   *, dash: bool = False, symbol: str | None = None,
                   smooth: bool = True, legend_group: str | None = None) -> None:
        """Create or update series ``key`` in place with data ``x``, ``y`` (equal length).

        ``color``: an int (theme series palette index), ``(index, shade)``, a theme key
        ("ensemble", "foreground"), a fixed colour, or None (next palette colour). ``dash`` draws a
        dashed line, ``symbol`` (e.g. "o") marks every point: both suit sparse series such
        as validation loss. ``smooth=False`` exempts the series from smoothing (a sparse
        series such as validation loss, already an average, would only lag behind). Style
        arguments apply when they change; ``label`` defaults to the key.
        ``legend_group``: series with the same text share one legend entry of that text
        (an ensemble's members as one key); clicking it shows or hides them all. Set when
        the series is made.
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"series {key!r}: x has {x.size} points, y has {y.size}")
        s = self._series.get(key)
        if s is None:
            if color is None:
                color = len(self._series)
            s = self._new_series(key, label or key, color, dash, symbol, smooth, legend_group)
        else:
            restyle = smooth != s.smoothable
            s.smoothable = smooth
            if color is not None and color != s.color:
                s.color, restyle = color, True
            if dash != s.dash or symbol != s.symbol:
                s.dash, s.symbol, restyle = dash, symbol, True
            if restyle:
                self._style_series(s)
            if label is not None and label != s.label:
                s.label = label
                legend_label = self._legend.getLabel(s.smooth)
                if legend_label is not None and s.legend_group is None:
                    legend_label.setText(label)
        s.x, s.y = x, y
        s.sorted_x = bool(x.size < 2 or np.all(np.diff(x) >= 0))
        self._update_items(s)

    def _new_series(self, key: str, label: str, color: ColorSpec, dash: bool,
                    symbol: str | None, smoothable: bool, legend_group: str | None = None) -> _Series:
        smooth = pg.PlotDataItem(**_ITEM_OPTS)
        smooth.setZValue(500 + len(self._series))
        s = _Series(key, label, color, dash, symbol, smoothable, None, smooth)
        s.legend_group = legend_group
        self._series[key] = s
        self._pi.addItem(smooth)
        if self._many:   # after addItem, which applies the plot's clip-to-view
            self._item_mode(smooth)
        if self._legend_enabled:   # entries cost ~1 ms each: none while it is off
            self._add_legend_entry(s)
        self._update_legend_visibility()
        self._style_series(s)
        return s

    def _raw(self, s: _Series) -> pg.PlotDataItem:
        """The series' faint raw trace, made on first use: a series that is never
        smoothed (validation loss, or any with smoothing off) costs one item, not two,
        which a view of many series opens noticeably faster for."""
        if s.raw is None:
            # The faint raw trace is noise drawn at low alpha: anti-aliasing it costs as
            # much as the bold curve and shows nowhere.
            s.raw = pg.PlotDataItem(antialias=False, **_ITEM_OPTS)
            s.raw.setZValue(s.smooth.zValue() - 500)
            s.raw.setVisible(False)
            self._pi.addItem(s.raw)
            self._style_series(s)
        return s.raw

    def _shows_raw(self, s: _Series) -> bool:
        return not self._many and self._smoothed(s)

    def set_many_series(self, on: bool) -> None:
        """Draw for dozens of curves in one plot (a comparison of many runs): no faint
        raw traces behind the smoothed curves (noise at that density, and half the
        drawing), 1 px lines, and no clip-to-view, auto-downsampling or dynamic range
        limit, which re-process every curve on each pan or zoom step and cost more
        than drawing them whole.
        Measured with 50 curves of 750 points: about 4x the frames per second."""
        on = bool(on)
        if on == self._many:
            return
        self._many = on
        for s in self._series.values():
            self._item_mode(s.smooth)
            self._style_series(s)
            self._update_items(s)

    def _item_mode(self, item: pg.PlotDataItem) -> None:
        item.setClipToView(not self._many)
        item.setDownsampling(auto=not self._many)
        # The dynamic range limit re-processes every curve whenever y auto-ranges
        # (each pan step); a diverged run's spike is then clipped by Qt instead.
        item.setDynamicRangeLimit(None if self._many else 1e6)

    def _resolve(self, color: ColorSpec) -> QColor:
        dark = is_dark_palette(self.palette())
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
        if isinstance(color, str) and color in self._colors:
            return QColor(self._colors[color])
        return QColor(color)

    def _style_series(self, s: _Series) -> None:
        c = self._resolve(s.color)
        faint = QColor(c)
        faint.setAlpha(_RAW_ALPHA)
        style = Qt.PenStyle.DashLine if s.dash else Qt.PenStyle.SolidLine
        if s.raw is not None:
            s.raw.setPen(pg.mkPen(faint, width=1, style=style))
        width = 1.0 if self._many else _BOLD_WIDTH if self._smoothed(s) else _THIN_WIDTH
        s.smooth.setPen(pg.mkPen(c, width=width, style=style))
        # A wide anti-aliased polyline goes through QPainter's path stroker, which is slow
        # on a wiggly training curve (40+ ms for a 2,000-step loss). Drawn as separate
        # segments it costs a third; the joints of an opaque line do not show. Dashes
        # need the single polyline to keep their pattern. A 1 px line (set_many_series)
        # strokes fast as one cached path.
        s.smooth.curve.setSegmentedLineMode("off" if s.dash or self._many else "on")
        # A wide anti-aliased line costs in proportion to its points (measured: a 2 px
        # curve of 10,000 points 54 ms, of 500 points 6 ms; a 1 px one 2 ms either way).
        # A smoothed curve has no detail between pixels, so it is drawn from about one
        # sample per pixel; a raw (thin) curve keeps each pixel column's min and max.
        bold = width > 1.0
        s.smooth.opts["autoDownsampleFactor"] = 1.0 if bold else 5.0
        s.smooth.setDownsampling(auto=not self._many, method="subsample" if bold else "peak")
        if s.raw is not None:
            s.raw.setDownsampling(auto=True, method="peak")
        if s.symbol:
            s.smooth.setSymbol(s.symbol)
            s.smooth.setSymbolSize(5)
            s.smooth.setSymbolPen(pg.mkPen(c))
            s.smooth.setSymbolBrush(pg.mkBrush(c))
        else:
            s.smooth.setSymbol(None)
        if s.band is not None:
            fill = QColor(c)
            fill.setAlpha(_BAND_ALPHA)
            s.band.fill.setBrush(pg.mkBrush(fill))
        self._legend.update()

    def _smoothed(self, s: _Series) -> bool:
        return s.smoothable and self._smoothing > 0

    def _update_items(self, s: _Series) -> None:
        on = self._smoothed(s)
        s.ys = ema(s.y, self._smoothing) if on else s.y
        s.smooth.setData(s.x, s.ys)
        if self._shows_raw(s):
            self._raw(s).setData(s.x, s.y)
        elif s.raw is not None:
            s.raw.setData([], [])   # not drawn; keep no second copy of the data in the scene
        if s.raw is not None:
            s.raw.setVisible(self._shows_raw(s) and s.smooth.isVisible())
        if s.band is not None:
            b = s.band
            # Smoothed like the series, so the band stays around the line drawn.
            b.lo.setData(b.x, ema(b.y_lo, self._smoothing) if on else b.y_lo)
            b.hi.setData(b.x, ema(b.y_hi, self._smoothing) if on else b.y_hi)

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
            s.band = _Band(lo_item, hi_item, fill, x, lo, hi)
            self._style_series(s)
        else:
            s.band.x, s.band.y_lo, s.band.y_hi = x, lo, hi
        s.band.fill.setVisible(s.smooth.isVisible())
        self._update_items(s)

    def band_data(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The raw (x, lo, hi) of series ``key``'s band, or None."""
        b = self._series[key].band
        return None if b is None else (b.x, b.y_lo, b.y_hi)

    def _remove_band(self, s: _Series) -> None:
        if s.band is not None:
            for item in (s.band.fill, s.band.lo, s.band.hi):
                self._pi.removeItem(item)
            s.band = None

    def _legend_entries(self) -> list[_Series]:
        """The series that carry a legend entry: each ungrouped one, and the first of
        each legend group."""
        seen: set[str] = set()
        out = []
        for s in self._series.values():
            if s.legend_group is None:
                out.append(s)
            elif s.legend_group not in seen:
                seen.add(s.legend_group)
                out.append(s)
        return out

    def _add_legend_entry(self, s: _Series) -> None:
        if s in self._legend_entries() and self._legend.getLabel(s.smooth) is None:
            self._legend.addItem(s.smooth, s.legend_group or s.label)
            self._legend_columns(force=True)

    def remove_series(self, key: str) -> None:
        s = self._series.pop(key, None)
        if s is None:
            return
        was_entry = self._legend.getLabel(s.smooth) is not None
        self._legend.removeItem(s.smooth)
        if was_entry and s.legend_group is not None:
            # the group's next series carries its key now
            for o in self._series.values():
                if o.legend_group == s.legend_group:
                    self._add_legend_entry(o)
                    break
        self._remove_band(s)
        if s.raw is not None:
            self._pi.removeItem(s.raw)
        self._pi.removeItem(s.smooth)
        self._update_legend_visibility()

    def _update_legend_visibility(self) -> None:
        # One entry needs no key (the title names it), and the box would hide data.
        show = self._legend_enabled and len(self._legend_entries()) > 1
        self._legend.setVisible(show)
        if not show and self._legend_outside:
            self._collapse_legend(False)      # no "key" button for no legend
            self._move_legend_inside()

    def set_legend_enabled(self, on: bool) -> None:
        """Show the in-plot legend (from the second series on; the default), or never:
        for a view that keys its series in a legend of its own (many runs)."""
        self._legend_enabled = bool(on)
        if on:
            for s in self._series.values():
                self._add_legend_entry(s)
        self._update_legend_visibility()
        self._place_legend()

    def _on_range_changed(self, *_) -> None:
        self._range_moved = True
        self._place_legend()
        self.place_line_labels()

    def place_line_labels(self) -> None:
        """Place the reference-line labels again (inside the axis box, clear of each
        other): done on every change of the view; a caller that changed the lines or
        their texts without moving the view calls it."""
        line_labels.keep_inside(self._pi, self._colors["legend_bg"])

    def line_labels_clipped(self) -> list[str]:
        """The texts of reference-line labels that stick out of the axis box now."""
        return line_labels.clipped(self._pi)

    # A legend never covers data: inside the view in a corner (or the middle of a side)
    # with no data under it, else in a column right of the plot, which the layout keeps
    # free for it. The choice is made with the legend's inside size, whichever place it
    # is in now, so it does not flip back and forth as the view box changes size.
    _LEGEND_MARGIN = 6.0

    def _legend_columns(self, force: bool = False) -> None:
        """Columns: inside, 1 (2 from 7 entries); outside, as many as the plot's height
        needs. Then the legend takes the size its entries ask for."""
        lg = self._legend
        n = len(lg.items)
        if self._legend_outside:
            room = max(1.0, self._vb.boundingRect().height())
            cols = 1
            while cols < n and self._legend_hint(cols)[1] > room:
                cols += 1
        else:
            cols = 2 if n > 6 else 1
        if force or cols != lg.columnCount:
            lg.columnCount = 0      # setColumnCount lays out again only on a change
            lg.setColumnCount(cols)
        w, h = self._legend_hint(cols)
        lg.setGeometry(0, 0, w, h)

    def _legend_hint(self, cols: int) -> tuple[float, float]:
        """The legend's size with its entries in ``cols`` columns (row-major, as
        pyqtgraph's LegendItem fills them), from the entries' preferred sizes: the
        legend's own measure reads the sizes its last layout stretched them to."""
        lg = self._legend
        items = lg.items
        if not items:
            return 0.0, 0.0
        pref = Qt.SizeHint.PreferredSize
        rows = math.ceil(len(items) / cols)
        col_w = [0.0] * cols
        row_h = [0.0] * rows
        for i, (sm, lb) in enumerate(items):
            r, c = divmod(i, cols)
            a, b = sm.effectiveSizeHint(pref), lb.effectiveSizeHint(pref)
            col_w[c] = max(col_w[c], a.width() + b.width())
            row_h[r] = max(row_h[r], a.height(), b.height())
        lay = lg.layout
        left, top, right, bottom = lay.getContentsMargins()
        w = sum(col_w) + lay.horizontalSpacing() * (2 * cols - 1) + left + right
        h = sum(row_h) + lay.verticalSpacing() * (rows - 1) + top + bottom
        return w, h

    def _inside_legend_size(self) -> tuple[float, float]:
        """The legend's size in its inside layout (1 or 2 columns)."""
        return self._legend_hint(2 if len(self._legend.items) > 6 else 1)

    def _set_slot_width(self, w: float) -> None:
        slot = self._legend_slot
        if getattr(self, "_slot_w", None) == w:
            return         # a relayout on every pan step would cost a frame each
        self._slot_w = w
        slot.setMinimumWidth(w)
        slot.setMaximumWidth(w)
        slot.setPreferredWidth(w)
        self._pi.layout.setColumnFixedWidth(3, w)
        self._pi.layout.invalidate()
        if self._title and hasattr(self, "_key_button"):
            self._apply_title(force=False)    # the title gives up the legend's width

    def _move_legend_outside(self) -> None:
        self._legend_outside = True
        lg = self._legend
        lg.setParentItem(self._legend_slot)
        self._legend_columns(force=True)
        self._set_slot_width(lg.width() + 6)
        lg.anchor(itemPos=(0, 0), parentPos=(0, 0), offset=(4, 0))

    def _move_legend_inside(self) -> None:
        self._legend_outside = False
        self._legend.setParentItem(self._vb)
        self._set_slot_width(0)
        self._legend_columns(force=True)
        self._legend_corner = None

    _LEGEND_MAX_SHARE = 0.4     # of the plot's width, for a legend beside it

    def _collapse_legend(self, on: bool) -> None:
        """A legend beside the plot that would take more than its share of the width
        folds into the "key" button (the curves keep their room)."""
        if on == self._legend_collapsed:
            return
        self._legend_collapsed = on
        # hidden by opacity: visibility is what says whether a plot has a legend at all
        self._legend.setOpacity(0.0 if on else 1.0)
        self._legend.setAcceptedMouseButtons(Qt.MouseButton.NoButton if on
                                             else Qt.MouseButton.LeftButton)
        self._set_slot_width(0 if on else self._legend.width() + 6)
        self._key_button.setVisible(on)
        self._place_menu_button()

    def legend_collapsed(self) -> bool:
        """Whether the legend is folded into the "key" button (a plot too small for it)."""
        return self._legend_collapsed

    def _fill_key_menu(self) -> None:
        menu = self._key_menu
        menu.clear()
        for s in self._legend_entries():
            act = menu.addAction(s.legend_group or s.label)
            pix = QPixmap(12, 12)
            pix.fill(self._resolve(s.color))
            act.setIcon(QIcon(pix))
            act.setCheckable(True)
            act.setChecked(s.smooth.isVisible())
            act.toggled.connect(lambda on, k=s.key: self._toggle_entry(k, on))

    def _toggle_entry(self, key: str, on: bool) -> None:
        """Show or hide a legend entry's series (its whole group), as a legend click does."""
        s = self._series.get(key)
        if s is None:
            return
        s.smooth.setVisible(on)
        self._on_legend_clicked(s.smooth)

    def legend_outside(self) -> bool:
        """Whether the legend sits right of the plot (no free corner for it inside)."""
        return self._legend_outside

    def legend_scene_rect(self) -> QRectF | None:
        """The legend's rectangle in scene coordinates, or None when none is shown."""
        lg = self._legend
        if not lg.isVisible() or self._legend_collapsed:
            return None
        return lg.mapRectToScene(lg.boundingRect())

    def _place_legend(self) -> None:
        """Put the legend in the corner (or the middle of a side) of the view where no
        data point lies under it, top right first; where there is none, right of the
        plot. A legend the user dragged stays where they put it. ~1 ms."""
        lg = self._legend
        if lg.pinned or not lg.isVisible():
            return
        vb_rect = self._vb.boundingRect()
        if vb_rect.width() <= 0 or vb_rect.height() <= 0:
            return
        w, h = self._inside_legend_size()
        if self._legend_outside:
            # judged at the size the view will have with the legend inside again
            vb_rect = QRectF(vb_rect.left(), vb_rect.top(),
                             vb_rect.width() + self._legend_slot.width(), vb_rect.height())
        to_view = self._vb.childTransform().inverted()[0]
        if self._legend_outside:
            sx = (vb_rect.width() - self._legend_slot.width()) / vb_rect.width()
            to_view = QTransform(to_view.m11() * sx, 0, 0, to_view.m22(), to_view.dx(),
                                 to_view.dy())
        pts = self._visible_points()
        best = None
        if pts is not None and vb_rect.width() > w and vb_rect.height() > h:
            px, py = pts
            m = self._LEGEND_MARGIN
            for corner in ((1, 0), (0, 0), (1, 1), (0, 1), (1, 0.5), (0, 0.5)):
                left = vb_rect.left() + m if corner[0] == 0 else vb_rect.right() - m - w
                top = (vb_rect.top() + m if corner[1] == 0 else
                       vb_rect.bottom() - m - h if corner[1] == 1 else
                       vb_rect.center().y() - h / 2)
                # a few pixels of margin: a curve grazing the box edge reads as covered
                r = to_view.mapRect(QRectF(left - 3, top - 3, w + 6, h + 6))
                if not np.any((px >= r.left()) & (px <= r.right())
                              & (py >= r.top()) & (py <= r.bottom())):
                    best = corner
                    break
        if best is None:
            if not self._legend_outside:
                self._move_legend_outside()
            else:
                self._legend_columns()
            collapse = (lg.width() + 6 > self._LEGEND_MAX_SHARE * self.width()
                        or lg.height() > self._vb.boundingRect().height() + 4)
            self._collapse_legend(collapse)
            self._set_slot_width(0 if collapse else lg.width() + 6)
            return
        self._collapse_legend(False)
        if self._legend_outside:
            self._move_legend_inside()
        if best != self._legend_corner:
            self._legend_corner = best
            m = self._LEGEND_MARGIN
            off = (-m if best[0] else m, 0 if best[1] == 0.5 else -m if best[1] else m)
            lg.anchor(itemPos=best, parentPos=best, offset=off)

    def _visible_points(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Points of the visible curves in view coordinates (log10 under log-y): every
        point of short series and the segments between sparse markers, a per-column
        min/max of long ones, so a spike is not missed."""
        xs, ys = [], []
        for s in self._series.values():
            if not s.smooth.isVisible():
                continue
            x, y = s.smooth.getData()   # display coordinates (log10 under log-y)
            if x is None or not len(x):
                continue
            x = np.asarray(x, float)
            y = np.asarray(y, float)
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            if not x.size:
                continue
            if 1 < x.size < 400 and np.all(np.diff(x) > 0):
                # a line of few points (evaluations): where its segments run counts too
                fine = np.linspace(x[0], x[-1], 800)
                xs.append(np.concatenate([fine, x]))
                ys.append(np.concatenate([np.interp(fine, x, y), y]))
            elif x.size <= 4000:
                xs.append(x)
                ys.append(y)
            else:
                # 1,000 columns: each one's lowest and highest point
                n = x.size // 1000 * 1000
                xc = x[:n].reshape(1000, -1)
                yc = y[:n].reshape(1000, -1)
                xs += [xc[:, 0], xc[:, 0], x[n:]]
                ys += [yc.min(axis=1), yc.max(axis=1), y[n:]]
        if not xs:
            return None
        return np.concatenate(xs), np.concatenate(ys)

    def clear_series(self) -> None:
        for key in list(self._series):
            self.remove_series(key)

    def series_keys(self) -> list[str]:
        return list(self._series)

    def series_data(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw (unsmoothed) x, y of a series, as given to ``set_series``."""
        s = self._series[key]
        return s.x, s.y

    def smoothed_data(self, key: str) -> np.ndarray:
        return self._series[key].ys

    def series_label(self, key: str) -> str:
        return self._series[key].label

    def curve(self, key: str) -> pg.PlotDataItem:
        """The bold (smoothed, or raw when smoothing is 0) item of a series."""
        return self._series[key].smooth

    def raw_curve(self, key: str) -> pg.PlotDataItem:
        """The faint raw item shown behind the smoothed curve."""
        return self._raw(self._series[key])

    def set_series_visible(self, key: str, visible: bool) -> None:
        s = self._series[key]
        s.smooth.setVisible(visible)
        self._sync_visibility(s)

    def is_series_visible(self, key: str) -> bool:
        return self._series[key].smooth.isVisible()

    def _on_legend_clicked(self, item) -> None:
        for s in self._series.values():
            if s.smooth is item:
                if s.legend_group is not None:
                    for o in self._series.values():
                        if o.legend_group == s.legend_group and o is not s:
                            o.smooth.setVisible(s.smooth.isVisible())
                            self._sync_visibility(o)
                self._sync_visibility(s)
                return

    def _sync_visibility(self, s: _Series) -> None:
        visible = s.smooth.isVisible()
        if s.raw is not None:
            s.raw.setVisible(visible and self._shows_raw(s))
        if s.band is not None:
            s.band.fill.setVisible(visible)
        self._legend.update()
        self.seriesVisibilityChanged.emit(s.key, visible)

    # ------------------------------------------------------------------ view options
    def smoothing(self) -> float:
        return self._smoothing

    def set_smoothing(self, weight: float) -> None:
        """Debiased EMA weight in [0, 1); 0 shows the raw curves only."""
        weight = float(weight)
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {weight}")
        if weight == self._smoothing:
            return
        was_on = self._smoothing > 0
        self._smoothing = weight
        for s in self._series.values():
            if was_on != (weight > 0):
                self._style_series(s)
            self._update_items(s)

    def log_y(self) -> bool:
        return self._log_y

    def set_log_y(self, on: bool) -> None:
        """Logarithmic y axis; non-positive values leave gaps."""
        on = bool(on)
        if on == self._log_y:
            return
        self._log_y = on
        self._pi.setLogMode(x=False, y=on)
        self._vb.enableAutoRange(axis=pg.ViewBox.YAxis)
        self.hide_hover()

    def x_label(self) -> str:
        return self._x_label

    def set_x_label(self, text: str) -> None:
        self._x_label = text
        self._pi.setLabel("bottom", text)

    def x_format(self) -> str:
        return self._x_axis.x_format

    def set_x_format(self, fmt: str) -> None:
        """"number" (compact 250k / 2.5M ticks) or "duration" (x in seconds, m:ss ticks)."""
        if fmt not in ("number", "duration"):
            raise ValueError(f"x format must be 'number' or 'duration', got {fmt!r}")
        self._x_axis.x_format = fmt
        self._x_axis.picture = None   # drop the cached tick text
        self._x_axis.update()

    def _format_x(self, v: float) -> str:
        if self._x_axis.x_format == "duration":
            return format_duration(v, 1.0)
        return fmt_step(v)

    def last_paint_s(self) -> float:
        """Seconds the most recent repaint of the plot took."""
        return self._plot.last_paint_s

    def auto_range(self) -> None:
        """Fit the view to all data, and keep fitting as data arrive."""
        self._vb.enableAutoRange()

    def set_x_extent(self, x0: float, x1: float) -> None:
        """Fix the x range to [x0, x1] (y keeps auto-ranging): a live run drawn against
        its full length. ``auto_range()`` or the user's zoom ends it."""
        self._vb.setXRange(x0, x1, padding=0.02)
        self._vb.enableAutoRange(axis=pg.ViewBox.YAxis)

    def sync_range(self) -> None:
        """Apply auto-range to the data set so far, now rather than inside the next paint.

        pyqtgraph otherwise recomputes the range while painting, and the range change
        queues a second full repaint. Call once after a batch of ``set_series``.
        """
        self._range_moved = False
        if any(self._vb.state["autoRange"]):
            self._vb.updateAutoRange()
        if not self._range_moved:   # the data moved under a fixed view
            self._place_legend()
        self.place_line_labels()

    # ------------------------------------------------------------------ theme
    def _theme_changed(self) -> None:
        c = self._colors
        fg = QColor(c["foreground"])
        self._pi.showGrid(x=True, y=True, alpha=c["grid_alpha"])
        self._legend.setBrush(pg.mkBrush(*c["legend_bg"]))
        self._legend.setPen(pg.mkPen(QColor(c["muted"]), width=0.5))
        self._legend.setLabelTextColor(fg)
        self._vline.setPen(pg.mkPen(QColor(c["crosshair"]), width=1,
                                    style=Qt.PenStyle.DashLine))
        if hasattr(self, "_placeholder"):
            self._placeholder.setStyleSheet(f"color: {QColor(c['muted']).name()};")
        for s in self._series.values():
            self._style_series(s)
        line_labels.retheme(self._pi, c["legend_bg"])

    def _apply_title(self, force: bool = True) -> None:
        if self._title:
            # Left-aligned (next to the y axis), clear of the export button at the right,
            # and elided to the width there is: pyqtgraph's title asks its layout for
            # its whole text width, and a plot narrower than that would push its view
            # box past the widget's right edge (the right of the curves cut off).
            buttons = self._menu_button.width() + (self._key_button.width() + 2
                                                   if self._legend_collapsed else 0)
            room = max(40, int(self.width() - buttons - 10))
            shown = theme.elide_title(self.font(), self._title, room)
            if shown == self._shown_title and not force:
                return
            self._shown_title = shown
            self._pi.setTitle(html.escape(shown), color=self._colors["foreground"],
                              size=f"{theme.TITLE_POINT_SIZE:g}pt", bold=True, justify="left")
            self._pi.titleLabel.setMinimumWidth(0)
            self._pi.titleLabel.setToolTip(self._title if shown != self._title else "")
        else:
            self._shown_title = None
            self._pi.setTitle(None)

    def resizeEvent(self, event) -> None:
        QWidget.resizeEvent(self, event)     # not the frame's: the title is redone only on a new width
        if not hasattr(self, "_placeholder"):
            return
        b = self._menu_button
        b.adjustSize()       # first: the title's room is what the button leaves
        if self._title and event.size().width() != event.oldSize().width():
            self._apply_title(force=False)
        self._place_menu_button()
        self._place_placeholder()

    def _place_menu_button(self) -> None:
        """The ⋯ menu in the top right corner, the "key" button (when shown) left of it."""
        super()._place_menu_button()
        b = self._menu_button
        k = self._key_button
        if k.isVisibleTo(self):
            k.adjustSize()
            k.move(b.x() - k.width() - 2, 3)
            k.raise_()
        if self._title:
            self._apply_title(force=False)

    # ------------------------------------------------------------------ hover
    def hide_hover(self) -> None:
        super().hide_hover()
        for item in (self._vline, self._dots):
            item.hide()

    def _hover_point(self, x: float, y: float) -> str:
        return self.hover_at(x)

    def set_hover_notes(self, notes) -> None:
        """``notes(x) -> list[str]``: lines added to the hover read-out at data x, about
        what is drawn there besides the series (e.g. markers); None: none."""
        self._hover_notes = notes

    def hover_at(self, x: float) -> str:
        """Show the read-out for data x (the mouse calls this); returns its plain text."""
        rows = []
        for s in self._series.values():
            if not s.smooth.isVisible() or s.x.size == 0:
                continue
            i = self._nearest(s, x)
            rows.append((s, i, s.x[i]))
        if not rows:
            self.hide_hover()
            return ""
        # Snap the line to the data point closest to the mouse.
        x_snap = min((r[2] for r in rows), key=lambda v: abs(v - x))
        fg, muted = self._colors["foreground"], self._colors["muted"]
        lines = [f'<span style="color:{fg}"><b>{html.escape(self._x_label)} '
                 f'{self._format_x(x_snap)}</b></span>']
        plain = [f"{self._x_label} {self._format_x(x_snap)}"]
        spots = []
        for s, i, xi in rows:
            c = self._resolve(s.color).name()
            v = float(s.ys[i])
            text = fmt_value(v, missing=None)
            if self._smoothed(s):
                text += f' <span style="color:{muted}">({fmt_value(float(s.y[i]), missing=None)})</span>'
            if xi != x_snap:
                text += f' <span style="color:{muted}">@ {self._format_x(xi)}</span>'
            lines.append(f'<span style="color:{c}">■</span> '
                         f'<span style="color:{fg}">{html.escape(s.label)}: {text}</span>')
            plain.append(f"{s.label}: {fmt_value(v, missing=None)}")
            if math.isfinite(v) and (not self._log_y or v > 0):
                spots.append({"pos": (xi, math.log10(v) if self._log_y else v),
                              "brush": pg.mkBrush(c), "pen": pg.mkPen(self._colors["background"])})
        for note in (self._hover_notes(x) if self._hover_notes is not None else []):
            lines.append(f'<span style="color:{fg}">{html.escape(note)}</span>')
            plain.append(note)
        self._vline.setPos(x_snap)
        self._dots.setData(spots)
        self._hover.setHtml('<div style="font-size:8pt">' + "<br>".join(lines) + "</div>")
        (x0, x1), (_, y1) = self._vb.viewRange()
        right_half = x_snap > (x0 + x1) / 2
        self._hover.setAnchor((1, 0) if right_half else (0, 0))
        pad = (x1 - x0) * 0.01
        self._hover.setPos(x_snap - pad if right_half else x_snap + pad, y1)
        for item in (self._vline, self._dots, self._hover):
            item.show()
        return "\n".join(plain)

    @staticmethod
    def _nearest(s: _Series, x: float) -> int:
        if not s.sorted_x:
            return int(np.nanargmin(np.abs(s.x - x)))
        i = int(np.searchsorted(s.x, x))
        if i <= 0:
            return 0
        if i >= s.x.size:
            return s.x.size - 1
        return i if abs(s.x[i] - x) < abs(x - s.x[i - 1]) else i - 1

    # ------------------------------------------------------------------ export
    def csv_rows(self) -> tuple[list[str], list[list]]:
        """Every series' raw data in long form: ``series,label,x,y`` one row per point."""
        return ["series", "label", "x", "y"], [
            [s.key, s.label, xi, yi] for s in self._series.values()
            for xi, yi in zip(s.x.tolist(), s.y.tolist())]


PLACEHOLDER_POINT_SIZES = (11.0, 10.0, 9.0, 8.0)


def fit_label(label: QLabel, box: QRect, text: str) -> None:
    """Place ``text`` in the word-wrapped ``label`` inside ``box`` at the largest of
    ``PLACEHOLDER_POINT_SIZES`` whose text fits there (every word within the width, every
    line within the height). Where even the smallest does not fit (a short plot), the
    text is cut at a word and ends in " …", whole in the label's tooltip: a notice never
    spills over the axes or out of its plot."""
    f = label.font()     # a copy
    words = text.split()
    label.setText(text)
    for pt in PLACEHOLDER_POINT_SIZES:
        f.setPointSizeF(pt)
        label.setFont(f)
        widest = max((label.fontMetrics().horizontalAdvance(w) for w in words), default=0)
        if widest <= box.width() and label.heightForWidth(box.width()) <= box.height():
            label.setToolTip("")
            label.setGeometry(box)
            return
    n = len(words)
    while n > 1 and label.heightForWidth(box.width()) > box.height():
        n -= 1
        label.setText(" ".join(words[:n]) + " …")
    label.setToolTip(text)
    label.setGeometry(box)


class _Legend(pg.LegendItem):
    """A legend that stops being auto-placed once the user drags it."""

    pinned = False

    def mouseDragEvent(self, ev):
        self.pinned = True
        super().mouseDragEvent(ev)


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
