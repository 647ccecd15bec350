"""The Ensemble dashboard on the shipped ensemble samples and on tiny real runs: the
pairwise heatmap, the rules table, the probe shading and the comparison table equal the
raw store records; a single-model run gets the explanation of how to make an ensemble."""
from __future__ import annotations

import html
import math

import numpy as np
import pytest

pytest.importorskip("pytestqt")

import tiny  # noqa: E402
from moe_studio.gui.views.ensemble import (MI_LEVELS, PAIR_VIEWS, RULES,  # noqa: E402
                                               EnsembleDashboard, byte_label)
from moe_studio.paths import sample_runs_dir  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

ENSEMBLE_SAMPLES = ("bagging-4", "moe-vs-ensemble-dense")


def _train(cfg, runs_dir):
    from moe_studio.engine.trainer import Trainer

    tr = Trainer(cfg, runs_dir=runs_dir)
    while not tr.done:
        tr.step()
    tr.close("finished")
    return tr.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-member bagging ensemble of dense models evaluated at steps 4, 8, 12, and a
    single MoE model."""
    tmp = tmp_path_factory.mktemp("gui-ensemble")
    ens = _train(tiny.tiny_config("tiny-ens", ensemble__members=3, ensemble__method="bagging",
                                  model__moe_layers="none", train__eval_every=4), tmp)
    single = _train(tiny.tiny_config("tiny-single", train__steps=6, train__eval_every=3), tmp)
    return ens, single


@pytest.fixture
def make(make_dashboard):
    def _make(paths):
        d = make_dashboard(EnsembleDashboard, paths)
        d.settle()
        return d
    return _make


def _num(text: str) -> float:
    return math.nan if text == "—" else float(text.replace(",", ""))


def _scalar(r, name, member, step):
    df = r.scalars([name], member=member)
    v = df[df.step == step].value
    return float(v.iloc[-1]) if len(v) else math.nan


def _check_step(d, r, step):
    """Heatmap (every pairwise view) and rules table at ``step`` against the store."""
    d.controls.set_step(step)
    d.settle()
    assert d.step() == step
    for name, *_ in PAIR_VIEWS:
        d.set_pair_view(name)
        got, want = d.pairs.matrix(), r.tensor(name, step, member=-1)
        assert want[0] == step
        np.testing.assert_allclose(got, want[1], rtol=1e-6, equal_nan=True, err_msg=name)
    m = want[1].shape[0]
    assert d.pairs.x_labels() == [f"m{i}" for i in range(m)]
    rows = d.rules.cell_texts()
    member_nll = [_scalar(r, "ens/member/val_loss", i, step) for i in range(m)]
    mean_member = float(np.mean(member_nll))
    for j, rule in enumerate(RULES):
        nll = _scalar(r, f"ens/{rule}/val_loss", -1, step)
        acc = _scalar(r, f"ens/{rule}/val_acc", -1, step)
        assert _num(rows[j][1]) == pytest.approx(nll, abs=5e-5), rule
        assert _num(rows[j][2]) == pytest.approx(acc, abs=5e-5), rule
        assert _num(rows[j][3]) == pytest.approx(mean_member - nll, abs=1e-4), rule
    assert rows[len(RULES)][0] == "mean member"
    assert _num(rows[len(RULES)][1]) == pytest.approx(mean_member, abs=5e-5)
    # the rule of the mean of probabilities gains exactly what the run recorded as ens/gain
    assert _num(rows[0][3]) == pytest.approx(_scalar(r, "ens/gain", -1, step), abs=1e-4)


@pytest.mark.parametrize("name", ENSEMBLE_SAMPLES)
def test_sample_ensembles_render(make, name):
    path = sample_runs_dir() / name
    assert (path / "run.sqlite").exists(), \
        f"sample {name} missing: python -m moe_studio.samples --only {name}"
    d = make([path])
    with open_run(path) as r:
        members = r.config["ensemble"]["members"]
        assert d.members_page.currentIndex() == 1 and d.tabs.currentIndex() == 0
        steps = r.tensor_steps("ens/agreement", member=-1)
        assert d.controls.steps().tolist() == steps.tolist()
        assert d.step() == int(steps[-1])                     # opens at the last evaluation
        keys = set(d.losses.series_keys())
        assert {f"m{m}" for m in range(members)} | {"ensemble"} | {f"rule:{x}" for x in RULES} <= keys
        assert not d.losses.is_series_visible("rule:vote") and d.losses.is_series_visible("ensemble")
        x, y = d.losses.series_data("ensemble")
        val = r.scalars(["val/loss"], member=-1)
        assert x.tolist() == val.step.tolist() and np.allclose(y, val.value)
        assert y[-1] < y[0] - 0.3                            # it learned
        assert _scalar(r, "ens/gain", -1, int(steps[-1])) > 0.005     # and ensembling helps
        _check_step(d, r, int(steps[-1]))
        assert {"ens/disagreement", "ens/kappa_interrater"} <= set(d.oracle.series_keys())
        assert {"ens/js_divergence", "ens/mutual_info", "ens/gain"} <= set(d.nats.series_keys())
        snap = r.snapshot("ensemble/probe", member=-1)
        assert d.probe_levels().size == snap.arrays["tokens"].size
        assert "members" in d.status_text()


def test_tiny_run_heatmap_and_rules_follow_the_slider(make, runs):
    ens, _ = runs
    d = make([ens])
    with open_run(ens) as r:
        steps = r.tensor_steps("ens/agreement", member=-1).tolist()
        assert steps == [4, 8, 12]
        assert d.controls.steps().tolist() == steps
        for step in steps:
            _check_step(d, r, step)
        # the titles move with the slider (applied with the step markers)
        assert d.pairs.title().endswith("step 12")
        d.set_pair_view("ens/pair_q")
        assert d.pairs.levels() == (-1.0, 1.0)


def test_probe_shading_and_hover_match_the_snapshot(make, runs):
    ens, _ = runs
    d = make([ens])
    with open_run(ens) as r:
        d.controls.set_step(8)
        d.settle()
        snap = r.snapshot("ensemble/probe", 8, member=-1)
        assert snap.step == 8
        mi = snap.arrays["mutual_info"].astype(np.float64)
        # independent: 8 equal-width shades up to the 99th percentile, the top one beyond it
        scale = float(np.percentile(mi, 99))
        want = np.minimum((np.clip(mi / scale, 0, 1) * MI_LEVELS).astype(int), MI_LEVELS - 1)
        assert np.array_equal(d.probe_levels(), want)
        order = np.argsort(mi, kind="stable")
        assert np.all(np.diff(d.probe_levels()[order]) >= 0)          # more MI, never lighter
        shades = d.probe_shades()
        tokens = snap.arrays["tokens"]
        ascii_ = np.flatnonzero(tokens < 128)
        top = ascii_[np.argmax(mi[ascii_])]
        assert d.probe.background_of_token(int(top)) == shades[want[top]]
        assert want[top] >= MI_LEVELS - 2
        plain = ascii_[want[ascii_] == 0]
        if plain.size:
            assert d.probe.background_of_token(int(plain[0])) not in shades[1:]
        # hover: every member's top-1 guess for the next token
        i = int(top)
        tip = d.probe.tooltip_for_token(i)
        for m in range(3):
            assert f"member {m}: «{html.escape(byte_label(snap.arrays['top1'][m, i]))}»" in tip
        assert f"{mi[i]:.4f}" in tip


def test_compare_two_runs_side_by_side(make, runs):
    ens, single = runs
    d = make([single, ens])           # the ensemble's details even when it is not first
    assert d.tabs.currentIndex() == 1 and d.members_page.currentIndex() == 1
    assert d.runs() == [single, ens]
    headers = [h.replace("\n", " ") for h in d.compare_table.headers()]
    rows = d.compare_table.cell_texts()
    assert [row[0] for row in rows] == ["tiny-single", "tiny-ens"]
    col = {h: i for i, h in enumerate(headers)}
    with open_run(ens) as r:
        last = int(r.tensor_steps("ens/agreement", member=-1)[-1])
        row = rows[1]
        assert row[col["members"]] == "3" and row[col["method"]] == "bagging"
        assert _num(row[col["params total"]]) == r.meta["params_total"] * 3
        assert _num(row[col["step"]]) == last
        for rule in RULES:
            assert _num(row[col[f"{rule} NLL"]]) == pytest.approx(
                _scalar(r, f"ens/{rule}/val_loss", -1, last), abs=5e-5)
        for h, name in (("gain", "ens/gain"), ("dis- agreement", "ens/disagreement"),
                        ("JS", "ens/js_divergence"), ("MI", "ens/mutual_info")):
            assert _num(row[col[h]]) == pytest.approx(_scalar(r, name, -1, last), abs=5e-5), h
        assert _num(row[col["val loss"]]) == pytest.approx(_scalar(r, "val/loss", -1, last), abs=5e-5)
    with open_run(single) as r:
        row = rows[0]
        assert row[col["members"]] == "1" and row[col["method"]] == "—"
        assert row[col["model"]].startswith("MoE 4 experts")
        assert _num(row[col["active / token"]]) == r.meta["params_active"]
        assert all(row[col[f"{x} NLL"]] == "—" for x in RULES)
        val = r.scalars(["val/loss"], member=0)
        assert _num(row[col["val loss"]]) == pytest.approx(val.value.iloc[-1], abs=5e-5)
        # loss against tokens: each run's val/loss at its tokens count
        x, y = d.compare_losses.series_data("0:tiny-single")
        tok = r.scalars(["tokens"], member=-1)
        assert np.allclose(y, val.value) and np.allclose(x, np.interp(val.step, tok.step, tok.value))
    assert len(d.compare_gain.series_keys()) == 1             # only the ensemble has a gain


def test_single_model_run_explains_how_to_make_an_ensemble(make, runs):
    _, single = runs
    d = make([single])
    assert d.members_page.currentIndex() == 0 and d.tabs.currentIndex() == 0
    text = d.empty.text()
    assert "ensemble.members" in text and "4-member bagging ensemble" in text
    assert "single model" in d.status_text()
    assert d.controls.steps().size == 0
    d.set_runs([])                      # nothing shown: no error, nothing left open
    assert d.runs() == [] and d.compare_table.rowCount() == 0


def test_follows_a_growing_ensemble_run(make, tmp_path):
    from moe_studio.engine.trainer import Trainer

    tr = Trainer(tiny.tiny_config("tiny-live", ensemble__members=2, model__moe_layers="none",
                                  train__steps=8, train__eval_every=4), runs_dir=tmp_path)
    try:
        for _ in range(4):
            tr.step()
        tr.writer.flush()
        d = make([tr.run_dir])
        assert d.controls.steps().tolist() == [4] and d.pairs.matrix().shape == (2, 2)
        while not tr.done:
            tr.step()
        tr.writer.flush()
        assert d.refresh()
        d.settle()
        assert d.controls.steps().tolist() == [4, 8] and d.step() == 8   # it moves on
        assert d.losses.series_data("ensemble")[0].tolist() == [4, 8]
        assert d.compare_table.cell_texts()[0][7] == "8"
        assert d.pairs.title().endswith("step 8")
    finally:
        tr.close("finished")


def test_report_renders_the_ensemble_tab(runs, qapp):
    from moe_studio.gui.commands.report import render_dashboards

    ens, _ = runs
    [(title, pixmap, error)] = render_dashboards([ens], 900, tabs=["Ensemble"])
    assert title == "Ensemble" and error is None and pixmap.width() == 900


def test_main_window_gives_it_every_checked_run(qtbot, tmp_path, runs):
    from PySide6.QtCore import QSettings

    from moe_studio.gui.main_window import MainWindow

    ens, single = runs
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(w)
    try:
        w.show_runs([single, ens])
        titles = [w.tabs.tabText(k) for k in range(w.tabs.count())]
        w.tabs.setCurrentIndex(titles.index("Ensemble"))
        d = w.tabs.currentWidget()
        assert isinstance(d, EnsembleDashboard) and d.runs() == [single, ens]
        assert d.compare_table.rowCount() == 2 and d.members_page.currentIndex() == 1
    finally:
        w.controller.shutdown(10_000)


def test_snapshot_ensemble_grows_its_matrix(make, tmp_path):
    """Snapshot members join one by one: the matrix and the rules follow the members
    evaluated at each step."""
    run = _train(tiny.tiny_config("tiny-snap", ensemble__members=3, ensemble__method="snapshot",
                                  model__moe_layers="none", train__eval_every=4), tmp_path)
    d = make([run])
    with open_run(run) as r:
        steps = r.tensor_steps("ens/agreement", member=-1).tolist()
        assert d.controls.steps().tolist() == steps and len(steps) >= 2
        for step in steps:
            _check_step(d, r, step)
        sizes = [r.tensor("ens/agreement", s, member=-1)[1].shape[0] for s in steps]
        assert sizes == sorted(sizes) and sizes[-1] == 3


def test_status_line_whole_on_hover(make_dashboard):
    """The status line is cut in a narrow window; its tool tip holds all of it."""
    from moe_studio.gui.views.ensemble import EnsembleDashboard
    from moe_studio.paths import sample_runs_dir

    d = make_dashboard(EnsembleDashboard, [sample_runs_dir() / "moe-top2"], size=(700, 500))
    tip = d.controls.status.toolTip()
    assert tip.startswith("moe-top2 · finished") and "single model: no ensemble" in tip


def test_a_samme_run_lists_its_headline_rule_in_the_rules_table(make, tmp_path):
    """ensemble.combine = samme records ens/samme/val_*: the rules table gains that row,
    with the stored numbers and its gain over the mean member (runs without it keep the
    five rules only)."""
    from moe_studio.store import open_run
    run = _train(tiny.tiny_config("tiny-samme", ensemble__method="boosting", ensemble__members=2,
                                  ensemble__boost_mode="samme", ensemble__combine="samme",
                                  model__moe_layers="none", train__steps=6, train__eval_every=6),
                 tmp_path)
    d = make([run])
    assert d.run_rules() == RULES + ("samme",)
    d.controls.set_step(6)
    d.settle()
    rows = d.rules.cell_texts()
    with open_run(run) as r:
        nll = _scalar(r, "ens/samme/val_loss", -1, 6)
        acc = _scalar(r, "ens/samme/val_acc", -1, 6)
        mean_member = float(np.mean([_scalar(r, "ens/member/val_loss", i, 6) for i in range(2)]))
    row = rows[len(RULES)]
    assert row[0] == "SAMME weighted vote"
    assert _num(row[1]) == pytest.approx(nll, abs=5e-5) and _num(row[2]) == pytest.approx(acc, abs=5e-5)
    assert _num(row[3]) == pytest.approx(mean_member - nll, abs=1e-4)
    assert rows[len(RULES) + 1][0] == "mean member"
