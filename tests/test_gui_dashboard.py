"""The live training dashboard and the runs panel, on real run stores written in the test."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from moe_studio.config.schema import ExperimentConfig, to_dict  # noqa: E402
from moe_studio.config.toml_io import dumps  # noqa: E402
from moe_studio.gui.panels.runs import (COL_NAME, COL_SETUP, COL_STATUS, PathRole,  # noqa: E402
                                       RunsPanel)
from moe_studio.gui.views.training import TrainingDashboard, series_key  # noqa: E402
from moe_studio.store import RunWriter, list_runs, open_run  # noqa: E402

TOKENS_PER_STEP = 96
T0 = 1_700_000_000.0


@pytest.fixture
def writers():
    """Writers made by a test; closed at teardown so no writer thread outlives it."""
    made: list[RunWriter] = []
    yield made
    for w in made:
        w.close("stopped")


def new_run(writers, runs_dir, name, members=1, steps=100, router="topk"):
    cfg = ExperimentConfig()
    cfg.name = name
    cfg.ensemble.members = members
    cfg.train.steps = steps
    cfg.moe.router = router
    w = RunWriter.create(runs_dir, name=name, config=to_dict(cfg), config_toml=dumps(cfg))
    writers.append(w)
    return w


def write_steps(w, steps, members, seed=0, eval_every=10):
    """What the trainer records per step (CONTRACTS.md), with made-up values."""
    rng = np.random.default_rng(seed + int(steps[0]))
    for s in steps:
        wall = T0 + 0.5 * s
        w.add_scalars(s, {"lr": 1e-3 * min(1, s / 10), "tokens_per_s": 5000 + rng.normal(),
                          "tokens": float(s * TOKENS_PER_STEP), "elapsed_s": 0.5 * s},
                      member=-1, wall_time=wall)
        for m in range(members):
            w.add_scalars(s, {"train/loss": 4.0 / (1 + 0.05 * s) + 0.1 * m + rng.normal(0, .01),
                              "train/aux_loss": 1.0 + rng.normal(0, .01),
                              "train/z_loss": 0.5 + 0.001 * s,
                              "train/grad_norm": 1.0, "moe/L0/entropy": 1.5},
                          member=m, wall_time=wall)
            if s % eval_every == 0:
                w.add_scalars(s, {"val/loss": 4.2 / (1 + 0.05 * s) + 0.1 * m}, member=m,
                              wall_time=wall)
        if members > 1 and s % eval_every == 0:
            w.add_scalars(s, {"val/loss": 4.0 / (1 + 0.05 * s)}, member=-1, wall_time=wall)
    w.flush()


def store_series(path, name, member):
    df = open_run(path).scalars([name], member=member).sort_values("step")
    return df["step"].to_numpy(float), df["value"].to_numpy(float), df["wall_time"].to_numpy(float)


def assert_matches_store(dash, path, run_index=0, members=(0, 1)):
    """Every plotted series equals the store's rows for that name and member."""
    for plot_key, name, ms in (("loss", "train/loss", members), ("loss", "val/loss", members),
                               ("aux", "train/aux_loss", members),
                               ("z", "train/z_loss", members), ("lr", "lr", (-1,)),
                               ("tokens_per_s", "tokens_per_s", (-1,))):
        for m in ms:
            sx, sy, _ = store_series(path, name, m)
            x, y = dash.plot(plot_key).series_data(series_key(run_index, name, m))
            np.testing.assert_array_equal(x, sx)
            np.testing.assert_array_equal(y, sy)


@pytest.fixture
def dashboard(qtbot):
    d = TrainingDashboard()
    qtbot.addWidget(d)
    d.resize(1000, 700)
    yield d
    d.stop_follow()


def test_dashboard_follows_a_growing_two_member_run(dashboard, writers, tmp_path):
    w = new_run(writers, tmp_path, "ens", members=2, steps=60)
    write_steps(w, range(1, 21), members=2)
    dashboard.set_runs([w.run_dir])
    loss = dashboard.plot("loss")
    keys = set(loss.series_keys())
    assert keys == {series_key(0, "train/loss", 0), series_key(0, "train/loss", 1),
                    series_key(0, "val/loss", 0), series_key(0, "val/loss", 1),
                    series_key(0, "val/loss", -1)}
    assert loss.series_label(series_key(0, "val/loss", -1)) == "val ensemble"
    assert loss.series_label(series_key(0, "train/loss", 1)) == "train m1"
    assert_matches_store(dashboard, w.run_dir)
    items = {k: loss.curve(k) for k in keys}

    # The run grows: refresh appends only the new rows, into the same plot items.
    write_steps(w, range(21, 41), members=2)
    assert dashboard.refresh() is True
    assert_matches_store(dashboard, w.run_dir)
    assert all(loss.curve(k) is item for k, item in items.items())
    assert len(loss.series_data(series_key(0, "train/loss", 0))[0]) == 40
    assert dashboard.refresh() is False   # nothing new: nothing to do
    assert "step 40 / 60" in dashboard.status_text()
    assert "running" in dashboard.status_text()

    w.close("finished")
    assert dashboard.refresh() is True
    assert "finished" in dashboard.status_text()


def test_dashboard_x_axis_by_tokens_and_wall_time(dashboard, writers, tmp_path):
    w = new_run(writers, tmp_path, "one", members=2)
    write_steps(w, range(1, 31), members=2)
    dashboard.set_runs([w.run_dir])
    dashboard.set_x_mode("tokens")
    assert dashboard.plot("loss").x_label() == "tokens"
    run = open_run(w.run_dir)
    tok = run.scalars(["tokens"], member=-1).set_index("step")["value"]
    for name, m in (("train/loss", 1), ("val/loss", 0), ("val/loss", -1), ("lr", -1)):
        plot = dashboard.plot({"train/loss": "loss", "val/loss": "loss", "lr": "lr"}[name])
        x, y = plot.series_data(series_key(0, name, m))
        steps, values, _ = store_series(w.run_dir, name, m)
        np.testing.assert_array_equal(x, tok.loc[steps.astype(int)].to_numpy())
        np.testing.assert_array_equal(y, values)
    # New rows keep the tokens join.
    write_steps(w, range(31, 41), members=2)
    dashboard.refresh()
    x, _ = dashboard.plot("loss").series_data(series_key(0, "train/loss", 0))
    np.testing.assert_array_equal(x, np.arange(1, 41) * TOKENS_PER_STEP)

    dashboard.set_x_mode("wall")
    x, _ = dashboard.plot("aux").series_data(series_key(0, "train/aux_loss", 1))
    _, _, wall = store_series(w.run_dir, "train/aux_loss", 1)
    first = run.scalars()["wall_time"].min()
    np.testing.assert_allclose(x, wall - first)
    assert x[0] == pytest.approx(0.0)
    assert dashboard.plot("aux").x_format() == "duration"
    with pytest.raises(ValueError):
        dashboard.set_x_mode("epochs")


def test_dashboard_controls(dashboard, writers, tmp_path):
    w = new_run(writers, tmp_path, "one")
    write_steps(w, range(1, 31), members=1)
    dashboard.set_runs([w.run_dir])
    loss = dashboard.plot("loss")
    # One model: train and val in different colours, plain labels.
    assert loss.series_label(series_key(0, "train/loss", 0)) == "train"
    assert loss.series_label(series_key(0, "val/loss", 0)) == "val"
    assert dashboard.smoothing() == pytest.approx(0.6)
    dashboard.set_smoothing(0.9)
    assert all(p.smoothing() == pytest.approx(0.9) for p in dashboard.plots().values())
    assert any(label.text() == "0.90" for label in dashboard.findChildren(QLabel))
    dashboard.set_log_y(True)
    assert loss.log_y() and dashboard.plot("lr").log_y()
    assert not dashboard.plot("tokens_per_s").log_y()


def test_dashboard_follow_timer_and_overlay(dashboard, writers, tmp_path, qtbot):
    a = new_run(writers, tmp_path, "run-a")
    b = new_run(writers, tmp_path, "run-b", members=2)
    write_steps(a, range(1, 11), members=1)
    write_steps(b, range(1, 21), members=2, seed=5)
    dashboard.set_runs([a.run_dir, b.run_dir])
    loss = dashboard.plot("loss")
    ka, kb = series_key(0, "train/loss", 0), series_key(1, "train/loss", 1)
    assert loss.series_label(ka) == "run-a · train"
    assert loss.series_label(kb) == "run-b · train m1"
    # A stable colour per run; the members of a run are shades of it.
    assert loss._series[ka].color == (0, 0) and loss._series[kb].color == (1, 1)
    assert_matches_store(dashboard, a.run_dir, run_index=0, members=(0,))
    assert_matches_store(dashboard, b.run_dir, run_index=1, members=(0, 1))
    assert "2 runs" in dashboard.status_text()

    dashboard.start_follow()
    assert dashboard.is_following()
    write_steps(a, range(11, 26), members=1)
    qtbot.waitUntil(lambda: len(loss.series_data(ka)[0]) == 25, timeout=3000)
    # The timer redraws one plot per frame: the others follow within a few frames.
    qtbot.waitUntil(lambda: assert_matches_store(dashboard, a.run_dir, run_index=0,
                                                 members=(0,)), timeout=3000)
    dashboard.stop_follow()
    assert not dashboard.is_following()

    # Back to one run: the overlay's series are gone.
    dashboard.set_runs([a.run_dir])
    assert all(k.startswith("0|") for k in loss.series_keys())


def test_dashboard_pauses_while_hidden_and_close_stops_the_timer(qtbot, writers, tmp_path):
    w = new_run(writers, tmp_path, "one")
    write_steps(w, range(1, 5), members=1)
    d = TrainingDashboard()
    qtbot.addWidget(d)
    d.set_runs([w.run_dir])
    d.show()
    d.start_follow()
    assert d._follow.is_active()
    d.hide()                      # e.g. another tab is in front: no polling meanwhile
    assert d.is_following() and not d._follow.is_active()
    write_steps(w, range(5, 9), members=1)
    d.show()                      # catches up at once, then follows again
    assert d._follow.is_active()
    assert len(d.plot("loss").series_data(series_key(0, "train/loss", 0))[0]) == 8
    d.close()
    assert not d.is_following() and not d._follow.is_active()


def test_dashboard_reports_an_unreadable_run(dashboard, tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "run.sqlite").write_bytes(b"garbage" * 100)
    dashboard.set_runs([bad])
    assert dashboard.runs() == []
    assert "broken" in dashboard.status_text()
    assert dashboard.refresh() is False


# ---------------------------------------------------------------------- runs panel
@pytest.fixture
def run_dirs(tmp_path, writers):
    runs, samples = tmp_path / "runs", tmp_path / "samples"
    done = new_run(writers, runs, "done-run", steps=20)
    write_steps(done, range(1, 21), members=1)
    done.close("finished")
    failed = new_run(writers, runs, "failed-run", steps=50, router="soft")
    write_steps(failed, range(1, 6), members=1)
    failed.close("failed", error="RuntimeError: boom")
    live = new_run(writers, runs, "live-run", members=2, steps=100)
    write_steps(live, range(1, 11), members=2)
    broken = runs / "20200101-000000-broken"
    broken.mkdir()
    (broken / "run.sqlite").write_bytes(b"this is not an sqlite file" * 40)
    sample = new_run(writers, samples, "sample-run", steps=10)
    write_steps(sample, range(1, 11), members=1)
    sample.close("finished")
    return {"runs": runs, "samples": samples, "done": done, "failed": failed, "live": live,
            "broken": broken, "sample": sample}


@pytest.fixture
def panel(qtbot, run_dirs):
    p = RunsPanel([run_dirs["runs"], run_dirs["samples"]], auto_rescan=False)
    qtbot.addWidget(p)
    p.resize(1000, 500)
    yield p
    p.shutdown()


def _row_of(panel, path):
    idx = panel._proxy_index(str(path))
    assert idx.isValid(), path
    return idx


def test_runs_panel_lists_runs_with_status_and_errors(panel, run_dirs):
    by_name = {(r.name or r.path.name): r for r in panel.runs(0)}
    assert set(by_name) == {"done-run", "failed-run", "live-run", run_dirs["broken"].name}
    assert [r.name for r in panel.runs(1)] == ["sample-run"]
    status = {n: _row_of(panel, r.path).siblingAtColumn(COL_STATUS).data()
              for n, r in by_name.items()}
    assert status == {"done-run": "finished", "failed-run": "failed", "live-run": "running",
                      run_dirs["broken"].name: "unreadable"}
    # Status colours: running green, failed red; finished in the ordinary text colour.
    color = lambda n: _row_of(panel, by_name[n].path).siblingAtColumn(COL_STATUS).data(  # noqa
        Qt.ItemDataRole.ForegroundRole)
    assert color("live-run").name() == "#1e8e3e"
    assert color("failed-run").name() == "#c62828"
    assert color("done-run") is None
    setup = _row_of(panel, by_name["live-run"].path).siblingAtColumn(COL_SETUP).data()
    assert "topk k2" in setup and "8 experts" in setup and "2 members" in setup
    # The broken folder is listed, greyed (not enabled), with the store's error as tip.
    bad = _row_of(panel, run_dirs["broken"])
    expected = next(i.error for i in list_runs(run_dirs["runs"]) if i.error)
    assert bad.data(Qt.ItemDataRole.ToolTipRole) == expected
    assert not bad.flags() & Qt.ItemFlag.ItemIsEnabled
    assert not bad.flags() & Qt.ItemFlag.ItemIsUserCheckable


def test_runs_panel_check_open_and_rescan_keep_state(panel, run_dirs, writers, qtbot):
    checked = []
    panel.runsChecked.connect(checked.append)
    done, live = str(run_dirs["done"].run_dir), str(run_dirs["live"].run_dir)
    model = panel.view().model()
    model.setData(_row_of(panel, done), Qt.CheckState.Checked.value,
                  Qt.ItemDataRole.CheckStateRole)
    model.setData(_row_of(panel, live), Qt.CheckState.Checked.value,
                  Qt.ItemDataRole.CheckStateRole)
    assert checked[-1] == [done, live]
    assert panel.checked_runs() == [done, live]
    # The broken run cannot be checked.
    assert not model.setData(_row_of(panel, run_dirs["broken"]), Qt.CheckState.Checked.value,
                             Qt.ItemDataRole.CheckStateRole)

    opened = []
    panel.runOpened.connect(opened.append)
    view = panel.view()
    view.setCurrentIndex(_row_of(panel, done))
    qtbot.keyClick(view, Qt.Key.Key_Return)
    assert opened == [done]
    view.activated.emit(_row_of(panel, run_dirs["broken"]))
    assert opened == [done]   # unreadable runs do not open

    # A new run appears and the live one finishes: rescan updates rows in place.
    view.setCurrentIndex(_row_of(panel, live))
    new = new_run(writers, run_dirs["runs"], "new-run", steps=5)
    write_steps(new, range(1, 6), members=1)
    new.close("finished")
    write_steps(run_dirs["live"], range(11, 21), members=2)
    run_dirs["live"].close("finished")
    panel.rescan()
    names = {r.name for r in panel.runs(0)}
    assert "new-run" in names
    assert _row_of(panel, live).siblingAtColumn(COL_STATUS).data() == "finished"
    assert panel.checked_runs() == [done, live]
    assert view.currentIndex().siblingAtColumn(COL_NAME).data(PathRole) == live
    assert panel.selected_runs() == [live]

    model.setData(_row_of(panel, done), Qt.CheckState.Unchecked.value,
                  Qt.ItemDataRole.CheckStateRole)
    assert checked[-1] == [live]


def test_runs_panel_filter(panel, run_dirs):
    proxy = panel.view().model()
    runs_section = proxy.index(0, 0)
    assert proxy.rowCount(runs_section) == 4
    panel.set_filter("soft")
    assert proxy.rowCount(runs_section) == 1
    assert proxy.index(0, 0, runs_section).data() == "failed-run"
    assert proxy.rowCount() == 2   # both sections stay
    panel.set_filter("run finished")
    assert proxy.rowCount(runs_section) == 1 and proxy.rowCount(proxy.index(1, 0)) == 1
    panel.set_filter("")
    assert proxy.rowCount(runs_section) == 4


def test_runs_panel_auto_rescan_in_background(qtbot, run_dirs, writers):
    p = RunsPanel([run_dirs["runs"], run_dirs["samples"]], auto_rescan=False)
    qtbot.addWidget(p)
    p.set_auto_rescan(True, interval_ms=50)
    assert p.auto_rescan()
    new = new_run(writers, run_dirs["runs"], "headless-run", steps=5)
    write_steps(new, range(1, 3), members=1)
    qtbot.waitUntil(lambda: any(r.name == "headless-run" for r in p.runs(0)), timeout=5000)
    row = lambda: p._proxy_index(str(new.run_dir))  # noqa: E731
    assert row().siblingAtColumn(COL_STATUS).data() == "running"
    new.close("finished")
    qtbot.waitUntil(lambda: row().siblingAtColumn(COL_STATUS).data() == "finished",
                    timeout=5000)
    p.show()
    p.hide()
    assert p.auto_rescan() and not p._timer.isActive()   # paused while hidden
    p.show()
    assert p._timer.isActive()
    p.close()
    assert not p.auto_rescan() and not p._timer.isActive()


def test_runs_panel_missing_folder(qtbot, tmp_path):
    p = RunsPanel([tmp_path / "nope"], auto_rescan=False)
    qtbot.addWidget(p)
    assert p.runs() == []
    assert "none yet" in p.view().model().index(0, 0).data()


def test_setup_summary_names_dense_models_and_ensembles(tmp_path):
    from moe_studio.gui.panels.runs_model import setup_summary
    from moe_studio.store import RunInfo
    dense = RunInfo(path=tmp_path, run_id="d", router="topk", n_experts=8, top_k=2,
                    precision="fp32", members=1, moe_layers="none")
    assert setup_summary(dense) == "dense · fp32"
    moe = RunInfo(path=tmp_path, run_id="m", router="topk", n_experts=8, top_k=2,
                  precision="bf16", members=4, moe_layers="all")
    assert setup_summary(moe) == "topk k2 · 8 experts · bf16 · 4 members"


def test_empty_dashboard_says_what_to_do(qtbot):
    from moe_studio.gui.views.training import EMPTY_HINT
    d = TrainingDashboard()
    qtbot.addWidget(d)
    d.set_runs([])
    assert d.plot("loss").placeholder() == EMPTY_HINT
    assert "Train" in EMPTY_HINT


def test_dense_run_draws_no_routing_losses(dashboard):
    """A dense model logs aux and z losses of 0: the view says there is no router
    instead of drawing flat lines; beside an MoE run it draws only the MoE run's."""
    from moe_studio.gui.views.training import DENSE_HINT
    from moe_studio.paths import sample_runs_dir

    dense, moe = sample_runs_dir() / "dense-baseline", sample_runs_dir() / "moe-top2"
    dashboard.set_runs([dense])
    assert dashboard.plot("loss").series_keys()
    for key in ("aux", "z"):
        assert dashboard.plot(key).series_keys() == []
        assert dashboard.plot(key).placeholder() == DENSE_HINT
    assert dashboard.plot("lr").placeholder() == ""
    dashboard.set_runs([dense, moe])
    for key in ("aux", "z"):
        keys = dashboard.plot(key).series_keys()
        assert keys and all(k.startswith("1|") for k in keys), keys   # the MoE run only
        assert dashboard.plot(key).placeholder() == ""


def _per_layer_aux(path):
    """The run's per-layer load-balancing series and, at a step where they were all
    recorded, the total aux loss and their sum."""
    r = open_run(path)
    names = sorted(n for n in r.scalar_names() if n.startswith("moe/L") and n.endswith("/aux_loss"))
    df = r.scalars(["train/aux_loss"] + names, member=0)
    step = df[df["name"] == names[0]]["step"].iloc[-1]
    at = df[df["step"] == step]
    return names, float(at[at["name"] == "train/aux_loss"]["value"].iloc[0]), \
        float(at[at["name"].isin(names)]["value"].sum())


def test_the_aux_plot_marks_the_balanced_value_of_its_layers(dashboard, qtbot):
    """The recorded load-balancing loss is the sum over the MoE layers (checked against
    the per-layer series), each 1 when balanced: the plot draws a dotted line at the
    number of layers, on a log axis too, and none where the runs shown disagree."""
    import math

    from moe_studio.paths import sample_runs_dir

    runs = sample_runs_dir()
    top2, two_layer, dense = runs / "moe-top2", runs / "fp16-overflow", runs / "dense-baseline"
    names, total, layer_sum = _per_layer_aux(top2)
    assert len(names) == 4 and total == pytest.approx(layer_sum, rel=1e-6)
    dashboard.set_runs([top2])
    dashboard.show()
    qtbot.waitExposed(dashboard)
    y, label = dashboard.balanced_line()
    assert y == len(names) and label == "balanced: 4"
    ys = dashboard.plot("aux").series_data(series_key(0, "train/aux_loss", 0))[1]
    assert ys.min() >= 0.95 * y        # top-k routing keeps it about at or over the line
    qtbot.mouseClick(dashboard._log_check, Qt.MouseButton.LeftButton)
    assert dashboard.balanced_line()[0] == pytest.approx(math.log10(4))
    qtbot.mouseClick(dashboard._log_check, Qt.MouseButton.LeftButton)
    assert dashboard.balanced_line()[0] == 4
    assert not dashboard.plot("aux").line_labels_clipped()

    dashboard.set_runs([dense, top2])          # the dense run adds no routing loss
    assert dashboard.balanced_line()[0] == 4
    dashboard.set_runs([two_layer, top2])      # 2 and 4 layers: no one line
    assert dashboard.balanced_line() is None
    dashboard.set_runs([dense])
    assert dashboard.balanced_line() is None
