"""The Experts view's Dropped plot shows the first and last sequence of the batch,
from ``moe/dropped_per_row`` of a run trained here, checked against the store's
numbers recomputed with numpy."""
from __future__ import annotations

import numpy as np
import pytest

from moe_studio.engine.trainer import Trainer
from moe_studio.gui.views.experts import ExpertsDashboard
from moe_studio.store import open_run
from tiny import tiny_config


@pytest.fixture
def capacity_run(tmp_path):
    cfg = tiny_config(moe__capacity_factor=0.5, train__steps=4, train__eval_every=4)
    tr = Trainer(cfg, runs_dir=tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    return tr.run_dir, cfg


def test_dropped_plot_shows_first_and_last_sequence(make_dashboard, capacity_run):
    run_dir, cfg = capacity_run
    d = make_dashboard(ExpertsDashboard, [run_dir], size=(1200, 800))
    steps, rows = open_run(run_dir).tensor_series("moe/dropped_per_row")   # [S, blocks, B]
    pairs = cfg.data.context * cfg.moe.top_k
    for key, col in (("row:first", 0), ("row:last", cfg.data.batch_size - 1)):
        x, y = d.dropped.series_data(key)
        np.testing.assert_array_equal(x, steps)
        expect = [100.0 * sum(rows[s, b, col] for b in range(rows.shape[1])) / rows.shape[1] / pairs
                  for s in range(len(steps))]
        np.testing.assert_allclose(y, expect)
    assert rows.sum() > 0


def test_dropless_run_has_no_row_curves(make_dashboard, tmp_path):
    cfg = tiny_config(train__steps=2, train__eval_every=2)
    tr = Trainer(cfg, runs_dir=tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    d = make_dashboard(ExpertsDashboard, [tr.run_dir], size=(1200, 800))
    assert not {"row:first", "row:last"} & set(d.dropped.series_keys())
