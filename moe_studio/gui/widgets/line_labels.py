"""Labels of reference lines (fp16 max, uniform 1/E, the format's zone edges) kept
inside their plot's axis box.

A label is placed by the view on one side of its line (pyqtgraph's ``InfLineLabel``
anchors); near an edge of the view that side runs out of the box and the label is cut
off, which reads as a different number. ``keep_inside`` tries the label's own side
first, then the other side, then the other end, and keeps the first that fits clear of
the labels placed before it and of the plot's legend; a label that fits nowhere is
hidden until its plot has room for it. A line whose other side holds the data (a
bound no curve can cross: entropy <= ln E) keeps its label on its side (``hold_side``).
"""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor


class ReferenceLine(pg.InfiniteLine):
    """A horizontal reference line whose label sits on the side of the line no data can
    reach (entropy <= ln E above it, top-1 probability >= 1/E below it, a load-balancing
    loss >= its balanced value below it: ``hold_side``), and whose autorange bounds keep
    room there for the label (``pixelPadding``, which pyqtgraph's ViewBox adds to an
    item's bounds in pixels): the label never covers a curve and is never pushed over one
    for want of room."""

    def pixelPadding(self) -> float:  # noqa: N802 - pyqtgraph's name
        lab = self.label
        if not self.isVisible() or not lab.toPlainText():
            return 0.0
        # the label's height, with a margin for the padding added after this estimate
        return 1.3 * lab.boundingRect().height() + 4.0


def line_labels(plot_item: pg.PlotItem) -> list[pg.InfLineLabel]:
    """The visible, non-empty labels of the reference lines in ``plot_item``."""
    out = []
    for item in plot_item.items:
        label = getattr(item, "label", None)
        if isinstance(item, pg.InfiniteLine) and isinstance(label, pg.InfLineLabel) \
                and item.isVisible() and label.isVisible() and label.toPlainText():
            out.append(label)
    return out


def hold_side(line: pg.InfiniteLine) -> None:
    """Keep ``line``'s label on the side of the line its anchors give (only its end
    and horizontal alignment move): the other side is where the data are."""
    line.label._keep_side = True


def _legend_rect(plot_item: pg.PlotItem) -> QRectF | None:
    lg = plot_item.legend
    if lg is None or not lg.isVisible() or lg.effectiveOpacity() == 0 or not lg.items:
        return None
    return lg.mapRectToScene(lg.boundingRect())


def _box(plot_item: pg.PlotItem) -> QRectF:
    return plot_item.getViewBox().sceneBoundingRect().adjusted(-0.5, -0.5, 0.5, 0.5)


def keep_inside(plot_item: pg.PlotItem, backing: tuple | None = None) -> None:
    """Move each reference label to the first placement that lies inside the axis box
    (its own, its side flipped, its end flipped, both) and over no label placed before
    it (two lines close together: "fp8 e5m2 max" and "fp8 e4m3 max") nor the legend.
    ``backing``: an RGBA fill for labels that have none (readable over curves), drawn
    above the data."""
    box = _box(plot_item)
    if box.width() <= 1 or box.height() <= 1:
        return
    # scene rects the next label avoids: the legend, the labels placed so far
    legend = _legend_rect(plot_item)
    placed: list = [legend] if legend is not None else []
    view_range = plot_item.getViewBox().viewRange()
    for label in _placeable(plot_item):
        if _out_of_view(label.line, view_range):
            # Nowhere to put it (a running run's "planned end" far right of its data):
            # hidden at once, not after trying every placement on every range change.
            if label.isVisible():
                label.setVisible(False)
            label._hidden_by_keeper = True
            continue
        # Called from the view's transform signal, before pyqtgraph has moved the line
        # for the new view: drop its cached geometry so the label is placed for the view
        # as it is now, not as it was.
        label.line.viewTransformChanged()
        orig = getattr(label, "_orig_anchors", None)
        if orig is None:
            orig = label._orig_anchors = [tuple(a) for a in label.anchors]
            if backing is not None:
                if label.fill is None or label.fill.style() == Qt.BrushStyle.NoBrush:
                    label._themed_fill = True      # re-coloured with the theme
                    label.fill = pg.mkBrush(QColor(*backing))
                if label.line.zValue() < 900:
                    label.line.setZValue(900)      # over the curves, under the hover box
        pos = getattr(label, "_orig_pos", None)
        if pos is None:
            pos = label._orig_pos = float(label.orthoPos)
        flips = [orig,
                 [(a[0], 1 - a[1]) for a in orig],
                 [(1 - a[0], a[1]) for a in orig],
                 [(1 - a[0], 1 - a[1]) for a in orig]]
        if getattr(label, "_keep_side", False):
            flips = [flips[0], flips[2]]
        # its own end of the line first, then the other end (a crowd of close lines:
        # fp16, e5m2 and e4m3 maxima in a short plot)
        tries = [(pos, f) for f in flips] + [(1.0 - pos, f) for f in flips[2:] + flips[:2]]
        if getattr(label, "_hidden_by_keeper", False):
            label.setVisible(True)    # the box may have grown: try again
            label._hidden_by_keeper = False
        inside = None   # the first placement inside the box, if none is also clear
        for at, anchors in tries:
            label.orthoPos = at
            label.anchors = list(anchors)
            label.updatePosition()
            label.updateTransform(force=True)   # its size as drawn, not as last painted
            r = label.mapRectToScene(label.boundingRect())
            if box.contains(r):
                if not any(r.intersects(p) for p in placed):
                    break                       # inside, and over no label placed before
                inside = inside or (at, anchors)
        else:
            if inside is not None:   # two lines too close for both labels clear: inside still
                label.orthoPos, label.anchors = inside[0], list(inside[1])
                label.updatePosition()
                label.updateTransform(force=True)
                placed.append(label.mapRectToScene(label.boundingRect()))
                continue
            # Fits nowhere (a plot shorter than the label): a cut label reads as another
            # number, so none is shown until the plot has room again.
            label.orthoPos, label.anchors = pos, list(orig)
            label.updatePosition()
            label.setVisible(False)
            label._hidden_by_keeper = True
            continue
        placed.append(label.mapRectToScene(label.boundingRect()))


def _out_of_view(line: pg.InfiniteLine, view_range) -> bool:
    """A vertical or horizontal line whose position lies outside the view."""
    angle = line.angle % 180
    if angle not in (0, 90):
        return False
    lo, hi = view_range[1] if angle == 0 else view_range[0]
    at = line.value()
    return not lo <= at <= hi


def _placeable(plot_item: pg.PlotItem) -> list[pg.InfLineLabel]:
    """The labels keep_inside places: the visible ones and those it hid itself."""
    out = []
    for item in plot_item.items:
        label = getattr(item, "label", None)
        if isinstance(item, pg.InfiniteLine) and isinstance(label, pg.InfLineLabel) \
                and item.isVisible() and label.toPlainText() \
                and (label.isVisible() or getattr(label, "_hidden_by_keeper", False)):
            out.append(label)
    return out


def retheme(plot_item: pg.PlotItem, backing: tuple) -> None:
    """New backing colour for the labels ``keep_inside`` gave one."""
    for label in line_labels(plot_item):
        if getattr(label, "_themed_fill", False):
            label.fill = pg.mkBrush(QColor(*backing))
            label.update()


def clipped(plot_item: pg.PlotItem) -> list[str]:
    """The texts of reference labels that stick out of the axis box now."""
    box = _box(plot_item)
    out = []
    for label in line_labels(plot_item):
        r = label.mapRectToScene(label.boundingRect())
        if box.intersects(r) and not box.contains(r):
            out.append(label.toPlainText())
    return out
