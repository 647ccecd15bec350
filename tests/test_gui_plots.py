"""CurvePlot: in-place updates, smoothing, log-y, hover, export; the theme module."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pyqtgraph as pg
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtGui import QImage, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from moe_studio.gui import theme  # noqa: E402
from moe_studio.gui.widgets.plot_grid import PlotGrid  # noqa: E402
from moe_studio.gui.widgets.plots import CurvePlot  # noqa: E402
from moe_studio.metrics.smoothing import ema  # noqa: E402


@pytest.fixture
def plot(qtbot):
    p = CurvePlot("Loss")
    qtbot.addWidget(p)
    p.resize(640, 400)
    return p


@pytest.fixture
def restore_theme(qapp):
    """Theme tests change app-wide state; put it back for whoever runs next."""
    palette, style = QPalette(qapp.palette()), qapp.style().name()
    opts = {k: pg.getConfigOption(k) for k in ("background", "foreground", "antialias")}
    dark = theme.is_dark()
    yield qapp
    qapp.setPalette(palette)
    if style:
        qapp.setStyle(style)
    pg.setConfigOptions(**opts)
    theme._dark = dark


def _xy(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=float)
    return x, 2.0 + np.exp(-x / 80) + rng.normal(0, 0.05, n)


def test_set_series_updates_the_same_items_in_place(plot):
    x, y = _xy()
    plot.set_series("train", x[:100], y[:100], label="train")
    curve, raw = plot.curve("train"), plot.raw_curve("train")
    n_items = len(plot.plot_item.items)
    plot.set_series("train", x, y)
    assert plot.curve("train") is curve and plot.raw_curve("train") is raw
    assert len(plot.plot_item.items) == n_items
    cx, cy = curve.getData()
    np.testing.assert_array_equal(cx, x)
    np.testing.assert_array_equal(cy, y)   # smoothing 0: the bold curve is the raw data
    assert plot.series_label("train") == "train"
    assert plot.series_keys() == ["train"]


def test_smoothing_draws_faint_raw_and_bold_smoothed(plot):
    x, y = _xy()
    plot.set_series("train", x, y)
    plot.set_series("val", x[::50], y[::50], smooth=False, dash=True, symbol="o")
    assert not plot.raw_curve("train").isVisible()
    plot.set_smoothing(0.9)
    _, sy = plot.curve("train").getData()
    np.testing.assert_allclose(sy, ema(y, 0.9))
    assert plot.raw_curve("train").isVisible()
    np.testing.assert_array_equal(plot.raw_curve("train").getData()[1], y)
    # The sparse validation series is exempt and keeps its raw values.
    np.testing.assert_array_equal(plot.curve("val").getData()[1], y[::50])
    assert not plot.raw_curve("val").isVisible()
    # Appending points re-smooths the whole series, still in place.
    x2, y2 = _xy(400)
    curve = plot.curve("train")
    plot.set_series("train", x2, y2)
    assert plot.curve("train") is curve
    np.testing.assert_allclose(curve.getData()[1], ema(y2, 0.9))
    plot.set_smoothing(0.0)
    assert not plot.raw_curve("train").isVisible()
    np.testing.assert_array_equal(plot.curve("train").getData()[1], y2)
    with pytest.raises(ValueError):
        plot.set_smoothing(1.0)


def test_hiding_a_series_hides_its_raw_companion(plot):
    x, y = _xy()
    plot.set_smoothing(0.6)
    plot.set_series("a", x, y)
    plot.set_series("b", x, y + 1)
    seen = []
    plot.seriesVisibilityChanged.connect(lambda k, v: seen.append((k, v)))
    # What a click on the legend sample does: toggle the item, then sigSampleClicked.
    legend = plot.plot_item.legend
    item = plot.curve("a")
    item.setVisible(False)
    legend.sigSampleClicked.emit(item)
    assert not plot.is_series_visible("a") and not plot.raw_curve("a").isVisible()
    assert seen == [("a", False)]
    text = plot.hover_at(150.0)
    assert "b:" in text and "a:" not in text
    plot.set_series_visible("a", True)
    assert plot.raw_curve("a").isVisible()


def test_log_y(plot):
    x, y = _xy()
    plot.set_series("train", x, y)
    plot.set_log_y(True)
    assert plot.log_y()
    assert plot.plot_item.getAxis("left").logMode
    # Items display log10(y); the stored data stays raw.
    np.testing.assert_allclose(plot.curve("train").getData()[1], np.log10(y))
    np.testing.assert_array_equal(plot.series_data("train")[1], y)
    # Series added while log mode is on are logged too; non-positive values leave gaps.
    plot.set_series("z", x[:3], np.array([1.0, 0.0, 10.0]))
    assert plot.curve("z").getData()[1][2] == pytest.approx(1.0)
    plot.set_log_y(False)
    np.testing.assert_allclose(plot.curve("train").getData()[1], y)


def test_hover_readout_reports_nearest_points(plot):
    plot.set_x_label("tokens")
    plot.set_series("train", [0, 10, 20, 30], [4.0, 3.0, 2.0, 1.0], label="train loss")
    plot.set_series("val", [0, 25], [5.0, 2.5], label="val loss", smooth=False)
    text = plot.hover_at(19.0)
    lines = text.splitlines()
    assert lines[0] == "tokens 20"
    assert "train loss: 2" in lines[1]
    assert "val loss: 2.5" in lines[2]


def test_export_png_svg_csv(plot, tmp_path, qtbot):
    x, y = _xy()
    plot.set_series("train m0", x, y, label="train m0")
    plot.set_series("val m0", x[::100], y[::100] + 0.1, label="val m0", dash=True, symbol="o")
    plot.set_smoothing(0.6)
    plot.show()
    qtbot.waitExposed(plot)

    png = plot.export_png(tmp_path / "loss.png", width=900)
    img = QImage(str(png))
    assert not img.isNull() and img.width() == 900

    svg = plot.export_svg(tmp_path / "loss.svg")
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and len(text) > 1000

    csv = plot.export_csv(tmp_path / "loss.csv")
    df = pd.read_csv(csv)
    assert list(df.columns) == ["series", "label", "x", "y"]
    for key, (sx, sy) in {"train m0": (x, y), "val m0": (x[::100], y[::100] + 0.1)}.items():
        part = df[df.series == key]
        np.testing.assert_array_equal(part.x.to_numpy(), sx)
        np.testing.assert_array_equal(part.y.to_numpy(), sy)   # raw values, exactly
    assert len(df) == len(x) + len(x[::100])


def test_set_series_rejects_mismatched_lengths(plot):
    with pytest.raises(ValueError):
        plot.set_series("a", [1, 2, 3], [1, 2])


def test_remove_and_restyle(plot):
    plot.set_series("a", [0, 1], [1, 2], color=3)
    curve = plot.curve("a")
    plot.set_series("a", [0, 1], [1, 2], color="ensemble", label="ensemble")
    assert plot.curve("a") is curve and plot.series_label("a") == "ensemble"
    plot.remove_series("a")
    assert plot.series_keys() == []
    assert curve not in plot.plot_item.items


def test_plot_grid_links_x_and_broadcasts(qtbot):
    grid = PlotGrid()
    qtbot.addWidget(grid)
    a = grid.add_plot("a", "A", 0, 0)
    b = grid.add_plot("b", "B", 1, 0, link_x=True)
    c = grid.add_plot("c", "C", 0, 1)
    assert b.plot_item.getViewBox().linkedView(0) is a.plot_item.getViewBox()
    assert c.plot_item.getViewBox().linkedView(0) is None
    grid.set_smoothing(0.5)
    grid.set_x_label("tokens")
    grid.set_log_y(True, keys={"b"})
    assert a.smoothing() == b.smoothing() == 0.5
    assert a.x_label() == "tokens" and not a.log_y() and b.log_y()


def test_theme_palettes_and_colors(restore_theme):
    app = restore_theme
    theme.apply_palette(app, True)
    assert theme.is_dark() and theme.is_dark_palette(app.palette())
    assert isinstance(app.style(), theme.FusionStyle)
    assert app.style().baseStyle().name().lower() == "fusion"
    assert pg.getConfigOption("background") == theme.plot_colors(True)["background"]
    assert pg.getConfigOption("antialias") is True
    theme.apply_palette(app, False)
    assert not theme.is_dark_palette(app.palette())
    for dark in (False, True):
        c = theme.plot_colors(dark)
        assert len(c["series"]) == 10 and len(set(c["series"])) == 10
        assert pg.colormap.get(c["colormap"]) is not None
        assert theme.series_color(0, dark) == theme.series_color(10, dark) == c["series"][0]
    assert theme.status_color("running", False).name() == "#1e8e3e"
    assert theme.status_color("finished") is None


def test_plot_follows_a_theme_change(plot, restore_theme):
    plot.set_series("a", [0, 1], [1, 2], color=0)
    theme.apply_palette(QApplication.instance(), True)
    QApplication.processEvents()
    bg = plot.plot_widget.backgroundBrush().color().name()
    assert bg == theme.plot_colors(True)["background"]
    assert plot.curve("a").opts["pen"].color().name() == theme.series_color(0, True)


def test_axis_number_and_duration_formats():
    from moe_studio.gui.formats import compact_number, format_duration

    assert [compact_number(v, 200e3) for v in (2e5, 1e6, 1.4e6)] == ["200k", "1.0M", "1.4M"]
    assert compact_number(2.5e9, 5e8) == "2.5G"
    assert format_duration(42) == "42s"
    assert format_duration(0.5, 0.1) == "0.5s"
    # One style along an axis that reaches a minute.
    assert [format_duration(v, 20, 180) for v in (0, 20, 60)] == ["0:00", "0:20", "1:00"]
    assert format_duration(3725) == "1:02:05"
    assert format_duration(7200, 600) == "2:00"


def test_legend_moves_off_the_data(plot, qtbot):
    plot.show()
    qtbot.waitExposed(plot)
    x = np.linspace(0, 1, 200)
    # Both curves rise to the top right, where the legend starts.
    plot.set_series("a", x, x)
    plot.set_series("b", x, x ** 0.5)
    plot.sync_range()
    assert plot.plot_item.legend.isVisible()
    assert plot._legend_corner != (1, 0)


def test_legend_avoids_lines_between_few_markers(plot, qtbot):
    """Evaluation curves have a handful of points: the legend must avoid the segments
    between them, not only the markers. Two diagonals cross every corner; only the
    middle of the sides is free."""
    plot.show()
    qtbot.waitExposed(plot)
    # the markers lie outside the view: only the segments run through it
    plot.set_series("up", np.array([-100.0, 200.0]), np.array([-1.0, 2.0]), symbol="o", smooth=False)
    plot.set_series("down", np.array([-100.0, 200.0]), np.array([2.0, -1.0]), symbol="o", smooth=False)
    plot.sync_range()
    plot.plot_item.getViewBox().setRange(xRange=(0, 100), yRange=(0, 1), padding=0)
    qtbot.wait(10)
    assert plot.plot_item.legend.isVisible()
    assert plot._legend_corner in ((1, 0.5), (0, 0.5))


def test_placeholder_stays_inside_the_axis_box(plot, qtbot):
    """The empty-plot message wraps inside the axis box: in a narrow plot it must not
    run over the tick labels of the y axis."""
    plot.resize(260, 180)
    plot.show()
    qtbot.waitExposed(plot)
    plot.set_placeholder("Dropless (capacity_factor 0): no token is ever dropped")
    qtbot.wait(20)
    vb = plot.plot_item.getViewBox()
    box = plot.plot_widget.mapFromScene(vb.sceneBoundingRect()).boundingRect()
    box.moveTopLeft(plot.plot_widget.mapTo(plot, box.topLeft()))
    g = plot._placeholder.geometry()
    assert box.contains(g), (box, g)      # the view box starts right of the y axis
    assert g.left() > plot.plot_item.getAxis("left").width() - 5


def test_a_notice_too_long_for_a_short_plot_is_cut_inside_it_and_whole_in_its_tooltip(plot, qtbot):
    """A plot squeezed under another (Precision's overflow share at 1280 x 800) has no
    room for its sentence: the notice stays inside the axis box, ends in " …" at a word,
    and the whole sentence is its tooltip and what placeholder() says."""
    text = "0 % at every recorded step: no element would overflow in fp16"
    plot.set_minimum_plot_height(40)
    plot.resize(260, 90)
    plot.show()
    qtbot.waitExposed(plot)
    plot.set_placeholder(text)
    qtbot.wait(20)
    vb = plot.plot_item.getViewBox()
    box = plot.plot_widget.mapFromScene(vb.sceneBoundingRect()).boundingRect()
    box.moveTopLeft(plot.plot_widget.mapTo(plot, box.topLeft()))
    label = plot._placeholder
    assert box.contains(label.geometry()), (box, label.geometry())
    assert label.heightForWidth(label.width()) <= label.height()     # no line cut off
    shown = label.text()
    assert shown.endswith(" …") and text.startswith(shown[:-2]) and shown[:-2] != text
    assert label.toolTip() == text and plot.placeholder() == text
    plot.resize(520, 300)                  # room again: the whole sentence, no tooltip
    qtbot.wait(20)
    assert label.text() == text and label.toolTip() == ""


def test_a_long_title_is_elided_and_never_pushes_the_curves_out_of_a_narrow_plot(qtbot):
    """pyqtgraph's title asks for its whole text width; in a plot narrower than that the
    view box used to extend past the widget's right edge, cutting off the latest steps."""
    title = "Diversity of correctness (Kuncheva & Whitaker), pair means over the members"
    p = CurvePlot(title)
    qtbot.addWidget(p)
    p.set_series("a", np.arange(0, 501, 25), np.linspace(1, 0, 21))
    p.resize(300, 180)
    p.show()
    qtbot.waitExposed(p)
    vb = p.plot_item.vb
    qtbot.waitUntil(lambda: vb.viewRange()[0][1] >= 500, timeout=2000)
    assert vb.mapRectToScene(vb.boundingRect()).right() <= p.width()
    last = vb.mapViewToScene(pg.Point(500, 0))          # the latest step is on screen
    assert 0 < last.x() <= p.width()
    shown = html.unescape(p.plot_item.titleLabel.text)     # drawn as HTML: & escaped
    assert shown != title and shown.endswith("…")
    assert p.plot_item.titleLabel.toolTip() == title
    p.resize(1400, 180)                                 # room again: the whole title
    qtbot.waitUntil(lambda: html.unescape(p.plot_item.titleLabel.text) == title, timeout=2000)
    assert p.plot_item.titleLabel.toolTip() == ""
    assert p.title() == title


def test_the_x_extent_of_a_downsampled_curve_is_all_of_its_points(plot, qtbot):
    """A bold smoothed curve is drawn from about one point per pixel, and the points
    drawn leave out the last, partial group: the extent auto-range fits must still end
    at the last step, whatever factor the view's width gives."""
    x = np.arange(1, 847, dtype=float)
    plot.set_smoothing(0.6)
    plot.set_series("s", x, np.sin(x / 50))
    plot.resize(220, 170)
    plot.show()
    qtbot.waitExposed(plot)
    item = plot.curve("s")
    last_drawn = []
    for right in (700.0, 1000.0, 1500.0, 2500.0):     # several downsampling factors
        plot.plot_item.getViewBox().setXRange(0, right, padding=0)
        last_drawn.append(float(item._getDisplayDataset().x[-1]))
        assert item.dataBounds(0) == (1.0, 846.0)
    assert min(last_drawn) < 846                      # a factor that drops the tail ran


def test_a_live_curve_never_sets_its_view_flipping(qtbot):
    """A growing bold curve in a small auto-ranged plot: before, at some lengths the
    downsampling factor and the view's range set each other for ever (factor 6 drops the
    last steps, the view shrinks, factor 5 draws them, the view grows), one repaint after
    another, and a live Training view froze with its timers starved until the run ended
    (seen under Xvfb at 1280x800; here with the offscreen fonts at these lengths)."""
    p = CurvePlot("Load-balancing loss")
    qtbot.addWidget(p)
    p.resize(220, 170)
    p.set_smoothing(0.6)
    p.show()
    qtbot.waitExposed(p)
    rng = np.random.default_rng(0)
    changes = [0]
    p.plot_item.getViewBox().sigRangeChanged.connect(lambda *_: changes.__setitem__(0, changes[0] + 1))
    flipping = []
    for n in range(400, 1450, 3):
        x = np.arange(1, n + 1, dtype=float)
        p.set_series("aux", x, 4.2 + 0.1 * rng.standard_normal(n))
        p.sync_range()
        changes[0] = 0
        for _ in range(8):
            QApplication.processEvents()
        if changes[0] > 2:
            flipping.append(n)
    assert flipping == []
