"""What a plot has drawn, read back from pyqtgraph's own items (not from the widgets'
bookkeeping), for tests that check geometry: axis tick labels, legend box, curve points,
all in scene coordinates."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF
from PySide6.QtGui import QPainter, QPicture


def axis_texts(axis) -> list[tuple[QRectF, str]]:
    """The tick labels a pyqtgraph axis draws now, with their rectangles in the axis'
    own coordinates (what its next paint would draw)."""
    pic = QPicture()
    p = QPainter(pic)
    try:
        if axis.style["tickFont"] is not None:
            p.setFont(axis.style["tickFont"])
        specs = axis.generateDrawSpecs(p)
    finally:
        p.end()
    return [] if specs is None else [(QRectF(r), t) for r, _, t in specs[2]]


def legend_rect(plot) -> QRectF | None:
    """A CurvePlot's legend box as drawn (scene coordinates), or None when none is seen
    (hidden, fully transparent, or empty)."""
    lg = plot.plot_item.legend
    if lg is None or not lg.isVisible() or lg.effectiveOpacity() == 0 or not lg.items:
        return None
    return lg.mapRectToScene(lg.boundingRect())


def scene_points(plot, per_segment: int = 8) -> np.ndarray:
    """Every visible curve's points of a CurvePlot in scene coordinates ([n, 2]), inside
    its axis box, with ``per_segment`` points along each segment of a short series
    (sparse evaluation markers are joined by drawn lines)."""
    vb = plot.plot_item.getViewBox()
    t = vb.childGroup.sceneTransform()
    out = []
    for key in plot.series_keys():
        item = plot.curve(key)
        if not item.isVisible():
            continue
        x, y = item.getData()
        if x is None or not len(x):
            continue
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        ok = np.isfinite(x) & np.isfinite(y)
        idx = np.flatnonzero(ok)
        xs, ys = [x[ok]], [y[ok]]
        if len(x) <= 2000:
            f = np.linspace(0, 1, per_segment + 1)
            for a, b in zip(idx[:-1], idx[1:]):
                if b == a + 1:        # a gap (NaN) is drawn as one: connect="finite"
                    xs.append(x[a] + f * (x[b] - x[a]))
                    ys.append(y[a] + f * (y[b] - y[a]))
        x, y = np.concatenate(xs), np.concatenate(ys)
        sx = t.m11() * x + t.m21() * y + t.dx()
        sy = t.m12() * x + t.m22() * y + t.dy()
        out.append(np.stack([sx, sy], axis=1))
    if not out:
        return np.zeros((0, 2))
    pts = np.concatenate(out)
    box = vb.sceneBoundingRect()
    inside = ((pts[:, 0] >= box.left()) & (pts[:, 0] <= box.right())
              & (pts[:, 1] >= box.top()) & (pts[:, 1] <= box.bottom()))
    return pts[inside]


def points_under(rect: QRectF, pts: np.ndarray, inset: float = 1.0) -> int:
    """How many of ``pts`` ([n, 2], scene) lie inside ``rect`` shrunk by ``inset``."""
    r = rect.adjusted(inset, inset, -inset, -inset)
    return int(np.count_nonzero((pts[:, 0] > r.left()) & (pts[:, 0] < r.right())
                                & (pts[:, 1] > r.top()) & (pts[:, 1] < r.bottom())))
