"""Stage boundaries of ``train.stages`` drawn on the Training view's time axes, from a
run trained here, on the step axis and the tokens axis."""
from __future__ import annotations

import pyqtgraph as pg
import pytest

from moe_studio.engine.trainer import Trainer
from moe_studio.gui.views.experts import ExpertsDashboard
from moe_studio.gui.views.training import TrainingDashboard
from tiny import tiny_config


@pytest.fixture
def staged_run(tmp_path):
    cfg = tiny_config(train__stages="router:2, experts:1", train__steps=4, train__eval_every=2)
    tr = Trainer(cfg, runs_dir=tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    return tr.run_dir, cfg.data.batch_size * cfg.data.context


def stage_lines(plot) -> list[float]:
    """x of the vertical lines on the plot that say they mark a training stage."""
    return sorted(item.value() for item in plot.plot_item.items
                  if isinstance(item, pg.InfiniteLine) and item.toolTip().startswith("training stage"))


def test_stage_lines_on_the_training_view(qtbot, staged_run):
    run_dir, tokens_per_step = staged_run
    d = TrainingDashboard()
    qtbot.addWidget(d)
    d.set_runs([run_dir])
    for key in ("loss", "lr"):
        assert stage_lines(d.plot(key)) == [2.0, 3.0]
    d.set_x_mode("tokens")
    assert stage_lines(d.plot("loss")) == [2.0 * tokens_per_step, 3.0 * tokens_per_step]
    d.stop_follow()


def test_stage_lines_on_the_experts_view(make_dashboard, staged_run):
    run_dir, _ = staged_run
    d = make_dashboard(ExpertsDashboard, [run_dir], size=(1200, 800))
    for plot in (d.cv, d.max_mean, d.dropped, d.dead):
        assert stage_lines(plot) == [2.0, 3.0]
