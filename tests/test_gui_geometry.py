"""Every view of every sample run, as a user meets it: the main window at 1280 x 800 with
the runs panel docked, offscreen, each tab opened with a click. The geometry of what is
drawn is checked, not only what the views hold:

- no plot title elided below a readable length;
- no legend over plotted data (every point of every visible curve, and the segments
  between sparse markers), and none cut off by its plot's edge;
- every heatmap row in view carries its label, or lies inside a group (a layer) whose
  name is drawn beside it; no row label is cut off;
- no reference-line label ("fp16 max ...") cut off by the axis box;
- no x axis caption cut off at its plot's edge;
- no y axis rescaled behind an SI factor ("(x0.001)"), and a log y axis labels at least
  three values, none overlapping;
- no plot laid out wider than its widget (a colour bar's labels pushed out of sight);
- no widget reaches past the right edge of its dock or of its view.

Beside the samples: two runs overlaid, Log y ticked in Training and Compare, and a tiny
4-layer run with precision records (19 module rows in the exponent histogram).

One window is shared by the whole module (building one costs seconds); each test
shows it, checks, and hides it again (a hidden window keeps no timer running). Set
``MOE_STUDIO_GEOMETRY_PNG=folder`` to keep a PNG of every view looked at.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import pyqtgraph as pg
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QPointF, QRectF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QFontMetrics  # noqa: E402
from PySide6.QtWidgets import (QAbstractScrollArea, QApplication, QCheckBox,  # noqa: E402
                               QDockWidget, QWidget)

from moe_studio.gui.widgets.heatmap import FigureWidget, HeatmapPlot  # noqa: E402
from moe_studio.gui.main_window import DASHBOARDS, MainWindow  # noqa: E402
from moe_studio.gui.widgets.plots import CurvePlot  # noqa: E402
from moe_studio.samples import sample_runs_dir  # noqa: E402

from drawn import axis_texts, legend_rect, points_under, scene_points  # noqa: E402

SIZE = (1280, 800)
READABLE_TITLE = 12      # characters an elided title keeps at least (before the "…")
SAMPLES = sorted(p.name for p in sample_runs_dir().iterdir() if (p / "run.sqlite").exists())
PAIRS = [("moe-vs-ensemble-moe", "moe-vs-ensemble-dense"), ("moe-top2", "switch-top1")]
VIEWS = [title for title, _ in DASHBOARDS]


def _settle(rounds: int = 6) -> None:
    app = QApplication.instance()
    for _ in range(rounds):
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        app.processEvents()


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geometry")
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp / "runs")
    w.runs_panel.set_auto_rescan(False)     # the sample folder does not change here
    w.resize(*SIZE)
    yield w
    w.controller.shutdown(10_000)
    for d in w.dashboards:
        d.stop_follow()
    w.close()
    w.deleteLater()
    _settle()


@pytest.fixture
def shown(window, qtbot):
    """The shared window, shown for one test and hidden after it."""
    window.show()
    qtbot.waitExposed(window)
    yield window
    for d in window.dashboards:
        d.stop_follow()
    window.hide()
    _settle()


def _open_tab(qtbot, w: MainWindow, index: int) -> QWidget:
    bar = w.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())
    _settle()
    view = w.tabs.widget(index)
    view.grab()          # paint everything once: axes lay out their labels when drawn
    _settle(3)
    return view


def _save(view: QWidget, name: str) -> None:
    folder = os.environ.get("MOE_STUDIO_GEOMETRY_PNG")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        view.grab().save(str(Path(folder) / f"{name}.png"))


def _visible(widget: QWidget) -> bool:
    return widget.isVisible() and widget.width() > 0 and widget.height() > 0


# ---------------------------------------------------------------------------- checks
def check_title(plot, where: str) -> list[str]:
    full = plot.title()
    if not full:
        return []
    shown = plot.plot_item.titleLabel.text
    shown = html.unescape(shown)
    if shown == full:
        return []
    kept = shown.rstrip("…").rstrip()
    if len(kept) < min(READABLE_TITLE, len(full)):
        return [f"{where}: title {full!r} elided to {shown!r}"]
    return []


def check_legend(plot: CurvePlot, where: str) -> list[str]:
    rect = legend_rect(plot)
    if rect is None:
        return []
    problems = []
    under = points_under(rect, scene_points(plot))
    if under:
        problems.append(f"{where}: the legend of {plot.title()!r} covers {under} plotted points")
    view = plot.plot_widget.mapFromScene(rect).boundingRect()
    if view.right() > plot.plot_widget.width() + 1 or view.bottom() > plot.plot_widget.height() + 1:
        problems.append(f"{where}: the legend of {plot.title()!r} is cut off by the plot's "
                        f"edge ({view.right()} > {plot.plot_widget.width()} px)")
    return problems


def check_y_axis(plot, where: str) -> list[str]:
    axis = plot.plot_item.getAxis("left")
    if not axis.isVisible():
        return []
    problems = []
    if "(x" in axis.labelString() or "(×" in axis.labelString():
        problems.append(f"{where}: the y axis of {plot.title()!r} is rescaled: "
                        f"{axis.labelString()!r}")
    if axis.logMode and isinstance(plot, CurvePlot) and plot.series_keys():
        texts = [(r, t) for r, t in axis_texts(axis) if t]
        if len(texts) < 3:
            problems.append(f"{where}: the log y axis of {plot.title()!r} labels only "
                            f"{[t for _, t in texts]}")
        rects = sorted((r for r, _ in texts), key=lambda r: r.top())
        for a, b in zip(rects, rects[1:]):
            if a.bottom() > b.top() + 0.5:
                problems.append(f"{where}: y labels of {plot.title()!r} overlap")
                break
    return problems


def check_x_axis(plot, where: str) -> list[str]:
    """The bottom axis' tick labels do not run into each other."""
    axis = plot.plot_item.getAxis("bottom")
    if not axis.isVisible():
        return []
    rects = sorted((r for r, t in axis_texts(axis) if t), key=lambda r: r.left())
    for a, b in zip(rects, rects[1:]):
        if a.right() > b.left() + 0.5:
            return [f"{where}: x labels of {plot.title()!r} overlap"]
    # the caption ("step · planned 2,000") whole inside the plot, not cut at its edge
    caption = axis.label
    if caption.isVisible() and axis.labelText:
        box = caption.mapRectToScene(caption.boundingRect())
        widget = plot.plot_item.mapRectToScene(plot.plot_item.boundingRect())
        if box.left() < widget.left() - 0.5 or box.right() > widget.right() + 0.5:
            return [f"{where}: x caption {axis.labelText!r} of {plot.title()!r} cut off"]
    return []


def check_line_labels(plot, where: str) -> list[str]:
    """Reference-line labels (pyqtgraph's InfLineLabel) lie inside the axis box."""
    empty = (not plot.series_keys() if isinstance(plot, CurvePlot) else
             isinstance(plot, HeatmapPlot) and plot.matrix().size == 0)
    if empty:
        return []     # nothing plotted (a notice covers it): no line to read against
    box = plot.plot_item.getViewBox().sceneBoundingRect().adjusted(-0.5, -0.5, 0.5, 0.5)
    problems = []
    for item in plot.plot_item.items:
        label = getattr(item, "label", None)
        if not isinstance(item, pg.InfiniteLine) or not isinstance(label, pg.InfLineLabel):
            continue
        if not (item.isVisible() and label.isVisible() and label.toPlainText()):
            continue
        r = label.mapRectToScene(label.boundingRect())
        if box.intersects(r) and not box.contains(r):
            problems.append(f"{where}: reference label {label.toPlainText()!r} of "
                            f"{plot.title()!r} is cut off")
    return problems


def check_rows(plot: HeatmapPlot, where: str) -> list[str]:
    """Each row in view has its label drawn on it, or lies in a run of rows whose full
    labels begin with a name ("L2 e5", "b1.attn.qkv") that is drawn beside that run."""
    labels = plot.y_labels()
    axis = plot.plot_item.getAxis("left")
    m = plot.matrix()
    if not labels or m.shape[0] == 0 or not axis.isVisible():
        return []
    vb = plot.view_box
    box = vb.sceneBoundingRect()
    drawn = [(axis.mapRectToScene(r), t) for r, t in axis_texts(axis) if t]
    widget_box = QRectF(0, 0, plot.plot_widget.width(), plot.plot_widget.height())
    problems = []
    for r, t in drawn:
        if not widget_box.adjusted(-1, -1, 1, 1).contains(plot.plot_widget.mapFromScene(r).boundingRect()):
            problems.append(f"{where}: row label {t!r} of {plot.title()!r} is cut off")

    def span(a: float, b: float) -> tuple[float, float]:
        ya = vb.mapViewToScene(QPointF(0, a)).y()
        yb = vb.mapViewToScene(QPointF(0, b)).y()
        return max(min(ya, yb), box.top()), min(max(ya, yb), box.bottom())

    def labelled(i: int) -> bool:
        lo, hi = span(i, i + 1)
        for r, t in drawn:
            c = r.center().y()
            if lo - 0.5 <= c <= hi + 0.5 and labels[i].endswith(t):
                return True          # the row's label (or its part after the group's)
            if labels[i].startswith(t + " ") or labels[i].startswith(t + "."):
                # a group name: the run of rows sharing it around row i must hold it
                a = i
                while a > 0 and labels[a - 1].startswith(labels[i][:len(t) + 1]):
                    a -= 1
                b = i + 1
                while b < len(labels) and labels[b].startswith(labels[i][:len(t) + 1]):
                    b += 1
                g_lo, g_hi = span(a, b)
                if g_lo - 0.5 <= c <= g_hi + 0.5:
                    return True
        return False

    missing = []
    for i in range(len(labels)):
        lo, hi = span(i, i + 1)
        if hi - lo >= 1 and not labelled(i):
            missing.append(labels[i])
    if missing:
        problems.append(f"{where}: {len(missing)} of {m.shape[0]} rows of {plot.title()!r} "
                        f"have no label and no group label: {missing[:6]}")
    return problems


def _scrolls_sideways(w: QWidget, top: QWidget) -> bool:
    """Whether ``w`` sits in a scroll area (below ``top``) whose horizontal scroll bar
    is shown: reaching past the edge is then what scrolling is for."""
    p = w.parentWidget()
    while p is not None and p is not top:
        if isinstance(p, QAbstractScrollArea) and p.horizontalScrollBar().isVisible():
            return True
        p = p.parentWidget()
    return False


def check_widths(container: QWidget, where: str) -> list[str]:
    """No visible widget inside ``container`` reaches past its right edge."""
    problems = []
    for w in container.findChildren(QWidget):
        if not w.isVisible() or w.width() <= 0 or w.isWindow() or _scrolls_sideways(w, container):
            continue
        right = w.mapTo(container, w.rect().topRight()).x()
        if right > container.width() + 1:
            problems.append(f"{where}: {type(w).__name__}({w.objectName() or ''}) reaches "
                            f"{right - container.width()} px past the right edge")
    return problems[:5]


def check_fits(plot, where: str) -> list[str]:
    """The plot (axes, title, colour bar, legend column) lies inside its widget: a
    layout pushed wider than the widget cuts off its right side (a colour bar's
    labels, the latest steps)."""
    pw = plot.plot_widget
    r = pw.mapFromScene(plot.plot_item.sceneBoundingRect()).boundingRect()
    if r.right() > pw.width() + 1:
        return [f"{where}: {plot.title()!r} is {r.right() - pw.width()} px wider than its widget"]
    return []


def check_view(view: QWidget, where: str) -> list[str]:
    problems = check_widths(view, where)
    for fig in view.findChildren(QWidget):
        if not isinstance(fig, (CurvePlot, FigureWidget)) or not _visible(fig):
            continue
        problems += check_title(fig, where)
        problems += check_fits(fig, where)
        problems += check_y_axis(fig, where)
        problems += check_x_axis(fig, where)
        problems += check_line_labels(fig, where)
        if isinstance(fig, CurvePlot):
            problems += check_legend(fig, where)
        if isinstance(fig, HeatmapPlot):
            problems += check_rows(fig, where)
    return problems


def _check_all_views(qtbot, w: MainWindow, runs: list[Path], name: str) -> list[str]:
    w.show_runs(runs)
    problems = []
    for i, title in enumerate(VIEWS):
        view = _open_tab(qtbot, w, i)
        _save(view, f"{name}__{title}")
        problems += check_view(view, f"{name} / {title}")
    for dock in w.findChildren(QDockWidget):
        if dock.isVisible():
            problems += check_widths(dock, f"{name} / dock {dock.windowTitle()!r}")
    return problems


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("sample", SAMPLES)
def test_every_view_of_a_sample_run_reads_at_1280x800(shown, qtbot, sample):
    problems = _check_all_views(qtbot, shown, [sample_runs_dir() / sample], sample)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_every_view_of_two_runs_overlaid_reads_at_1280x800(shown, qtbot, pair):
    problems = _check_all_views(qtbot, shown, [sample_runs_dir() / p for p in pair],
                                "+".join(pair))
    assert not problems, "\n".join(problems)


def test_every_view_of_a_live_run_reads_at_1280x800(shown, qtbot, tmp_path):
    """A run still training (a real one, 30 steps into 2,000, its writer open): the
    Training view shows the plan in its captions, where they fit, and every view
    passes the same checks as a finished run."""
    from moe_studio.engine.trainer import Trainer
    from tiny import tiny_config

    cfg = tiny_config("live", train__steps=2000, train__eval_every=10, train__snapshot_every=10)
    cfg.precision.headroom = True
    tr = Trainer(cfg, runs_dir=tmp_path)
    try:
        for _ in range(30):
            tr.step()
        tr.flush_records()
        problems = _check_all_views(qtbot, shown, [tr.run_dir], "live")
        training = shown.tabs.widget(VIEWS.index("Training"))
        captions = [p.x_caption() for p in training.plots().values()]
        assert any("planned 2,000" in c for c in captions), captions
    finally:
        tr.close("stopped")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("pair", PAIRS[1:], ids=["+".join(p) for p in PAIRS[1:]])
def test_log_y_labels_three_values_without_overlap(shown, qtbot, pair):
    """The Log y box of the Training and Compare views, ticked as a user does: every
    log axis labels at least three values (losses span less than a decade), none
    overlapping, with no SI factor."""
    w = shown
    w.show_runs([sample_runs_dir() / p for p in pair])
    problems = []
    for title in ("Training", "Compare"):
        view = _open_tab(qtbot, w, VIEWS.index(title))
        box = next(b for b in view.findChildren(QCheckBox) if b.text() == "Log y")
        if not box.isChecked():
            qtbot.mouseClick(box, Qt.MouseButton.LeftButton)
        _settle()
        view.grab()
        logs = [p for p in view.findChildren(CurvePlot) if _visible(p) and p.log_y()]
        assert logs, f"{title}: no plot went to a log scale"
        for plot in logs:
            problems += check_y_axis(plot, f"{'+'.join(pair)} / {title} (log y)")
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton)      # as it was
        _settle()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def four_layer_precision_run(tmp_path_factory):
    """A tiny run of the default depth (4 layers) with headroom recorded: 19 modules,
    more rows than the sample pair's 2-layer histogram."""
    pytest.importorskip("torch")
    from moe_studio.engine.trainer import Trainer
    from tiny import tiny_config
    cfg = tiny_config("four-layers", model__n_layers=4, train__steps=2, train__warmup_steps=1,
                      train__eval_every=1000, train__eval_batches=1, train__snapshot_every=1000,
                      precision__headroom=True, precision__headroom_every=1)
    tr = Trainer(cfg, runs_dir=tmp_path_factory.mktemp("four-layers"))
    try:
        for _ in range(2):
            tr.step()
    finally:
        tr.close()
    return tr.run_dir


def test_precision_histogram_of_a_four_layer_model_names_every_module(shown, qtbot,
                                                                      four_layer_precision_run):
    w = shown
    w.show_runs([Path(four_layer_precision_run)])
    view = _open_tab(qtbot, w, VIEWS.index("Precision"))
    _save(view, "four-layers__Precision")
    heat = view.heatmap
    assert heat.matrix().shape[0] >= 19, heat.y_labels()
    problems = check_rows(heat, "four-layer / Precision") + check_view(view, "four-layer / Precision")
    assert not problems, "\n".join(problems)


# A plot's axis box at least this tall (px) at 1280 x 800: pyqtgraph then labels a
# linear axis with four or more values about 30 px apart (at 80 px the overflow plot
# showed two, drawn over each other), and the two-line "0 % at every recorded step"
# notice fits inside the box with room above and below it.
PLOT_MIN_VIEW_HEIGHT = 140


def test_precision_plots_have_room_at_1280x800_with_the_runs_dock(shown, qtbot):
    """Issue 13: with the runs panel docked (the default layout) the overflow and
    underflow shares were ~20 px tall, their y labels on top of each other. Every plot of
    the Precision view gets a readable axis box (the page scrolls if it must)."""
    w = shown
    docks = [d for d in w.findChildren(QDockWidget) if d.isVisible()]
    assert any("Runs" in d.windowTitle() for d in docks), [d.windowTitle() for d in docks]
    w.show_runs([sample_runs_dir() / "fp16-overflow"])
    view = _open_tab(qtbot, w, VIEWS.index("Precision"))
    _save(view, "fp16-overflow__Precision-room")
    problems = []
    for plot in (view.scale_plot, view.absmax_plot, view.overflow_plot, view.underflow_plot):
        assert _visible(plot) and plot.series_keys(), plot.title()
        h = plot.view_box.sceneBoundingRect().height()
        if h < PLOT_MIN_VIEW_HEIGHT:
            problems.append(f"{plot.title()!r}: axis box {h:.0f} px tall "
                            f"(< {PLOT_MIN_VIEW_HEIGHT})")
        rects = sorted((r for r, t in axis_texts(plot.plot_item.getAxis("left")) if t),
                       key=lambda r: r.top())
        if len(rects) < 3:
            problems.append(f"{plot.title()!r}: the y axis labels only {len(rects)} values")
        if any(a.bottom() > b.top() + 0.5 for a, b in zip(rects, rects[1:])):
            problems.append(f"{plot.title()!r}: y labels overlap")
    problems += check_view(view, "fp16-overflow / Precision")
    assert not problems, "\n".join(problems)


def test_routing_share_maps_leave_each_layer_a_line_at_1280x800(shown, qtbot):
    """Seen under Xvfb (real fonts, 1280 x 800, runs panel docked): Domain x expert of
    moe-top2 (2 domains x 4 layers) had 4 px rows, too short for the layers' names, and
    every second row unlabelled; offscreen fonts passed check_rows by a pixel. Each
    layer's rows are now at least one line of the plot's own font tall, which leaves
    its name room under either font."""
    w = shown
    w.show_runs([sample_runs_dir() / "moe-top2"])
    view = _open_tab(qtbot, w, VIEWS.index("Routing"))
    problems = []
    for plot in (view.domain_map, view.class_map):
        groups = plot.row_groups()
        assert groups and len(groups) == 4, groups
        line = QFontMetrics(plot.font()).height()
        vb = plot.view_box
        for name, a, b in groups:
            tall = abs(vb.mapViewToScene(QPointF(0, b)).y() - vb.mapViewToScene(QPointF(0, a)).y())
            if tall < line:
                problems.append(f"{plot.title()!r}: layer {name} is {tall:.1f} px tall (< {line})")
        problems += check_rows(plot, "moe-top2 / Routing")
    assert not problems, "\n".join(problems)
