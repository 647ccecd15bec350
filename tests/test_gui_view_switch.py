"""Switching views never rebuilds what is unchanged: each view reads a run once, then
only the rows it gained; a run that finishes, or is shown again, is read on, not
reloaded."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from test_gui_dashboard import new_run, write_steps, writers  # noqa: E402,F401
from test_gui_layout import click_tab, make_window  # noqa: E402

from moe_studio.gui.views.training import series_key  # noqa: E402


def _spy_set_runs(w) -> dict[str, int]:
    """Count each view's set_runs calls (a full read of its runs)."""
    calls = {w.tabs.tabText(i): 0 for i in range(w.tabs.count())}
    for i in range(w.tabs.count()):
        d = w.tabs.widget(i)
        title = w.tabs.tabText(i)

        def spy(paths, _orig=d.set_runs, _t=title):
            calls[_t] += 1
            return _orig(paths)
        d.set_runs = spy
    return calls


def test_switching_views_reads_only_what_is_new(qtbot, tmp_path, writers):  # noqa: F811
    w = make_window(qtbot, tmp_path, (1280, 800))
    try:
        wr = new_run(writers, tmp_path / "runs", "live", members=1, steps=100)
        write_steps(wr, range(0, 20), members=1)
        calls = _spy_set_runs(w)
        w.show_runs([wr.run_dir], live=True)
        titles = list(calls)
        for t in titles:
            click_tab(qtbot, w.tabs, t)
        assert set(calls.values()) == {1}            # each view read the run once

        write_steps(wr, range(20, 40), members=1)
        training = click_tab(qtbot, w.tabs, "Training")
        # shown at once with what the run gained while the view was hidden
        x, _ = training.plot("loss").series_data(series_key(0, "train/loss", 0))
        assert x.max() == 39
        for t in titles:
            click_tab(qtbot, w.tabs, t)
        assert set(calls.values()) == {1}            # no view rebuilt on a switch

        # the run ends; the window shows the same run, no longer live (as on Finished)
        write_steps(wr, range(40, 45), members=1)
        wr.close("finished")
        writers.remove(wr)
        w.show_runs([wr.run_dir], live=False)
        training = click_tab(qtbot, w.tabs, "Training")
        x, _ = training.plot("loss").series_data(series_key(0, "train/loss", 0))
        assert x.max() == 44 and "finished" in training.status_text()
        for t in titles:
            click_tab(qtbot, w.tabs, t)
        assert set(calls.values()) == {1}, calls     # read on, not reloaded
        assert not any(d.is_following() for d in w.dashboards)

        # another run: every view reads it afresh
        other = new_run(writers, tmp_path / "runs", "other", members=1, steps=10)
        write_steps(other, range(0, 5), members=1)
        w.show_runs([other.run_dir], live=False)
        click_tab(qtbot, w.tabs, "Gates")
        assert calls["Gates"] == 2 and calls["Experts"] == 1
        training = click_tab(qtbot, w.tabs, "Training")
        assert calls["Training"] == 2 and training.runs() == [other.run_dir]
    finally:
        w.controller.shutdown(10_000)


@pytest.mark.parametrize("view", ["Gates", "Experts", "Routing", "Precision", "Ensemble"])
def test_a_read_draws_once(make_dashboard, view):
    """Reading a run (or what it gained) draws the view once: the step slider following
    the new last step used to draw it a second time within the same read."""
    from moe_studio.gui.main_window import DASHBOARDS, _load_class
    from moe_studio.paths import sample_runs_dir
    run = {"Precision": "fp16-overflow", "Ensemble": "bagging-4"}.get(view, "moe-top2")
    cls = _load_class(dict(DASHBOARDS)[view])
    d = make_dashboard(cls)
    shows = []
    orig = d._show
    d._show = lambda: (shows.append(d.step()), orig())[1]
    d.set_runs([sample_runs_dir() / run])
    assert d.step() is not None and shows == [d.step()]


def test_precision_table_is_one_update_per_step(make_dashboard, qtbot):
    """Moving to another step refills the edge table as one update of its view, not one
    per cell (each cost ~3 ms with the view sizing columns to their contents: seconds
    per step for a default model, while training)."""
    from PySide6.QtCore import Qt

    from moe_studio.gui.views.precision import PrecisionDashboard
    from moe_studio.paths import sample_runs_dir
    d = make_dashboard(PrecisionDashboard, [sample_runs_dir() / "fp16-overflow"])
    model = d.table_model
    assert model.rowCount() > 5
    before = [model.index(r, 2).data() for r in range(model.rowCount())]
    updates = []
    model.dataChanged.connect(lambda *a: updates.append(a))
    slider = d.controls.slider
    slider.setFocus()
    qtbot.keyClick(slider, Qt.Key.Key_Home)          # the first recorded step
    d.settle()
    after = [model.index(r, 2).data() for r in range(model.rowCount())]
    assert after != before                         # the table shows the other step
    assert len(updates) == 1
    shown = [d.table_proxy.index(r, 2).data() for r in range(d.table_proxy.rowCount())]
    assert sorted(shown) == sorted(after)          # and the sorted view has it all


def test_live_x_axis_follows_the_data_and_shows_the_plan(make_dashboard, tmp_path, qtbot,
                                                         writers):  # noqa: F811
    """20 steps into a 1,000-step run the curves span the plot's width (not 2 % of
    it); the planned end is in the x label and a faint line there. Once the run ends,
    the plan goes."""
    from moe_studio.gui.views.training import TrainingDashboard
    wr = new_run(writers, tmp_path, "live", members=1, steps=1000)
    write_steps(wr, range(0, 20), members=1)
    d = make_dashboard(TrainingDashboard, [wr.run_dir], size=(1280, 800))
    for key in ("loss", "aux", "lr"):
        plot = d.plot(key)
        x0, x1 = plot.plot_item.vb.viewRange()[0]
        assert x1 < 40, (key, x1)                 # follows the 20 steps recorded
    assert "planned 1,000" in d.plot("loss").x_caption()
    assert d.x_extent() == 1000
    # Narrower, as the small plots are with the runs panel docked: a caption that would
    # be cut ("step · planned 2,") falls back to the quantity; the dashed line stays.
    d.resize(700, 800)
    qtbot.waitUntil(lambda: d.plot("lr").width() < 200)
    for key, plot in d.plots().items():
        axis = plot.plot_item.getAxis("bottom")
        room = plot.width() - plot.plot_item.getAxis("left").width()
        assert axis.label.boundingRect().width() <= room, (key, plot.x_caption(), room)
        assert plot.x_caption() in ("step", "step · planned 1,000"), plot.x_caption()
    assert d.plot("lr").x_caption() == "step"
    wr.close("finished")
    writers.remove(wr)
    d.refresh()
    plot = d.plot("loss")
    assert "planned" not in plot.plot_item.getAxis("bottom").labelText
    assert plot.plot_item.vb.viewRange()[0][1] < 40
