"""CurvePlot legends that never cover data, value axes that read (no SI factor, log
scales with three labels), reference-line labels kept inside the plot, and heatmap rows
grouped under their layer. Checked against what pyqtgraph draws (``drawn``)."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QMenu  # noqa: E402

from moe_studio.gui.formats import format_small, log_label  # noqa: E402
from moe_studio.gui.widgets.axes import log_ticks  # noqa: E402
from moe_studio.gui.widgets.heatmap import HeatmapPlot  # noqa: E402
from moe_studio.gui.widgets.plots import CurvePlot  # noqa: E402

from drawn import axis_texts, legend_rect, points_under, scene_points  # noqa: E402


def _shown_plot(qtbot, size=(420, 260), title="t", **kw) -> CurvePlot:
    p = CurvePlot(title, **kw)
    qtbot.addWidget(p)
    p.resize(*size)
    p.show()
    qtbot.waitExposed(p)
    return p


def _fill_every_corner(p: CurvePlot, n: int, label=lambda i: f"series {i}", **kw) -> None:
    """Curves that sweep the whole axis box: no corner is free of data."""
    x = np.linspace(0, 1, 400)
    for i in range(n):
        p.set_series(f"s{i}", x, np.sin(2 * np.pi * (2 * x + i / n)), label=label(i), **kw)
    p.sync_range()


def _label_values(axis) -> list[float]:
    out = []
    for _, t in axis_texts(axis):
        t = t.replace("·10", "e").replace("10", "1e", 1) if "·" in t or t.startswith("10⁻") \
            or (t.startswith("10") and any(c in t for c in "⁰¹²³⁴⁵⁶⁷⁸⁹")) else t
        t = t.translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))
        out.append(float(t))
    return out


# ---------------------------------------------------------------------------- legends
def test_legend_with_every_corner_covered_sits_beside_the_curves(qtbot):
    p = _shown_plot(qtbot, size=(520, 300))
    _fill_every_corner(p, 4)
    qtbot.wait(20)
    rect = legend_rect(p)
    assert rect is not None, "four curves need a key"
    assert points_under(rect, scene_points(p)) == 0
    box = p.plot_item.getViewBox().sceneBoundingRect()
    assert rect.left() >= box.right() - 1          # beside the axis box, not on it
    shown = p.plot_widget.mapFromScene(rect).boundingRect()
    assert shown.right() <= p.plot_widget.width() and shown.bottom() <= p.plot_widget.height()
    # Data that leaves a corner free: back inside, in that corner.
    x = np.linspace(0, 1, 400)
    for i in range(4):
        p.set_series(f"s{i}", x, x * (1 + 0.1 * i))          # rises to the top right
    p.sync_range()
    qtbot.wait(20)
    rect = legend_rect(p)
    assert box.intersects(rect) and points_under(rect, scene_points(p)) == 0
    assert not p.legend_outside()


def test_a_legend_too_wide_to_sit_beside_a_narrow_plot_folds_into_the_key_button(qtbot):
    p = _shown_plot(qtbot, size=(300, 220))
    _fill_every_corner(p, 5, label=lambda i: f"blocks.{i}.attn.out_proj activations")
    qtbot.wait(20)
    assert legend_rect(p) is None                   # no box over (or beside) the curves
    vb = p.plot_item.getViewBox()
    assert vb.sceneBoundingRect().width() > 0.6 * p.width()
    key = p.findChild(type(p._menu_button), "legendKeyButton")
    assert key.isVisible() and key.text() == "key"
    assert p.title() == "t"
    # The key lists every series; choosing one hides it, as a legend click would.
    seen = {}

    def choose_first():
        menu = key.findChild(QMenu)
        seen["entries"] = [a.text() for a in menu.actions()]
        qtbot.keyClick(menu, Qt.Key.Key_Down)
        qtbot.keyClick(menu, Qt.Key.Key_Return)
    QTimer.singleShot(100, choose_first)
    qtbot.mouseClick(key, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "entries" in seen, timeout=3000)
    qtbot.waitUntil(lambda: not p.is_series_visible("s0"), timeout=3000)
    assert seen["entries"] == [f"blocks.{i}.attn.out_proj activations" for i in range(5)]
    assert all(p.is_series_visible(f"s{i}") for i in range(1, 5))
    for i in range(1, 5):                 # one curve left: no key, no button
        p.remove_series(f"s{i}")
    qtbot.wait(20)
    assert not key.isVisible() and legend_rect(p) is None and not p.legend_outside()


def test_members_share_one_legend_entry_that_shows_and_hides_them_all(qtbot):
    p = _shown_plot(qtbot)
    x = np.arange(10.0)
    for m in range(4):
        p.set_series(f"m{m}", x, x + m, label=f"member {m}", color=m,
                     legend_group="members 0–3")
    p.set_series("ens", x, x - 1, label="ensemble", color="ensemble")
    legend = p.plot_item.legend
    assert [lb.text for _, lb in legend.items] == ["members 0–3", "ensemble"]
    # What a click on the legend sample does: toggle the item, then sigSampleClicked.
    first = p.curve("m0")
    first.setVisible(False)
    legend.sigSampleClicked.emit(first)
    assert not any(p.is_series_visible(f"m{m}") for m in range(4))
    assert p.is_series_visible("ens")
    assert "member 2:" not in p.hover_at(5.0)          # the read-out still names members
    first.setVisible(True)
    legend.sigSampleClicked.emit(first)
    assert "member 2:" in p.hover_at(5.0)
    p.remove_series("m0")                              # the next member takes the key
    assert [lb.text for _, lb in legend.items] == ["ensemble", "members 0–3"]


# ---------------------------------------------------------------------------- axes
def test_small_values_are_written_out_never_rescaled(qtbot):
    p = _shown_plot(qtbot, y_label="probability")
    x = np.linspace(0, 1, 50)
    y = np.linspace(1e-4, 7e-4, 50)
    p.set_series("a", x, y)
    p.sync_range()
    qtbot.wait(20)
    axis = p.plot_item.getAxis("left")
    assert "(x" not in axis.labelString() and "probability" in axis.labelString()
    values = _label_values(axis)
    assert len(values) >= 3
    lo, hi = p.plot_item.getViewBox().viewRange()[1]
    assert all(lo <= v <= hi for v in values), (values, lo, hi)   # the data's own units
    assert format_small(0.0004, 0.0001) == "4e-4"
    assert format_small(0.25, 0.05) == "0.25"


@pytest.mark.parametrize("lo,hi,height", [(1.5, 4.0, 80), (2.0, 2.6, 150), (0.5, 0.52, 100),
                                          (1e-3, 1e5, 120), (1.3, 5.5, 50)])
def test_a_log_axis_labels_three_values_without_overlap(qtbot, lo, hi, height):
    p = _shown_plot(qtbot, size=(300, height + 70))
    x = np.linspace(0, 1, 50)
    p.set_series("a", x, np.geomspace(lo, hi, 50))
    p.set_log_y(True)
    p.sync_range()
    qtbot.wait(20)
    axis = p.plot_item.getAxis("left")
    texts = [(r, t) for r, t in axis_texts(axis) if t]
    assert len(texts) >= 3, [t for _, t in texts]
    rects = sorted((r for r, _ in texts), key=lambda r: r.top())
    assert all(a.bottom() <= b.top() + 0.5 for a, b in zip(rects, rects[1:]))
    # each label names the value at its tick (read back through the view's mapping)
    vb = p.plot_item.getViewBox()
    for r, t in texts:
        y = vb.mapSceneToView(axis.mapToScene(QPointF(0, r.center().y()))).y()
        shown = _label_values_from_text(t)
        assert math.isclose(math.log10(shown), y, abs_tol=0.02 * (math.log10(hi / lo) + 0.1)), (t, 10 ** y)


def _label_values_from_text(t: str) -> float:
    if "10" in t and any(c in t for c in "⁰¹²³⁴⁵⁶⁷⁸⁹"):
        mant, _, exp = t.partition("10")
        exp = exp.translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))
        return float(mant.rstrip("·") or 1) * 10.0 ** int(exp)
    return float(t)


def test_log_ticks_are_in_range_sorted_and_a_label_apart():
    rng = np.random.default_rng(3)
    for _ in range(300):
        lo = rng.uniform(-6, 6)
        hi = lo + rng.uniform(0.01, 9)
        px = rng.uniform(40, 400)
        vals = log_ticks(lo, hi, px, 12.0)
        logs = np.log10(vals)
        assert np.all((logs >= lo - 1e-9) & (logs <= hi + 1e-9))
        assert np.all(np.diff(logs) * px / (hi - lo) >= 12.0 - 1e-6)
        if px >= 4 * 12.0:
            assert len(vals) >= 3, (lo, hi, px, vals)
    assert log_label(1e5) == "10⁵" and log_label(2e-4) == "2·10⁻⁴" and log_label(300) == "300"


def test_a_reference_label_at_the_top_edge_moves_below_its_line(qtbot):
    p = _shown_plot(qtbot)
    x = np.linspace(0, 1, 50)
    p.set_series("a", x, np.linspace(0, 1, 50))
    line = pg.InfiniteLine(angle=0, pos=1.0, movable=False, label="max 1.0",
                           labelOpts={"position": 0.05, "anchors": [(0, 1), (0, 1)]})
    p.plot_item.addItem(line, ignoreBounds=True)
    p.plot_item.getViewBox().setYRange(0, 1.0, padding=0)
    p.sync_range()
    qtbot.wait(20)
    box = p.plot_item.getViewBox().sceneBoundingRect().adjusted(-0.5, -0.5, 0.5, 0.5)
    assert box.contains(line.label.mapRectToScene(line.label.boundingRect()))
    assert p.line_labels_clipped() == []
    p.plot_item.getViewBox().setYRange(0, 3.0, padding=0)    # room above again
    qtbot.wait(20)
    r = line.label.mapRectToScene(line.label.boundingRect())
    assert r.bottom() <= line.mapToScene(QPointF(0, 0)).y() + 1   # above, as asked


def test_labels_of_two_close_reference_lines_do_not_cover_each_other(qtbot):
    """fp8 e5m2 max and fp8 e4m3 max a few pixels apart: the second label moves to the
    other side of its line rather than over the first (both stay inside the box)."""
    p = _shown_plot(qtbot)
    x = np.linspace(0, 1, 50)
    p.set_series("a", x, np.linspace(0, 10, 50))
    lines = []
    for y, text in ((6.0, "fp8 e5m2 max 5.73e+04"), (5.6, "fp8 e4m3 max 448")):
        ln = pg.InfiniteLine(angle=0, pos=y, movable=False, label=text,
                             labelOpts={"position": 0.05, "anchors": [(0, 1), (0, 1)]})
        p.plot_item.addItem(ln, ignoreBounds=True)
        lines.append(ln)
    p.plot_item.getViewBox().setYRange(0, 10.0, padding=0)
    p.sync_range()
    qtbot.wait(20)
    a, b = (ln.label.mapRectToScene(ln.label.boundingRect()) for ln in lines)
    assert not a.intersects(b), (a, b)
    assert p.line_labels_clipped() == []



def test_the_label_of_a_line_out_of_view_is_hidden_without_trying_placements(qtbot, monkeypatch):
    """A running run's "planned end" lies right of its data for most of the run: its
    label was tried in all eight placements, and shown and hidden again, on every range
    change of every plot (537 us a call against 89 us). It is now hidden at once, and
    placed inside the box when the line comes into view."""
    p = _shown_plot(qtbot)
    p.set_series("a", np.arange(100.0), np.linspace(0, 1, 100))
    line = pg.InfiniteLine(angle=90, pos=2000.0, movable=False, label="planned end",
                           labelOpts={"position": 0.9, "anchors": [(1, 0), (1, 0)]})
    p.plot_item.addItem(line, ignoreBounds=True)
    p.sync_range()
    qtbot.wait(20)
    assert not line.label.isVisible()
    tries = []
    real = line.label.updatePosition
    monkeypatch.setattr(line.label, "updatePosition", lambda: tries.append(1) or real())
    shown = []
    line.label.visibleChanged.connect(lambda: shown.append(line.label.isVisible()))
    for _ in range(5):
        p.place_line_labels()
    assert tries == [] and shown == [] and not line.label.isVisible()
    p.set_series("a", np.arange(2500.0), np.linspace(0, 1, 2500))   # the run got there
    p.sync_range()
    qtbot.wait(20)
    assert line.label.isVisible() and tries
    box = p.plot_item.getViewBox().sceneBoundingRect().adjusted(-0.5, -0.5, 0.5, 0.5)
    assert box.contains(line.label.mapRectToScene(line.label.boundingRect()))

# ---------------------------------------------------------------------------- heatmap rows
def test_grouped_heatmap_rows_each_carry_a_label_or_their_layer(qtbot):
    """32 rows (4 layers x 8 experts) in a short heatmap: the layer names are drawn
    beside their rows, the experts inside them as far as they fit; every row is read."""
    h = HeatmapPlot("gates", "token", "expert")
    qtbot.addWidget(h)
    h.resize(420, 200)
    h.show()
    qtbot.waitExposed(h)
    full = [f"L{layer} e{e}" for layer in range(4) for e in range(8)]
    h.set_matrix(np.random.default_rng(0).random((32, 20)), y_labels=full)
    h.set_row_groups([(f"L{layer}", 8) for layer in range(4)], [f"e{e}" for _ in range(4) for e in range(8)])
    h.grab()
    qtbot.wait(20)
    axis = h.plot_item.getAxis("left")
    drawn = [(axis.mapRectToScene(r), t) for r, t in axis_texts(axis) if t]
    vb = h.view_box
    for layer in range(4):
        y0 = vb.mapViewToScene(QPointF(0, 8 * layer)).y()
        y1 = vb.mapViewToScene(QPointF(0, 8 * layer + 8)).y()
        names = [r for r, t in drawn if t == f"L{layer}"]
        assert len(names) == 1 and y0 <= names[0].center().y() <= y1
        experts = [t for r, t in drawn if t.startswith("e") and y0 <= r.center().y() <= y1]
        assert "e0" in experts
    assert h.y_labels() == full                       # hover and CSV keep the full names
    with pytest.raises(ValueError):
        h.set_row_groups([("L0", 8)])                 # covers 8 of 32 rows
    # Tall enough: every expert is labelled too.
    h.resize(420, 620)
    h.grab()
    qtbot.wait(20)
    texts = [t for _, t in axis_texts(axis)]
    assert sum(t.startswith("e") for t in texts) == 32


def test_one_row_groups_name_their_layer_on_every_row(qtbot):
    """One domain under each of 4 layers (the Routing view's Domain x expert for a
    one-domain corpus) in a short heatmap: a row is too short for its group's name, and
    the short labels alone read "prose" four times. Every drawn row label names its layer."""
    h = HeatmapPlot("domain", "expert", "")
    qtbot.addWidget(h)
    h.resize(380, 90)
    h.show()
    qtbot.waitExposed(h)
    full = [f"L{layer} prose" for layer in range(4)]
    h.set_matrix(np.random.default_rng(0).random((4, 8)), y_labels=full)
    h.set_row_groups([(f"L{layer}", 1) for layer in range(4)], ["prose"] * 4)
    h.grab()
    qtbot.wait(20)
    axis = h.plot_item.getAxis("left")
    vb = h.view_box
    drawn = [(axis.mapRectToScene(r), t) for r, t in axis_texts(axis) if t]
    for layer in range(4):
        y0, y1 = sorted(vb.mapViewToScene(QPointF(0, x)).y() for x in (layer, layer + 1))
        here = [t for r, t in drawn if y0 <= r.center().y() <= y1]
        assert any(f"L{layer}" in t for t in here), (layer, drawn)
    assert h.y_labels() == full


def test_a_heatmap_shrunk_under_a_long_title_keeps_its_colour_bar_inside(qtbot):
    """The plot item follows its view's resize before the title is cut to the new width;
    with the long title it could not get narrower, and once the title was cut nothing
    fitted it again: the colour bar's labels stayed cut off at the right edge."""
    h = HeatmapPlot("log2 |x|: activations · step 400 · fp16 zones, every module watched",
                    "log2 |x|", "module", value_label="share of elements")
    qtbot.addWidget(h)
    h.set_matrix(np.random.default_rng(0).random((12, 30)),
                 y_labels=[f"b{i // 4}.module_{i}" for i in range(12)])
    h.resize(900, 260)
    h.show()
    qtbot.waitExposed(h)
    h.resize(420, 260)
    qtbot.wait(30)
    h.grab()
    pw = h.plot_widget
    right = pw.mapFromScene(h.plot_item.sceneBoundingRect()).boundingRect().right()
    assert right <= pw.width() + 1, (right, pw.width())
    bar = pw.mapFromScene(h.color_bar.sceneBoundingRect()).boundingRect()
    assert bar.right() <= pw.width() + 1, (bar, pw.width())


def test_new_fixed_levels_colour_the_first_matrix_already(qtbot):
    """The first matrix given new fixed levels (Routing's and the domain-load maps set
    their scale, 0..2/E, with each matrix) was drawn with the old ones: the image kept
    the levels of the colour bar it is linked to until the second matrix."""
    h = HeatmapPlot("shares", "expert", "domain", fixed_levels=(0.0, 1.0), annotate=True)
    qtbot.addWidget(h)
    h.set_matrix(np.full((2, 4), 0.25), fixed_levels=(0.0, 0.5))
    assert h.levels() == pytest.approx((0.0, 0.5))
    assert tuple(h.color_bar.levels()) == pytest.approx((0.0, 0.5))
