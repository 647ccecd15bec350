"""The Gates view's reference labels ("uniform router ln 8 = 2.08", "uniform 1/8") never
cover a curve, and the legend never covers them: measured on what pyqtgraph drew (scene
rectangles of the labels against every point of every visible curve and the legend's
box), on real sample runs, at the view's own 1280 x 800 and at the 900 x 490 it gets
inside the main window at 1280 x 800 with its docks (where the entropy label used to sit
on the curves). The 2-layer sweep run's entropy ends near ln 4, so its legend takes the
top left and the label must go elsewhere."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from moe_studio.gui.views.gates import GateDashboard  # noqa: E402
from moe_studio.gui.widgets.line_labels import clipped, line_labels  # noqa: E402
from moe_studio.samples import sample_runs_dir  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

from drawn import legend_rect, points_under, scene_points  # noqa: E402


@pytest.mark.parametrize("size", [(1280, 800), (900, 490)], ids=["1280x800", "in-window"])
@pytest.mark.parametrize("run", ["moe-top2", "switch-top1", "sweep-topk-aux-top_k-1-aux_loss_coef-0"])
def test_uniform_reference_labels_cover_no_curve(make_dashboard, qtbot, run, size):
    d = make_dashboard(GateDashboard, [sample_runs_dir() / run], size=size)
    qtbot.waitExposed(d)
    d.grab()            # paint once: axes and labels lay out when drawn
    d.settle()
    with open_run(sample_runs_dir() / run) as r:
        n_experts = int(r.config["moe"]["n_experts"])
    for plot, text in ((d.entropy, f"uniform router ln {n_experts}"),
                       (d.top1, f"uniform 1/{n_experts}")):
        labels = [lab for lab in line_labels(plot.plot_item) if text in lab.toPlainText()]
        assert len(labels) == 1, (plot.title(), [lab.toPlainText() for lab in line_labels(plot.plot_item)])
        pts = scene_points(plot)
        assert len(pts) > 100
        rect = labels[0].mapRectToScene(labels[0].boundingRect())
        assert points_under(rect, pts) == 0, f"{text!r} covers curve points of {plot.title()!r}"
        legend = legend_rect(plot)
        assert legend is None or not legend.intersects(rect), f"the legend covers {text!r}"
        assert not clipped(plot.plot_item), clipped(plot.plot_item)


def test_no_size_sets_a_legend_going_in_and_out_for_ever(qtbot):
    """The entropy legend beside its plot is judged at the width the view will have
    with it inside again; the auto-range padding follows that width, and without a
    margin the judgement missed by a pixel: at 1175 x 633 (offscreen fonts) the legend
    went in, covered a point, went out, ... every repaint, and the app's timers starved.
    Around that size, no plot's range keeps changing once the view has settled."""
    from PySide6.QtWidgets import QApplication

    d = GateDashboard()
    qtbot.addWidget(d)
    d.show()
    d.set_runs([sample_runs_dir() / "moe-top2"])
    changes = [0]
    for p in (d.entropy, d.top1, d.logits):
        p.plot_item.getViewBox().sigRangeChanged.connect(
            lambda *_: changes.__setitem__(0, changes[0] + 1))
    restless = []
    for w in range(1160, 1195, 5):
        for h in (596, 633, 650):
            d.resize(w, h)
            for _ in range(8):
                QApplication.processEvents()
            changes[0] = 0
            for _ in range(20):
                QApplication.processEvents()
            if changes[0] > 2:
                restless.append((w, h, changes[0]))
    assert restless == []
