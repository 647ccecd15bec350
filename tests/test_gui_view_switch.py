"""Switching views never rebuilds what is unchanged: each view reads a run once, then
only the rows it gained; a run that finishes, or is shown again, is read on, not
reloaded."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from test_gui_dashboard import new_run, write_steps, writers  # noqa: E402,F401
from test_gui_layout import click_tab, make_window  # noqa: E402

from moe_studio.gui.training_dashboard import series_key  # noqa: E402


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
