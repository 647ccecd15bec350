"""Quality per cost in Compare: val loss at equal FLOPs / wall time (metrics/cost.py,
store.compare.add_equal_cost) against plain-Python interpolation written here, and the
Compare view's "Training FLOPs" x axis and summary columns."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from moe_studio.config.schema import ExperimentConfig, to_dict
from moe_studio.config.toml_io import dumps
from moe_studio.metrics.cost import at_equal_budget, common_budget, value_at
from moe_studio.store import RunWriter, open_run
from moe_studio.store import compare as C

T0 = 1_700_000_000.0
# (name, FLOPs per step, seconds per step, val-loss offset, steps)
RUNS = (("dense", 3.0e9, 0.5, 0.0, 40), ("moe", 1.0e9, 0.8, 0.2, 60))


def _val(step, off):
    return 4.0 / (1 + 0.05 * step) + off


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cost-runs")
    out = []
    for name, fps, sps, off, steps in RUNS:
        c = ExperimentConfig(name=name)
        w = RunWriter.create(d, name=name, config=to_dict(c), config_toml=dumps(c),
                             meta={"memory_footprint": {"total": 3 * 2 ** 20}})
        for s in range(1, steps + 1):
            w.add_scalars(s, {"cost/train_flops": fps * s, "elapsed_s": sps * s,
                              "tokens": 64.0 * s}, member=-1, wall_time=T0 + sps * s)
            w.add_scalars(s, {"train/loss": _val(s, off) + 0.1}, member=0, wall_time=T0 + sps * s)
            if s % 10 == 0:
                w.add_scalars(s, {"val/loss": _val(s, off)}, member=0, wall_time=T0 + sps * s)
        w.close("finished")
        out.append(Path(w.run_dir))
    return out


def _interp(xs, ys, at):
    """Linear interpolation written out: the segment that holds ``at``."""
    if at < xs[0] or at > xs[-1]:
        return math.nan
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= at <= x1:
            return y0 + (y1 - y0) * (at - x0) / (x1 - x0)
    return ys[-1]


def test_value_at_and_budget():
    assert value_at([1, 2, 4], [10, 20, 0], 3) == pytest.approx(10.0)
    assert math.isnan(value_at([1, 2], [1, 2], 0.5)) and math.isnan(value_at([], [], 1))
    assert common_budget([5.0, math.nan, 3.0]) == 3.0 and math.isnan(common_budget([]))
    b, vals = at_equal_budget([([0, 10], [1, 0]), ([0, 5, 20], [2, 1, 0])], [10, 20])
    assert b == 10 and vals == pytest.approx([0.0, 2 / 3])


def test_summary_equal_flops_and_time(runs):
    rows, scal = [], []
    for p in runs:
        with open_run(p) as r:
            s = C.by_name(C.latest_attempt(r.scalars()))
            rows.append(C.summary_row(s, r.meta, run=p.name))
            scal.append(s)
    C.add_equal_cost(rows, scal)
    budget_f = min(fps * steps for _, fps, _, _, steps in RUNS)   # dense: 1.2e11, moe: 6e10
    budget_t = min(sps * steps for _, _, sps, _, steps in RUNS)   # dense: 20 s, moe: 48 s
    for row, (_, fps, sps, off, steps) in zip(rows, RUNS):
        ev = list(range(10, steps + 1, 10))
        ys = [_val(s, off) for s in ev]
        exp_f = _interp([fps * s for s in ev], ys, budget_f)
        exp_t = _interp([sps * s for s in ev], ys, budget_t)
        for got, exp in ((row["val_at_equal_flops"], exp_f), (row["val_at_equal_time"], exp_t)):
            assert (math.isnan(got) and math.isnan(exp)) or got == pytest.approx(exp)
        assert row["train_flops"] == fps * steps
        assert row["memory_total"] == 3 * 2 ** 20
    # the dense run at the MoE run's final FLOPs (6e10 =
    # its step 20): an evaluation exists there
    assert rows[0]["val_at_equal_flops"] == pytest.approx(_val(20, 0.0))


def test_compare_view_flops_axis_and_columns(qtbot, runs):
    from moe_studio.gui.views.compare import CompareDashboard
    d = CompareDashboard()
    qtbot.addWidget(d)
    d.resize(1200, 800)
    d.show()
    d.set_runs(runs)
    d.set_x_mode("flops")
    x, y = d.plot("val").series_data("run:1")
    np.testing.assert_allclose(x, 1.0e9 * np.arange(10, 61, 10))
    np.testing.assert_allclose(y, [_val(s, 0.2) for s in range(10, 61, 10)])
    t = d.summary_table
    headers = [t.horizontalHeaderItem(c).text() for c in range(t.columnCount())]
    for h in ("Train FLOPs", "Val @ equal FLOPs", "Val @ equal time", "Step memory"):
        assert h in headers and not t.isColumnHidden(headers.index(h))
    col = headers.index("Val @ equal FLOPs")
    shown = {t.item(r, 0).text(): t.item(r, col).text() for r in range(t.rowCount())}
    assert any(v == f"{_val(20, 0.0):.4f}" for v in shown.values())
    d.close()


def test_cost_parts_and_training_status(qtbot, tmp_path):
    from moe_studio.engine.trainer import Trainer
    from moe_studio.gui.views.cost_text import cost_parts, si
    from moe_studio.gui.views.training import TrainingDashboard
    from tiny import tiny_config
    assert si(1.5e9, "FLOP") == "1.5 GFLOP" and si(12.0, "B") == "12 B"
    meta = {"flops_per_token": {"train_active": 3.0e6},
            "memory_footprint": {"total": 2 * 2 ** 20, "activations": 2 ** 19}}
    assert cost_parts(meta, 1000.0) == ["3 MFLOP/token", "3 GFLOP/s",
                                        "2.0 MiB/step (0.5 MiB activations)"]
    assert cost_parts({}, 5.0) == []
    tr = Trainer(tiny_config(train__steps=2, train__eval_every=100), tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    d = TrainingDashboard()
    qtbot.addWidget(d)
    d.show()
    d.set_runs([tr.run_dir])
    want = f"{si(tr.flops.train_active, 'FLOP')}/token"
    qtbot.waitUntil(lambda: want in d.cost_text(), timeout=10_000)
    assert "MiB/step" in d.cost_text() and "FLOP" not in d.status_text()
    from moe_studio.paths import sample_runs_dir
    d.set_runs([tr.run_dir, sample_runs_dir() / "moe-top2"])   # two runs: no single cost line
    qtbot.waitUntil(lambda: d.cost_text() == "", timeout=10_000)
    d.close()
