"""Heatmaps for the routing views: one ``HeatmapPlot`` per matrix, updated in place.

``set_matrix`` hands the new array to the same ``ImageItem`` with explicit levels (never
a rebuild), relabels the category axes (token characters, expert ids) and, for small
matrices, the value written in every cell. A colour bar shows the levels: fixed (the
scale a view chose, e.g. 0..1 for probabilities, or wherever the user dragged the
bar's handles) or automatic (the data's range). Hovering shows the cell's read-out,
clicking a cell emits ``cellClicked(row, col)``, and the ⋯ menu exports PNG, SVG and
the matrix as CSV, like every ``CurvePlot``.
"""
from __future__ import annotations

import html
import math
import re
from typing import Callable, Sequence

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401  (registers ImageExporter / SVGExporter)
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QAction, QColor, QFont, QFontMetrics, QPen
from PySide6.QtWidgets import (QGraphicsRectItem, QWidget)

from ..formats import fmt_value
from . import line_labels
from .figure import FigureWidget
from .axes import LabelAxis, no_si_prefix

ANNOTATE_MAX_CELLS = 600     # write the value into every cell up to this many cells


ROW_FONT_MIN_PT = 6.5


def _sized(font: QFont, points: float) -> QFont:
    f = QFont(font)
    f.setPointSizeF(points)
    return f


class _CellTexts(pg.GraphicsObject):
    """Text centred on matrix cells, drawn at a fixed pixel size in one paint call."""

    def __init__(self):
        super().__init__()
        self._cells: list[tuple[float, float, str, QColor]] = []
        self._rect = QRectF()
        self._font = QFont()
        self._cell = (1.0, 1.0)
        self._text_w = 0

    def set_cells(self, cells, rect: QRectF, font: QFont | None = None,
                  cell: tuple[float, float] = (1.0, 1.0)) -> None:
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = QRectF(rect)
        self._cells = cells
        self._cell = cell
        if font is not None:
            self._font = font
        fm = QFontMetrics(self._font)
        self._text_w = max((fm.horizontalAdvance(t) for t in {c[2] for c in cells}), default=0)
        self.update()

    def fits(self, transform) -> bool:
        """Whether the texts fit their cells at this view scale (else none is drawn)."""
        r = transform.mapRect(QRectF(0, 0, self._cell[0], self._cell[1]))
        return (abs(r.height()) >= 0.9 * QFontMetrics(self._font).height()
                and abs(r.width()) >= self._text_w + 2)

    def cells(self):
        return list(self._cells)

    def boundingRect(self) -> QRectF:
        return QRectF(self._rect)

    def paint(self, p, *args) -> None:
        if not self._cells:
            return
        # Draw in scene units (screen pixels on screen; scaled with everything else in
        # an export), not in the cells' stretched data units.
        st = self.sceneTransform()
        if not self.fits(st):
            return
        inv, ok = st.inverted()
        if not ok:
            return
        p.save()
        p.setTransform(inv * p.transform())
        p.setFont(self._font)
        h = QFontMetrics(self._font).height()
        flags = int(Qt.AlignmentFlag.AlignCenter)
        color = None
        for x, y, text, ink in self._cells:
            pt = st.map(QPointF(x, y))
            if ink is not color:
                p.setPen(ink)
                color = ink
            p.drawText(QRectF(pt.x() - 40, pt.y() - h / 2, 80, h), flags, text)
        p.restore()


class HeatmapPlot(FigureWidget):
    """A matrix as colours, rows top to bottom, with a colour bar and category axes.

    ``set_matrix(m [rows, cols], x_labels=..., y_labels=...)``: rows are on the y axis,
    columns on the x axis. With ``x_range=(x0, x1)`` instead of ``x_labels`` the
    columns span that numeric range (an expert x step heatmap drawn against steps).
    ``value_format`` formats a value for the hover box and the cell annotations.
    """

    cellClicked = Signal(int, int)       # row, col
    autoLevelsChanged = Signal(bool)

    def __init__(self, title: str = "", x_label: str = "", y_label: str = "", *,
                 colormap: str = "viridis", fixed_levels: tuple[float, float] = (0.0, 1.0),
                 value_label: str = "", value_format: Callable[[float], str] = fmt_value,
                 annotate: bool = False, mono_x: bool = False, parent: QWidget | None = None):
        self._x_axis = LabelAxis("bottom")
        self._y_axis = LabelAxis("left")
        super().__init__(title, x_label, y_label,
                         axis_items={"bottom": self._x_axis, "left": self._y_axis}, parent=parent)
        if mono_x:
            f = QFont("DejaVu Sans Mono")
            f.setStyleHint(QFont.StyleHint.Monospace)
            f.setPointSizeF(max(7.0, self.font().pointSizeF() - 0.5))
            self._x_axis.setTickFont(f)
        for ax in (self._x_axis, self._y_axis):
            ax.setStyle(maxTickLevel=0)
        self._vb.invertY(True)
        self._vb.setMenuEnabled(True)
        self._m = np.zeros((0, 0), np.float32)
        self._x0, self._dx = 0.0, 1.0
        self._x_labels: list[str] | None = None
        self._y_labels: list[str] | None = None
        self._numeric_x = False
        self._value_format = value_format
        self._value_label = value_label
        self._hover_fn: Callable[[int, int, float], Sequence[str] | str] | None = None
        self._fixed = (float(fixed_levels[0]), float(fixed_levels[1]))
        self._default_fixed = self._fixed
        self._user_levels = False     # the user dragged the colour bar: keep their levels
        self._auto = False
        self._annotate = annotate
        self._cell_texts = _CellTexts()
        self._selected: tuple[int, int] | None = None
        self._colormap_name = colormap

        self.image = pg.ImageItem(axisOrder="row-major")
        self._pi.addItem(self.image)
        self._cell_texts.setZValue(500)
        self._pi.addItem(self._cell_texts, ignoreBounds=True)
        self.color_bar = pg.ColorBarItem(values=self._fixed, colorMap=colormap, width=12,
                                         interactive=True, rounding=1e-6,
                                         label=value_label or None, colorMapMenu=False)
        self.color_bar.setImageItem(self.image, insert_in=self._pi)
        no_si_prefix(self.color_bar.axis)
        self.color_bar.sigLevelsChangeFinished.connect(self._on_bar_dragged)
        self._cmap = self.color_bar.colorMap()
        # The selected cell: a thick outline in the text colour around a thin one in the
        # background colour, visible on any cell colour in either palette.
        self._sel_rect = QGraphicsRectItem()
        self._sel_rect.setZValue(900)
        self._sel_rect.hide()
        self._pi.addItem(self._sel_rect, ignoreBounds=True)
        self._sel_inner = QGraphicsRectItem(self._sel_rect)
        self._hover_rect = QGraphicsRectItem()
        self._hover_rect.setZValue(899)
        self._hover_rect.hide()
        self._pi.addItem(self._hover_rect, ignoreBounds=True)
        self._separators: list[pg.InfiniteLine] = []
        self._marker = pg.InfiniteLine(angle=90, movable=False)
        self._marker.setZValue(950)
        self._marker.hide()
        self._pi.addItem(self._marker, ignoreBounds=True)
        self._plot.scene().sigMouseClicked.connect(self._on_clicked)
        self._vb.sigResized.connect(self._on_view_changed)
        self._vb.sigRangeChanged.connect(self._on_view_changed)
        self._vb.sigTransformChanged.connect(lambda *_: line_labels.keep_inside(self._pi))
        # Row labels (and group names) widen the y axis when first drawn: the title,
        # elided to the width left over, must give that width back.
        self._y_axis.geometryChanged.connect(self._on_y_axis_resized)

        menu = self.menu
        menu.addSeparator()
        self.auto_action = QAction("Automatic colour levels", menu)
        self.auto_action.setCheckable(True)
        self.auto_action.toggled.connect(self.set_auto_levels)
        menu.addAction(self.auto_action)
        reset = QAction("Reset fixed levels", menu)
        reset.triggered.connect(self.reset_levels)
        menu.addAction(reset)
        self._apply_theme()

    # ------------------------------------------------------------------ data
    def set_matrix(self, m, *, x_labels: Sequence[str] | None = None,
                   y_labels: Sequence[str] | None = None,
                   x_range: tuple[float, float] | None = None,
                   fixed_levels: tuple[float, float] | None = None) -> None:
        """Show matrix ``m`` [rows, cols] (NaN cells are blank) in the same image item.

        ``x_labels`` / ``y_labels``: one per column / row (None keeps numbers);
        ``x_range``: the numeric x span of the columns instead of labels.
        ``fixed_levels``: change the fixed colour scale (kept unless the user dragged
        the colour bar). The view range resets when the shape changes.
        """
        a = np.asarray(m, dtype=np.float32)
        if a.ndim != 2:
            raise ValueError(f"a heatmap needs a 2-d matrix, got shape {a.shape}")
        new_rows = a.shape[0] != self._m.shape[0]
        new_cols = a.shape[1] != self._m.shape[1]
        reshape = new_rows or new_cols
        self._m = a
        rows, cols = a.shape
        if x_range is not None and cols:
            x0, x1 = float(x_range[0]), float(x_range[1])
            self._dx = (x1 - x0) / max(cols - 1, 1) if cols > 1 else 1.0
            self._x0 = x0 - self._dx / 2
            self._numeric_x = True
            self._x_axis.set_labels(None)
            self._x_labels = None
        else:
            new_cols |= self._numeric_x
            reshape |= self._numeric_x
            self._x0, self._dx, self._numeric_x = 0.0, 1.0, False
            self._x_labels = list(x_labels) if x_labels is not None else [str(i) for i in range(cols)]
            self._x_axis.set_labels(self._x_labels)
        self._y_labels = list(y_labels) if y_labels is not None else [str(i) for i in range(rows)]
        if self._y_axis.groups() is None or new_rows:
            # Groups describe the old rows: a new shape drops them until set again.
            self._y_axis.set_groups(None)
            self._y_axis.set_labels(self._y_labels)
        if fixed_levels is not None:
            self._default_fixed = (float(fixed_levels[0]), float(fixed_levels[1]))
            if not self._user_levels:
                self._fixed = self._default_fixed
        levels = self.current_levels()
        self.image.setImage(a, levels=levels, autoLevels=False)
        self.image.setRect(QRectF(self._x0, 0.0, self._dx * max(cols, 1), float(max(rows, 1))))
        if self.color_bar.levels() != levels:
            self.color_bar.setLevels(levels, update_items=False)
            self._apply_bar_ticks()
        # The image's first picture keeps the levels the bar it is linked to had then
        # (new fixed levels showed only from the second matrix on): set them again.
        if tuple(float(v) for v in self.image.getLevels()) != tuple(levels):
            self.image.setLevels(levels)
        if reshape:
            # Only the axis whose size changed resets: switching layers keeps the token
            # window the user scrolled to.
            x1 = self._x0 + self._dx * max(cols, 1)
            self._vb.setLimits(xMin=self._x0, xMax=x1, yMin=0, yMax=max(rows, 1))
            if new_cols:
                self._vb.setXRange(self._x0, x1, padding=0)
            if new_rows:
                self._vb.setYRange(0, max(rows, 1), padding=0)
        self._update_annotations()
        if self._title:
            self._apply_title()     # the row labels may have changed the room for it
        if self._selected is not None:
            r, c = self._selected
            if r >= rows or c >= cols:
                self.clear_selection()

    def _title_reserve(self) -> float:
        return max(60.0, self.color_bar.geometry().width() + 8.0)

    def _on_y_axis_resized(self) -> None:
        w = self._y_axis.width()
        if self._title and w != getattr(self, "_y_axis_width", None):
            self._y_axis_width = w
            self._apply_title()

    def matrix(self) -> np.ndarray:
        """The matrix shown, float32 [rows, cols]."""
        return self._m

    def x_labels(self) -> list[str] | None:
        return self._x_labels

    def y_labels(self) -> list[str] | None:
        return self._y_labels

    def set_hover_formatter(self, fn: Callable[[int, int, float], Sequence[str] | str] | None) -> None:
        """``fn(row, col, value)`` -> read-out lines (HTML) for the hover box."""
        self._hover_fn = fn

    def set_value_format(self, fn: Callable[[float], str]) -> None:
        self._value_format = fn
        self._update_annotations()

    def set_annotate(self, on: bool) -> None:
        """Write the values into the cells (matrices up to ANNOTATE_MAX_CELLS cells)."""
        if bool(on) != self._annotate:
            self._annotate = bool(on)
            self._update_annotations()

    def set_row_groups(self, groups: Sequence[tuple[str, int]] | None,
                       row_labels: Sequence[str] | None = None) -> None:
        """Rows in named groups, ``[(name, n_rows), ...]`` in row order (a layer's
        experts, a block's modules; "" for rows in no group), drawn as the group's name
        beside a bracket over its rows. ``row_labels``: the short label drawn on each row
        inside its group (``e3`` under ``L2``); the full ``y_labels`` stay for the hover,
        the CSV and ``y_labels()``. None: no groups, the full labels again.

        Groups of one row each (one domain under every layer) draw no names: one row is
        too short for a name beside it, and the short labels alone would read "prose"
        under every layer. Each row carries its full label instead (``L2 prose``), packed
        as tightly as grouped rows are."""
        if groups and all(int(g[1]) <= 1 for g in groups if g[0]):
            groups, row_labels = [("", int(g[1])) for g in groups], None
        if groups:
            n = sum(int(g[1]) for g in groups)
            if n != self._m.shape[0]:
                raise ValueError(f"row groups cover {n} rows, the matrix has {self._m.shape[0]}")
            if row_labels is not None and len(row_labels) != n:
                raise ValueError(f"{len(row_labels)} row labels for {n} rows")
            self._y_axis.set_labels(list(row_labels) if row_labels is not None else self._y_labels)
            sizes = sorted({int(g[1]) for g in groups if g[0]})
            self.set_row_group(sizes[0] if len(sizes) == 1 else None)
            self._y_axis.set_groups(groups)
        else:
            self._y_axis.set_groups(None)
            self._y_axis.set_labels(self._y_labels)
        self._row_font_pt = None
        self._fit_row_labels()

    def row_groups(self) -> list[tuple[str, int, int]] | None:
        """``[(name, first row, stop row)]`` as drawn, or None."""
        return self._y_axis.groups()

    def set_row_group(self, size: int | None) -> None:
        """Rows come in groups of ``size`` (experts of one layer): thinned row labels keep
        to strides that start every group with a label."""
        if not size or size <= 1:
            self._y_axis.set_strides(None)
            return
        divisors = [d for d in range(1, size + 1) if size % d == 0]
        self._y_axis.set_strides(divisors + [size * m for m in (2, 4, 8, 16, 32, 64)])

    def set_view_columns(self, c0: float, c1: float) -> None:
        """Show columns c0..c1 (a window of a long token axis; the rest pans in)."""
        self._vb.setXRange(self._x0 + c0 * self._dx, self._x0 + c1 * self._dx, padding=0)

    def view_columns(self) -> tuple[float, float]:
        (x0, x1), _ = self._vb.viewRange()
        return (x0 - self._x0) / self._dx, (x1 - self._x0) / self._dx

    def set_mouse_pan(self, x: bool, y: bool) -> None:
        self._vb.setMouseEnabled(x=x, y=y)

    def set_separators(self, rows: Sequence[float] = (), cols: Sequence[float] = ()) -> None:
        """Lines between groups of rows / columns (e.g. between layers)."""
        want = [(0, float(r)) for r in rows] + [(90, float(c)) for c in cols]
        while len(self._separators) < len(want):
            line = pg.InfiniteLine(angle=0, movable=False)
            line.setZValue(800)
            self._pi.addItem(line, ignoreBounds=True)
            self._separators.append(line)
        pen = pg.mkPen(QColor(self._colors["background"]), width=2)
        for line, (angle, pos) in zip(self._separators, want):
            line.setAngle(angle)
            line.setPos(self._x0 + pos * self._dx if angle == 90 else pos)
            line.setPen(pen)
            line.show()
        for line in self._separators[len(want):]:
            line.hide()

    def set_marker(self, x: float | None) -> None:
        """A vertical line at data x (the selected step of a heatmap over steps)."""
        if x is None:
            self._marker.hide()
        else:
            self._marker.setPos(float(x))
            self._marker.show()

    # ------------------------------------------------------------------ levels
    def current_levels(self) -> tuple[float, float]:
        if not self._auto:
            return self._fixed
        finite = self._m[np.isfinite(self._m)]
        if finite.size == 0:
            return self._fixed
        lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            hi = lo + (abs(lo) * 1e-3 or 1e-6)
        return lo, hi

    def levels(self) -> tuple[float, float]:
        """The colour levels in use (low, high)."""
        return tuple(self.image.getLevels()) if self.image.getLevels() is not None else self._fixed

    def auto_levels(self) -> bool:
        return self._auto

    def set_auto_levels(self, on: bool) -> None:
        """Automatic levels (the data's min..max) or the fixed ones."""
        on = bool(on)
        if self.auto_action.isChecked() != on:
            self.auto_action.setChecked(on)   # re-enters through toggled
            return
        if on == self._auto:
            return
        self._auto = on
        self._apply_levels()
        self.autoLevelsChanged.emit(on)

    def set_fixed_levels(self, lo: float, hi: float) -> None:
        """Fix the colour scale at lo..hi (and turn automatic levels off)."""
        self._fixed = (float(lo), float(hi))
        self._user_levels = True
        self.set_auto_levels(False)
        self._apply_levels()

    def reset_levels(self) -> None:
        """Forget levels the user dragged: back to the view's own fixed scale."""
        self._user_levels = False
        self._fixed = self._default_fixed
        self._apply_levels()

    def set_default_levels(self, lo: float, hi: float) -> None:
        """The view's own fixed scale (what "Reset fixed levels" returns to)."""
        self._default_fixed = (float(lo), float(hi))
        if not self._user_levels:
            self._fixed = self._default_fixed
            self._apply_levels()

    def _apply_levels(self) -> None:
        levels = self.current_levels()
        self.image.setLevels(levels)
        self.color_bar.setLevels(levels, update_items=False)
        self._apply_bar_ticks()
        self._update_annotations()

    def set_bar_ticks(self, ticks: Sequence[tuple[float, str]] | None) -> None:
        """Named colour-bar ticks (e.g. 0 %, the uniform share, twice it) used while the
        view's own fixed levels are shown; other levels get ordinary numbered ticks."""
        self._bar_ticks = list(ticks) if ticks else None
        self._apply_bar_ticks()

    def _apply_bar_ticks(self) -> None:
        ticks = getattr(self, "_bar_ticks", None)
        use = ticks is not None and not self._auto and self._fixed == self._default_fixed
        want = [ticks] if use else None
        if want != getattr(self, "_bar_ticks_set", "unset"):   # setTicks redraws the axis
            self._bar_ticks_set = want
            self.color_bar.axis.setTicks(want)

    def _on_bar_dragged(self, *_) -> None:
        lo, hi = self.color_bar.levels()
        self._fixed = (float(lo), float(hi))
        self._user_levels = True
        if self._auto:
            self.set_auto_levels(False)
        self._apply_levels()

    def set_colormap(self, name: str) -> None:
        if name != self._colormap_name:
            self._colormap_name = name
            self.color_bar.setColorMap(name)
            self._cmap = self.color_bar.colorMap()
            self._update_annotations()

    def _on_view_changed(self, *_) -> None:
        if self._annotate:
            self._update_annotations()
        self._fit_row_labels()
        line_labels.keep_inside(self._pi)     # zone edges ("max 6.55e+04") stay readable

    def _fit_row_labels(self) -> None:
        """Row labels in a smaller font (down to ROW_FONT_MIN_PT) where that lets every
        row keep its label, rather than thinning them to every 2nd row (an unlabelled
        row between two labelled ones reads as part of the one above)."""
        if self._y_labels is None or self._vb.height() <= 0:
            return
        px = self._vb.viewPixelSize()[1]
        if px <= 0:
            return
        row_px = 1.0 / px
        base = self.font().pointSizeF() if self.font().pointSizeF() > 0 else 9.0
        size = base
        pitch = self._y_axis.row_pitch
        while size > ROW_FONT_MIN_PT and pitch(QFontMetrics(_sized(self.font(), size))) > row_px:
            size -= 0.5
        if pitch(QFontMetrics(_sized(self.font(), size))) > row_px and \
                self._y_axis.groups() is None:
            size = base                 # even the smallest does not fit: thin at full size
        # (grouped rows stay small: the group names carry the rest, and more rows keep
        # their own label)
        if size != getattr(self, "_row_font_pt", base):
            self._row_font_pt = size
            self._y_axis.setTickFont(_sized(self.font(), size))

    def row_label_point_size(self) -> float:
        """The point size the row labels are drawn in now."""
        f = self._y_axis.style["tickFont"]
        return f.pointSizeF() if f is not None else self.font().pointSizeF()

    # ------------------------------------------------------------------ annotations
    def _update_annotations(self, restyle: bool = False) -> None:
        """Write each cell's value into it (small matrices only), dark text on light
        cells and light text on dark ones. One item paints every text, so a scrub frame
        costs one pass of ``drawText`` rather than hundreds of scene items."""
        rows, cols = self._m.shape
        n = rows * cols if self._annotate and rows * cols <= ANNOTATE_MAX_CELLS else 0
        if n and self._vb.height() > 0:
            # Cells too small for text now: skip the work (a resize or zoom redoes it).
            px = self._vb.viewPixelSize()
            if px[1] > 0 and 1.0 / px[1] < 0.9 * QFontMetrics(self.font()).height() - 2:
                n = 0
        if not n:
            self._cell_texts.set_cells([], QRectF())
            return
        flat = self._m.reshape(-1)
        finite = np.isfinite(flat)
        at = np.flatnonzero(finite).tolist()
        texts = [self._value_format(float(flat[i])) for i in at]
        f = self.font()
        f.setPointSizeF(max(7.0, f.pointSizeF() - 1.5))
        # Text wider than its cell would run over its neighbours and the row labels
        # ("m0" and "0.7321" read as "=0.7321"): none then, the hover still reads it.
        px = self._vb.viewPixelSize()
        metrics = QFontMetrics(f)
        if texts and px[0] > 0 and max(map(metrics.horizontalAdvance, texts)) \
                > self._dx / px[0] - 2:
            self._cell_texts.set_cells([], QRectF())
            return
        lo, hi = self.current_levels()
        span = hi - lo if hi > lo else 1.0
        norm = np.clip((np.where(finite, flat, lo) - lo) / span, 0.0, 1.0)
        if self._cmap is not None:
            rgb = self._cmap.map(norm, mode="float")[:, :3]
            dark_text = (rgb @ np.array([0.2126, 0.7152, 0.0722])) > 0.55
        else:
            dark_text = np.ones(n, bool)
        ink_dark, ink_light = QColor("#111111"), QColor("#f5f5f5")
        cells = []
        for i, text in zip(at, texts):
            r, c = divmod(i, cols)
            cells.append((self._x0 + (c + 0.5) * self._dx, r + 0.5, text,
                          ink_dark if dark_text[i] else ink_light))
        self._cell_texts.set_cells(cells, QRectF(self._x0, 0, self._dx * cols, rows), f,
                                   (self._dx, 1.0))

    def annotation_texts(self) -> list[str]:
        """The cell texts drawn, row by row (empty cells left out)."""
        return [c[2] for c in self._cell_texts.cells()]

    # ------------------------------------------------------------------ cells
    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        rows, cols = self._m.shape
        c = int(math.floor((x - self._x0) / self._dx))
        r = int(math.floor(y))
        if 0 <= r < rows and 0 <= c < cols:
            return r, c
        return None

    def cell_center(self, row: int, col: int) -> tuple[float, float]:
        return self._x0 + (col + 0.5) * self._dx, row + 0.5

    def hover_at(self, x: float, y: float) -> str:
        cell = self.cell_at(x, y)
        if cell is None:
            self._hover_rect.hide()
            return ""
        return self.hover_cell(*cell, pos=(x, y))

    def hover_cell(self, row: int, col: int, pos: tuple[float, float] | None = None) -> str:
        """Show the read-out of one cell (the mouse calls this); returns its plain text."""
        v = float(self._m[row, col])
        if self._hover_fn is not None:
            lines = self._hover_fn(row, col, v)
            lines = [lines] if isinstance(lines, str) else list(lines)
        else:
            xl = (self._x_labels[col] if self._x_labels else fmt_value(self._x0 + (col + 0.5) * self._dx))
            yl = self._y_labels[row] if self._y_labels else str(row)
            lines = [f"<b>{html.escape(yl)} · {html.escape(xl)}</b>",
                     f"{html.escape(self._value_label or 'value')}: {self._value_format(v)}"]
        x, y = pos if pos is not None else self.cell_center(row, col)
        self._hover_rect.setRect(QRectF(self._x0 + col * self._dx, row, self._dx, 1))
        self._hover_rect.show()
        self._show_hover(lines, x, y)
        plain = re.sub(r"<[^>]+>", "", "\n".join(lines))
        return html.unescape(plain)

    def hide_hover(self) -> None:
        super().hide_hover()
        self._hover_rect.hide()

    def _on_clicked(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or ev.double():
            return
        if not self._vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = self._vb.mapSceneToView(ev.scenePos())
        cell = self.cell_at(p.x(), p.y())
        if cell is not None:
            self.click_cell(*cell)

    def click_cell(self, row: int, col: int) -> None:
        """Select a cell and emit ``cellClicked`` (what a mouse click does)."""
        self._selected = (row, col)
        r = QRectF(self._x0 + col * self._dx, row, self._dx, 1)
        self._sel_rect.setRect(r)
        self._sel_inner.setRect(r)
        self._sel_rect.show()
        self.cellClicked.emit(row, col)

    def selected_cell(self) -> tuple[int, int] | None:
        return self._selected

    def clear_selection(self) -> None:
        self._selected = None
        self._sel_rect.hide()

    # ------------------------------------------------------------------ export / theme
    def csv_rows(self) -> tuple[list[str], list[list]]:
        """The matrix in wide form: a header of column labels, one row per matrix row."""
        rows, cols = self._m.shape
        if self._numeric_x:
            xl = [fmt_value(self._x0 + (c + 0.5) * self._dx) for c in range(cols)]
        else:
            xl = self._x_labels or [str(c) for c in range(cols)]
        yl = self._y_labels or [str(r) for r in range(rows)]
        corner = f"{self._pi.getAxis('left').labelText or 'row'} \\ {self._pi.getAxis('bottom').labelText or 'column'}"
        out = [[yl[r]] + [float(v) if math.isfinite(v) else "" for v in self._m[r].tolist()]
               for r in range(rows)]
        return [corner] + list(xl), out

    def _theme_changed(self) -> None:
        c = self._colors
        sel = QPen(QColor(c["foreground"]), 3.5)
        sel.setCosmetic(True)
        self._sel_rect.setPen(sel)
        inner = QPen(QColor(c["background"]), 1)
        inner.setCosmetic(True)
        self._sel_inner.setPen(inner)
        hov = QPen(QColor(c["crosshair"]), 1)
        hov.setCosmetic(True)
        self._hover_rect.setPen(hov)
        self._marker.setPen(pg.mkPen(QColor(c["foreground"]), width=1.5,
                                     style=Qt.PenStyle.DashLine))
        fg = QColor(c["foreground"])
        for name in ("right", "bottom", "left", "top"):
            ax = self.color_bar.getAxis(name)
            ax.setPen(pg.mkPen(fg))
            ax.setTextPen(pg.mkPen(fg))
        self.set_separators([ln.value() for ln in self._separators if ln.isVisible() and ln.angle == 0],
                            [(ln.value() - self._x0) / self._dx for ln in self._separators
                             if ln.isVisible() and ln.angle == 90])
        self._update_annotations(restyle=True)
