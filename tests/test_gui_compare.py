"""The Compare dashboard on run stores written in the test: grouped means and bands
against pandas, the config diff against the configs, the summary against the store
records, CSV export, hiding a run, resumed runs, live follow, side by side, the report
with two runs and ``bench compare --quick``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from moe_studio.config.schema import ExperimentConfig, to_dict  # noqa: E402
from moe_studio.config.toml_io import dumps  # noqa: E402
from moe_studio.gui.views.compare import CompareDashboard  # noqa: E402
from moe_studio.paths import sample_runs_dir  # noqa: E402
from moe_studio.store import RunWriter, open_run  # noqa: E402

T0 = 1_700_000_000.0
STEPS = range(2, 61, 2)
# (name, router, top_k, seed)
SETUPS = (("a-topk2", "topk", 2, 0), ("b-topk1", "topk", 1, 1),
          ("c-soft2", "soft", 2, 2), ("d-soft1", "soft", 1, 3))


def _config(name, router, k, seed) -> ExperimentConfig:
    c = ExperimentConfig(name=name)
    c.moe.router, c.moe.top_k, c.train.seed = router, k, seed
    return c


def _write(w: RunWriter, steps, seed: int, offset: float = 0.0, t0: float = T0) -> None:
    rng = np.random.default_rng(seed)
    for s in steps:
        wall = t0 + 0.5 * s
        w.add_scalars(s, {"tokens": 64.0 * s, "tokens_per_s": 1000 + 10 * seed + rng.normal()},
                      member=-1, wall_time=wall)
        w.add_scalars(s, {"train/loss": 4 / (1 + 0.05 * s) + 0.1 * seed + offset,
                          "moe/L0/load_cv": 0.2 + 0.01 * seed + 0.001 * s,
                          "moe/L1/load_cv": 0.4 + rng.random() * 0.01,
                          "moe/L0/load_max_over_mean": 1.5, "moe/L1/load_max_over_mean": 1.7,
                          "moe/L0/dropped_frac": 0.01 * seed, "moe/L1/dropped_frac": 0.0},
                      member=0, wall_time=wall)
        if s % 10 == 0:
            w.add_scalars(s, {"val/loss": 4.2 / (1 + 0.05 * s) + 0.1 * seed + offset},
                          member=0, wall_time=wall)
        if seed == 3:
            w.add_scalars(s, {"precision/skipped": float(s % 20 == 0)}, member=0, wall_time=wall)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("compare-runs")
    out = []
    for name, router, k, seed in SETUPS:
        c = _config(name, router, k, seed)
        w = RunWriter.create(d, name=name, config=to_dict(c), config_toml=dumps(c),
                             meta={"params_total": 1000 * (seed + 1), "params_active": 500})
        _write(w, STEPS, seed, t0=T0 + 100 * seed)
        w.close("finished")
        out.append(Path(w.run_dir))
    return out


@pytest.fixture
def dash(qtbot):
    d = CompareDashboard()
    qtbot.addWidget(d)
    d.resize(1200, 800)
    d.show()
    return d


def _scalars(path: Path) -> pd.DataFrame:
    with open_run(path) as r:
        return r.scalars()


def test_fewer_than_two_runs_explain_how_to_pick_them(dash, runs):
    dash.set_runs([])
    assert dash.stack.currentIndex() == 0 and dash.hint.isVisible()
    assert "Runs panel" in dash.hint.text()
    dash.set_runs(runs[:1])
    assert dash.stack.currentIndex() == 0 and not dash._bar.isVisible()
    dash.set_runs(runs[:2])
    assert dash.stack.currentWidget() is dash.tabs


def test_an_unreadable_run_is_named_not_fatal(dash, runs, tmp_path):
    dash.set_runs([runs[0], tmp_path / "gone"])
    assert dash.runs() == [runs[0]]
    assert "gone" in dash.hint.text() and "not found" in dash.hint.text()


def test_overlay_one_stable_colour_per_run(dash, runs):
    dash.set_runs(runs)
    plot = dash.plot("train")
    assert plot.series_keys() == [f"run:{i}" for i in range(4)]
    for i, path in enumerate(runs):
        df = _scalars(path)
        loss = df[df["name"] == "train/loss"]
        x, y = plot.series_data(f"run:{i}")
        np.testing.assert_array_equal(x, loss["step"])
        np.testing.assert_allclose(y, loss["value"])
        # the same colour index in every plot, the legend and the summary table
        for p in dash.grid.plots().values():
            if f"run:{i}" in p.series_keys():
                assert p._series[f"run:{i}"].color == i
        assert dash.legend.item(i).text() == SETUPS[i][0]
    assert dash.summary_table.item(0, 0).text() == SETUPS[0][0]


def test_grouped_means_and_bands_match_pandas(dash, runs):
    dash.set_runs(runs)
    assert set(dash.group_keys()) == {"moe.router", "moe.top_k", "train.seed"}
    dash.set_group_by("moe.router")
    frames = []
    for path, (_, router, _, _) in zip(runs, SETUPS):
        df = _scalars(path)
        frames.append(df[df["name"] == "train/loss"].assign(router=router))
    ref = pd.concat(frames).groupby(["router", "step"])["value"]
    plot = dash.plot("train")
    assert sorted(plot.series_keys()) == ["group:soft", "group:topk"]
    for router in ("topk", "soft"):
        x, mean = plot.series_data(f"group:{router}")
        np.testing.assert_array_equal(x, ref.mean().loc[router].index)
        np.testing.assert_allclose(mean, ref.mean().loc[router])
        bx, lo, hi = plot.band_data(f"group:{router}")
        np.testing.assert_allclose(lo, ref.min().loc[router])
        np.testing.assert_allclose(hi, ref.max().loc[router])
    dash.set_band("std")
    bx, lo, hi = plot.band_data("group:topk")
    std = ref.std(ddof=0).loc["topk"].to_numpy()
    np.testing.assert_allclose(hi - lo, 2 * std, atol=1e-12)
    with pytest.raises(ValueError, match="band must be one of"):
        dash.set_band("quartiles")
    assert dash.band_combo.currentData() == "std"
    assert [dash.legend.item(i).text() for i in range(2)] == ["router = topk  (2 runs)",
                                                               "router = soft  (2 runs)"]
    dash.set_group_by(None)
    assert sorted(plot.series_keys()) == [f"run:{i}" for i in range(4)]


def test_x_axis_tokens_wall_and_relative(dash, runs):
    dash.set_runs(runs[:2])
    dash.set_x_mode("tokens")
    x, _ = dash.plot("train").series_data("run:1")
    np.testing.assert_allclose(x, 64.0 * np.array(STEPS))
    dash.set_x_mode("relative")
    for k in ("run:0", "run:1"):
        assert dash.plot("train").series_data(k)[0][0] == 0.0
    dash.set_x_mode("wall")
    x0 = dash.plot("train").series_data("run:0")[0]
    x1 = dash.plot("train").series_data("run:1")[0]
    assert x0[0] == 0.0 and x1[0] == pytest.approx(100.0)   # run b started 100 s later
    assert dash.plot("train").x_format() == "duration"


def test_config_diff_table_highlights_what_differs(dash, runs):
    dash.set_runs(runs)
    t = dash.diff_table
    keys = [t.verticalHeaderItem(r).text() for r in range(t.rowCount())]
    assert sorted(keys) == ["moe.router", "moe.top_k", "train.seed"]   # in config order
    cfgs = [to_dict(_config(*s)) for s in SETUPS]
    for r, key in enumerate(keys):
        sec, k = key.split(".")
        for c in range(4):
            item = t.item(r, c)
            assert item.text() == str(cfgs[c][sec][k])
            differs = cfgs[c][sec][k] != cfgs[0][sec][k]
            assert item.font().bold() == differs
    assert [t.horizontalHeaderItem(c).text() for c in range(4)] == [s[0] for s in SETUPS]


def test_summary_table_values_sorting_and_csv(dash, runs, tmp_path):
    dash.set_runs(runs)
    rows = dash.summary_rows()
    for row, path in zip(rows, runs):
        df = _scalars(path)
        val = df[df["name"] == "val/loss"].sort_values("step")["value"]
        assert row["final_val_loss"] == pytest.approx(val.iloc[-1])
        assert row["best_val_loss"] == pytest.approx(val.min())
        tps = df[df["name"] == "tokens_per_s"]["value"]
        assert row["tokens_per_s"] == pytest.approx(tps.median())
        cv = df[df["name"].isin(["moe/L0/load_cv", "moe/L1/load_cv"])]
        assert row["load_cv"] == pytest.approx(cv[cv["step"] == 60]["value"].mean())
        with open_run(path) as r:
            assert row["params_total"] == r.meta["params_total"]
    assert rows[3]["skipped_steps"] == 3 and np.isnan(rows[0]["skipped_steps"])
    t = dash.summary_table
    headers = [t.horizontalHeaderItem(c).text() for c in range(t.columnCount())]
    col = headers.index("Final val loss")
    assert t.item(0, col).text() == f"{rows[0]['final_val_loss']:.4f}"
    assert t.isColumnHidden(headers.index("Ens. gain"))   # no run has an ensemble
    t.sortByColumn(headers.index("Params"), Qt.SortOrder.DescendingOrder)
    assert [t.item(r, 0).text() for r in range(4)] == [s[0] for s in reversed(SETUPS)]

    out = dash.export_summary_csv(tmp_path / "summary.csv")
    csv = pd.read_csv(out)
    assert list(csv["Run"]) == [s[0] for s in reversed(SETUPS)]     # as sorted on screen
    np.testing.assert_allclose(csv["Final val loss"],
                               [r["final_val_loss"] for r in reversed(rows)])
    assert "Ens. gain" in csv.columns and csv["Ens. gain"].isna().all()


def test_legend_hides_a_run_in_every_plot(dash, runs):
    dash.set_runs(runs[:3])
    item = dash.legend.item(1)
    item.setCheckState(Qt.CheckState.Unchecked)          # as a click on its box does
    for key, plot in dash.grid.plots().items():
        if "run:1" in plot.series_keys():
            assert not plot.is_series_visible("run:1"), key
            assert plot.is_series_visible("run:0")
    dash.set_smoothing(0.3)                              # a redraw keeps it hidden
    dash.set_metric("moe/L*/load_cv")
    assert not dash.plot("metric").is_series_visible("run:1")
    dash.set_key_visible("run:1", True)
    assert dash.plot("train").is_series_visible("run:1")
    dash.set_group_by("moe.top_k")
    dash.set_key_visible("group:1", False)
    assert not dash.plot("val").is_series_visible("group:1")
    assert dash.plot("val").band_data("group:1") is None    # one run: no band


def test_resumed_run_draws_no_zig_zag(dash, runs, tmp_path):
    c = _config("resumed", "topk", 2, 9)
    w = RunWriter.create(tmp_path, name="resumed", config=to_dict(c), config_toml=dumps(c))
    _write(w, range(2, 41, 2), 0)                       # attempt 1: steps 2..40
    w.close("stopped")
    w = RunWriter.reopen(w.run_dir)                      # restart from the step-20 checkpoint
    _write(w, range(22, 61, 2), 0, offset=1.0, t0=T0 + 1000)
    w.close("finished")
    raw = _scalars(w.run_dir)
    assert (raw["name"] == "train/loss").sum() == 20 + 20   # the store keeps both attempts
    dash.set_runs([runs[0], w.run_dir])
    x, y = dash.plot("train").series_data("run:1")
    assert (np.diff(x) > 0).all()
    np.testing.assert_array_equal(x, np.arange(2, 61, 2))
    loss = raw[raw["name"] == "train/loss"]
    second = loss[loss["wall_time"] >= T0 + 1000].set_index("step")["value"]
    np.testing.assert_allclose(y[x >= 22], second.loc[x[x >= 22]])    # the last attempt's
    for mode in ("wall", "relative", "tokens"):
        dash.set_x_mode(mode)
        assert (np.diff(dash.plot("train").series_data("run:1")[0]) > 0).all(), mode


def test_follows_a_growing_run(dash, runs, tmp_path):
    c = _config("live", "topk", 2, 5)
    w = RunWriter.create(tmp_path, name="live", config=to_dict(c), config_toml=dumps(c))
    try:
        _write(w, range(2, 21, 2), 5)
        w.flush()
        dash.set_runs([runs[0], w.run_dir])
        assert dash.plot("train").series_data("run:1")[0][-1] == 20
        dash.start_follow()
        assert dash._follow.is_active()
        dash.hide()                                      # another tab: polling pauses
        assert not dash._follow.is_active() and dash.is_following()
        dash.show()
        assert dash._follow.is_active()
        _write(w, range(22, 31, 2), 5)
        w.flush()
        assert dash.refresh()
        assert dash.plot("train").series_data("run:1")[0][-1] == 30
        assert "1 running" in dash.status_text()
    finally:
        dash.stop_follow()
        w.close("finished")
    assert not dash._follow.is_active()


def test_side_by_side_aligns_both_views_to_their_nearest_step(dash):
    sample = sample_runs_dir()
    paths = [sample / "moe-top2", sample / "switch-top1"]
    if not all((p / "run.sqlite").exists() for p in paths):
        pytest.skip("sample runs not present")
    dash.set_runs(paths)
    dash.tabs.setCurrentIndex(1)
    dash.set_pair(0, 1, "Routing")
    left, right = dash.pair()
    assert left.runs() == [paths[0]] and right.runs() == [paths[1]]
    union = dash.pair_controls.steps()
    assert set(left.controls.steps()) <= set(union)
    target = int(union[len(union) // 3]) + 1
    dash.pair_controls.set_step(target)
    for v in (left, right):
        steps = v.controls.steps()
        assert v.controls.step() == steps[np.argmin(np.abs(steps - dash.pair_controls.step()))]
    dash.set_pair(1, 0, "Experts")
    left, right = dash.pair()
    assert type(left).__name__ == "ExpertsDashboard" and left.runs() == [paths[1]]


def test_report_with_two_runs_and_without_compare_for_one(qapp, runs, tmp_path, monkeypatch):
    from moe_studio.cli import main as cli_main
    from moe_studio.gui import main_window
    from moe_studio.gui.commands import report as report_cli
    out = tmp_path / "compare.png"
    assert cli_main(["report", str(runs[0]), str(runs[1]), "--out", str(out), "--width", "900",
                     "--tabs", "Compare"]) == 0
    from PySide6.QtGui import QImage
    img = QImage(str(out))
    assert img.width() == 900 and img.height() > 600
    monkeypatch.setattr(main_window, "DASHBOARDS", [
        ("Compare", "moe_studio.gui.views.compare:CompareDashboard")])
    assert report_cli.render_dashboards([runs[0]], 800) == []
    titles = [t for t, pm, err in report_cli.render_dashboards(runs[:2], 800)]
    assert titles == ["Compare"]


def test_bench_compare_quick_keys(qapp, capsys):
    import json

    from moe_studio.cli import main as cli_main
    assert cli_main(["bench", "compare", "--json", "--quick"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("runs", "open_s", "open_cpu_s", "open_ok", "pan_zoom_fps_overlay",
                "pan_zoom_fps_overlay_cpu", "pan_zoom_fps_grouped",
                "pan_zoom_fps_grouped_cpu", "fps_ok", "groups", "load_average"):
        assert key in res, key
    assert res["runs"] == 6 and res["groups"] == 4 and res["open_s"] > 0


def test_grouping_by_every_differing_key_at_once(qtbot):
    """A sweep's grid points: the runs that agree on every differing key but the seed
    form one group, named by those values (counted here from the configs directly)."""
    from moe_studio.paths import sample_runs_dir
    from moe_studio.store import open_run
    runs = sorted(p for p in sample_runs_dir().glob("sweep-topk-aux-*") if (p / "run.sqlite").exists())
    if len(runs) != 4:
        pytest.skip("sample sweep not present")
    dash = CompareDashboard()
    qtbot.addWidget(dash)
    dash.set_runs(runs)
    combined = [k for k in dash.group_choices() if " + " in k]
    assert len(combined) == 1 and set(combined[0].split(" + ")) == {"moe.top_k", "moe.aux_loss_coef"}
    assert combined[0] not in dash.group_keys()      # the single keys stay as they were
    dash.show()
    qtbot.waitExposed(dash)
    combo = dash.group_combo        # chosen as a person does: the last entry, by keyboard
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_End)
    assert combo.currentText() == "all 2 keys at once" and dash.group_by() == combined[0]
    expected: dict[tuple, list[int]] = {}
    for i, p in enumerate(runs):
        with open_run(p) as r:
            moe = r.config["moe"]
        expected.setdefault((moe["top_k"], moe["aux_loss_coef"]), []).append(i)
    got = {label: idx for label, idx in dash.groups()}
    assert sorted(got.values()) == sorted(expected.values())
    for (k, a), idx in expected.items():
        assert got[f"top_k={k}, aux_loss_coef={a:g}"] == idx


def test_the_chosen_scalars_plot_is_titled_as_the_training_view_titles_it(dash, qtbot):
    """The fourth plot starts on tokens/s, titled as the Training view titles it (it was
    "tokens_per_s" since that plot also draws each rank's series); picking another
    scalar in the combo, as a user does, titles the plot by that scalar."""
    from PySide6.QtCore import Qt

    from moe_studio.gui.views.training import PLOTS as TRAINING
    from moe_studio.paths import sample_runs_dir

    dash.set_runs([sample_runs_dir() / "moe-top2", sample_runs_dir() / "switch-top1"])
    combo = dash.metric_combo
    assert combo.findData("lr") >= 0
    assert combo.currentData() == "tokens_per_s" and combo.currentText() == "Tokens per second"
    assert dash.plot("metric").title() == TRAINING["tokens_per_s"][0] == "Tokens per second"
    combo.setFocus()
    while combo.currentData() != "lr":
        before = combo.currentIndex()
        qtbot.keyClick(combo, Qt.Key.Key_Up if combo.findData("lr") < before else Qt.Key.Key_Down)
        assert combo.currentIndex() != before
    assert dash.plot("metric").title() == TRAINING["lr"][0] == "Learning rate"
