"""The Training view's throughput plot shows each rank of a distributed run (the
store's ``rank/<r>/tokens_per_s`` rows), so a straggler stands out."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from moe_studio.config.schema import ExperimentConfig, to_dict  # noqa: E402
from moe_studio.config.toml_io import dumps  # noqa: E402
from moe_studio.gui.views.training import TrainingDashboard, series_key  # noqa: E402
from moe_studio.store import RunWriter, open_run  # noqa: E402


@pytest.fixture
def dashboard(qtbot):
    d = TrainingDashboard()
    qtbot.addWidget(d)
    yield d
    d.stop_follow()
    d.set_runs([])


def write_run(tmp_path, ranks: int):
    cfg = ExperimentConfig()
    w = RunWriter.create(tmp_path, name=f"r{ranks}", config=to_dict(cfg), config_toml=dumps(cfg))
    try:
        for s in range(1, 11):
            values = {"tokens_per_s": 1000.0 * ranks, "tokens": 64.0 * s, "lr": 1e-3}
            for r in range(ranks if ranks > 1 else 0):
                # rank 1 is the straggler: half the pace of the others
                values[f"rank/{r}/tokens_per_s"] = 1000.0 / (2 if r == 1 else 1) + s
            w.add_scalars(s, values, member=-1)
            w.add_scalars(s, {"train/loss": 3.0 - 0.1 * s}, member=0)
    finally:
        w.close("finished")
    return w.run_dir


def test_each_rank_is_a_curve_of_the_throughput_plot(dashboard, tmp_path):
    path = write_run(tmp_path, ranks=3)
    dashboard.set_runs([path])
    plot = dashboard.plot("tokens_per_s")
    keys = {series_key(0, "tokens_per_s", -1)} | {series_key(0, f"rank/{r}/tokens_per_s", -1)
                                                  for r in range(3)}
    assert set(plot.series_keys()) == keys
    run = open_run(path)
    for r in range(3):
        name = f"rank/{r}/tokens_per_s"
        df = run.scalars([name], member=-1).sort_values("step")
        x, y = plot.series_data(series_key(0, name, -1))
        np.testing.assert_array_equal(x, df["step"].to_numpy(float))
        np.testing.assert_array_equal(y, df["value"].to_numpy(float))
        assert plot.series_label(series_key(0, name, -1)) == f"rank {r}"
    slow = plot.series_data(series_key(0, "rank/1/tokens_per_s", -1))[1]
    fast = plot.series_data(series_key(0, "rank/0/tokens_per_s", -1))[1]
    assert (slow < fast).all()
    run.close()


def test_one_process_shows_only_the_total(dashboard, tmp_path):
    dashboard.set_runs([write_run(tmp_path, ranks=1)])
    plot = dashboard.plot("tokens_per_s")
    assert plot.series_keys() == [series_key(0, "tokens_per_s", -1)]
    assert plot.series_label(series_key(0, "tokens_per_s", -1)) == "tokens/s"
