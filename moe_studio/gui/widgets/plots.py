"""Line plots for training curves: one ``CurvePlot`` per chart, series updated in place.

A series is keyed by a string. ``set_series`` keeps its two ``PlotDataItem`` objects (a
faint raw curve and a bold smoothed curve) for the life of the plot and only calls
``setData`` on them, so a live view can push a frame at 8 Hz without churning the scene.

This module holds the series and the view options (smoothing, log-y, x format, range);
the plot's other parts live beside it, one idea each: ``curve_series`` (what a series
keeps, colours), ``curve_legend`` (where the legend goes), ``curve_hover`` (the read-out),
``curve_bands`` (shaded ranges), ``plot_placeholder`` (the notice over an empty plot).
"""
from __future__ import annotations

import html
import time

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401  (registers ImageExporter / SVGExporter)
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from ..formats import fmt_step, format_duration
from ...metrics.smoothing import ema
from . import line_labels
from .. import theme
from .axes import XAxis
from .curve_bands import CurveBandsMixin
from .curve_hover import CurveHoverMixin
from .curve_legend import CurveLegendMixin
from .curve_series import ColorSpec, CurveSeries, resolve_color
from .figure import FigureWidget
from .plot_placeholder import PlaceholderMixin
# Importable from here as before the plot's parts moved out:
from .plot_placeholder import PLACEHOLDER_POINT_SIZES, fit_label  # noqa: F401
from ..theme import is_dark_palette

_RAW_ALPHA = 70          # of 255: the unsmoothed curve behind a smoothed one
_BOLD_WIDTH = 2.0
_THIN_WIDTH = 1.0        # the single curve drawn when smoothing is off (1 px strokes fast)
_ITEM_OPTS = dict(connect="finite", autoDownsample=True, downsampleMethod="peak",
                  clipToView=True)
_BAND_ALPHA = 48         # of 255: a band (e.g. a group's min-max) behind its series


class _Curve(pg.PlotDataItem):
    """A PlotDataItem whose x extent is that of all its points, not of those drawn.

    Auto-downsampling picks its factor from the view's width in points, and the points
    drawn leave out the last, partial group of that factor, so the drawn x extent, and
    with it an auto-ranged view, depended on the view itself. At some lengths and widths
    the two flipped for ever (factor 6 drops the last 5 steps, the view shrinks, factor
    5 draws them, the view grows, ...): a repaint queued before any timer each time,
    which froze a live Training view until the run ended. The x extent of all the
    points breaks the loop; the drawing is unchanged.
    """

    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # noqa: N803 - pyqtgraph's names
        bounds = super().dataBounds(ax, frac, orthoRange)
        x = self.xData
        if ax != 0 or frac < 1.0 or orthoRange is not None or bounds[0] is None \
                or x is None or not len(x) or self.opts["logMode"][0]:
            return bounds
        finite = x[np.isfinite(x)]
        if not finite.size:
            return bounds
        lo, hi = float(finite.min()), float(finite.max())
        return min(bounds[0], lo), max(bounds[1], hi)


class _TimedPlotWidget(pg.PlotWidget):
    """A PlotWidget that remembers how long its last paint took (for frame pacing)."""

    last_paint_s = 0.0

    def paintEvent(self, ev):
        t0 = time.perf_counter()
        super().paintEvent(ev)
        self.last_paint_s = time.perf_counter() - t0


class CurvePlot(CurveLegendMixin, CurveHoverMixin, CurveBandsMixin, PlaceholderMixin,
                FigureWidget):
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
        self._x_caption = (x_label, x_label)    # set_x_caption: (full, short)
        self._series: dict[str, CurveSeries] = {}
        pi = self._pi
        # the placeholder follows the axis box as the layout settles
        self._vb.sigResized.connect(lambda *_: self._place_placeholder())
        self._vb.sigResized.connect(lambda *_: self._apply_x_caption())
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
        self._init_legend()
        self._many = False          # set_many_series
        self._range_moved = False
        self._vb.sigRangeChanged.connect(self._on_range_changed)
        self._vb.sigRangeChangedManually.connect(self.userChangedRange)
        # the view's transform follows its range lazily: labels are placed once it has
        self._vb.sigTransformChanged.connect(lambda *_: self.place_line_labels())

        self._init_hover()
        self._init_key_button()
        self._init_placeholder()
        self._apply_theme()

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
                    symbol: str | None, smoothable: bool, legend_group: str | None = None) -> CurveSeries:
        smooth = _Curve(**_ITEM_OPTS)
        smooth.setZValue(500 + len(self._series))
        s = CurveSeries(key, label, color, dash, symbol, smoothable, None, smooth)
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

    def _raw(self, s: CurveSeries) -> pg.PlotDataItem:
        """The series' faint raw trace, made on first use: a series that is never
        smoothed (validation loss, or any with smoothing off) costs one item, not two,
        which a view of many series opens noticeably faster for."""
        if s.raw is None:
            # The faint raw trace is noise drawn at low alpha: anti-aliasing it costs as
            # much as the bold curve and shows nowhere.
            s.raw = _Curve(antialias=False, **_ITEM_OPTS)
            s.raw.setZValue(s.smooth.zValue() - 500)
            s.raw.setVisible(False)
            self._pi.addItem(s.raw)
            self._style_series(s)
        return s.raw

    def _shows_raw(self, s: CurveSeries) -> bool:
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
        return resolve_color(color, is_dark_palette(self.palette()), self._colors)

    def _style_series(self, s: CurveSeries) -> None:
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

    def _smoothed(self, s: CurveSeries) -> bool:
        return s.smoothable and self._smoothing > 0

    def _update_items(self, s: CurveSeries) -> None:
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

    def _sync_visibility(self, s: CurveSeries) -> None:
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
        """The quantity on the x axis ("step", "tokens"), also its caption."""
        self._x_label = text
        self.set_x_caption(text)

    def set_x_caption(self, text: str, short: str | None = None) -> None:
        """The x axis caption: ``text`` where it fits under the axis box, else ``short``
        (e.g. the quantity without the planned end, which a dashed line shows anyway);
        chosen again when the plot's width changes."""
        self._x_caption = (text, short if short is not None else text)
        self._apply_x_caption()

    def x_caption(self) -> str:
        """The caption as drawn."""
        return self._pi.getAxis("bottom").labelText

    def _apply_x_caption(self) -> None:
        full, short = self._x_caption
        axis = self._pi.getAxis("bottom")
        # the caption is centred under the axis box: it has the box's width (before the
        # first layout, the widget's less the y axis)
        room = self._vb.width() or (self.width() - self._pi.getAxis("left").width() - 16)
        shown = full
        if full != short:
            axis.label.setPlainText(full)      # measured as drawn (font, style)
            if axis.label.boundingRect().width() > room:
                shown = short
        self._pi.setLabel("bottom", shown)
        # pyqtgraph centres the caption only when the axis is resized: a caption that
        # grew ("step" -> "step · planned 2,000") ran past the plot's right edge.
        axis.resizeEvent(None)

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
    # ------------------------------------------------------------------ export
    def csv_rows(self) -> tuple[list[str], list[list]]:
        """Every series' raw data in long form: ``series,label,x,y`` one row per point."""
        return ["series", "label", "x", "y"], [
            [s.key, s.label, xi, yi] for s in self._series.values()
            for xi, yi in zip(s.x.tolist(), s.y.tolist())]
