"""The Gates, Experts and Routing dashboards on a tiny real run: what they show equals an
independent computation from the raw records; the layer selector, the step slider,
following a growing run, click-a-cell, the custom probe and export all work."""
from __future__ import annotations

import csv
import math
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from moe_studio.bench.routing import write_synthetic_run  # noqa: E402
from moe_studio.data.tokenizer import TOKEN_CLASSES, ByteTokenizer, token_class  # noqa: E402
from moe_studio.gui.views.experts import ExpertsDashboard  # noqa: E402
from moe_studio.gui.views.gates import GateDashboard  # noqa: E402
from moe_studio.gui.widgets.heatmap import HeatmapPlot  # noqa: E402
from moe_studio.gui.views.routing import SOURCE_CUSTOM, RoutingDashboard  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

from routing_helpers import train_tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("gui-routing"))


@pytest.fixture
def make(make_dashboard):
    return lambda cls, run=None: make_dashboard(cls, None if run is None else [run],
                                                size=(1200, 800))


# ----------------------------------------------------------------------------- Gates

def test_gates_bands_histogram_and_curves(make, trained):
    d = make(GateDashboard, trained.run_dir)
    r = open_run(trained.run_dir)
    steps = r.snapshot_steps("routing/probe")
    assert d.controls.steps().tolist() == steps.tolist()
    assert d.step() == int(steps[-1])                      # opens at the latest step

    # all layers pooled: the bands are percentiles of the summed histograms, checked by
    # walking the CDF of each step's pooled counts in a plain loop
    s0, e, c0 = r.histogram_series("router_probs/L0")
    _, _, c1 = r.histogram_series("router_probs/L1")
    bs, bp = d.bands.bands()
    assert bs.tolist() == s0.tolist()
    for j in range(len(s0)):
        pooled = (c0[j] + c1[j]).astype(float)
        total = pooled.sum()
        for q, v in zip((0, 7, 16, 31, 50, 69, 84, 93, 100), bp[j]):
            t, acc = q / 100 * total, 0.0
            for b, n in enumerate(pooled):
                if n and acc + n >= t:
                    want = e[b] + (t - acc) / n * (e[b + 1] - e[b])
                    break
                acc += n
            assert math.isclose(v, want, abs_tol=1e-9)
    # the histogram at the selected step, as % of all probabilities
    np.testing.assert_allclose(d.histogram.values()[0], 100 * (c0[-1] + c1[-1]) / (c0[-1] + c1[-1]).sum())

    # one layer: the curves equal the stored scalars
    d.controls.set_layer(1)
    bs, bp = d.bands.bands()
    assert bs.size == s0.size
    df = r.scalars(["moe/L1/entropy"], member=0).sort_values("step")
    x, y = d.entropy.series_data("L1|entropy")
    np.testing.assert_array_equal(x, df["step"].to_numpy(float))
    np.testing.assert_array_equal(y, df["value"].to_numpy(float))
    assert d.entropy.series_keys() == ["L1|entropy"]
    assert set(d.logits.series_keys()) == {"L1|logit_absmean", "L1|logit_absmax"}

    # the step slider picks the histogram shown
    d.controls.set_index(1)
    assert d.step() == int(steps[1])
    np.testing.assert_allclose(d.histogram.values()[0], 100 * c1[1] / c1[1].sum())
    assert "step" in d.bands.hover_at(float(steps[1]), 0.5)


# ----------------------------------------------------------------------------- Experts

def test_experts_bars_heatmaps_and_balance(make, trained):
    d = make(ExpertsDashboard, trained.run_dir)
    r = open_run(trained.run_dir)
    steps, tpe = r.tensor_series("moe/tokens_per_expert")
    _, dpe = r.tensor_series("moe/dropped_per_expert")
    _, bias = r.tensor_series("moe/bias")
    assert d.controls.steps().tolist() == steps.tolist()
    S, L, E = tpe.shape
    # bars: the stored tensor at the selected step (all layers: one group per layer)
    np.testing.assert_array_equal(d.bars.values(), tpe[-1])
    # layer x expert: load / mean load
    for layer in range(L):
        for e in range(E):
            assert math.isclose(d.layer_map.matrix()[layer, e],
                                tpe[-1, layer, e] / (sum(tpe[-1, layer]) / E), rel_tol=1e-6)
    assert d.step_map.matrix().shape == (L * E, S)
    # balance figures against plain loops
    for i in range(S):
        for layer in range(L):
            loads = [float(x) for x in tpe[i, layer]]
            mean = sum(loads) / E
            std = math.sqrt(sum((x - mean) ** 2 for x in loads) / E)
            assert math.isclose(d.derived("cv")[i, layer], std / mean, rel_tol=1e-9)
            assert math.isclose(d.derived("max_mean")[i, layer], max(loads) / mean, rel_tol=1e-9)
            assert math.isclose(d.derived("dropped")[i, layer],
                                100 * sum(float(x) for x in dpe[i, layer]) / sum(loads), rel_tol=1e-9)
    assert d.derived("dropped").max() > 0               # capacity 1.0 drops some
    x, y = d.cv.series_data("L1")
    np.testing.assert_allclose(y, d.derived("cv")[:, 1])
    assert d.bias.isVisibleTo(d)                           # aux_free: biases shown

    # one layer: bars, expert x step and the bias per expert
    d.controls.set_layer(1)
    np.testing.assert_array_equal(d.bars.values(), tpe[-1, 1][None])
    assert d.step_map.matrix().shape == (E, S)
    np.testing.assert_allclose(d.step_map.matrix(), (tpe[:, 1] / tpe[:, 1].mean(-1, keepdims=True)).T,
                               rtol=1e-6)
    _, yb = d.bias.series_data("e2")
    np.testing.assert_allclose(yb, bias[:, 1, 2])

    # the step slider
    d.controls.set_index(3)
    np.testing.assert_array_equal(d.bars.values(), tpe[3, 1][None])

    # click a layer x expert cell: the probe tokens that expert got (any of the k choices)
    snap = r.snapshot("routing/probe", int(steps[3]))
    got = d.list_tokens(1, 2, int(steps[3]))
    want = [i for i, row in enumerate(snap.arrays["topk_idx"][1]) if 2 in row.tolist()]
    assert got == want and d.tokens.token_indices() == want[:400]
    d.layer_map.click_cell(0, 3)
    snap_now = r.snapshot("routing/probe", d.step())
    assert d.tokens.token_indices() == [i for i, row in enumerate(snap_now.arrays["topk_idx"][0])
                                        if 3 in row.tolist()][:400]


def test_dead_experts_window(make, tmp_path):
    w = write_synthetic_run(tmp_path, steps=10, n_tokens=64, n_experts=4, n_blocks=1, every=1)
    # from step 11 on, expert 3 gets nothing
    for s in range(11, 21):
        w.add_tensor(s, "moe/tokens_per_expert", np.array([[40, 40, 48, 0]], np.float32))
        w.add_tensor(s, "moe/dropped_per_expert", np.zeros((1, 4), np.float32))
        w.add_tensor(s, "moe/bias", np.zeros((1, 4), np.float32))
    w.close("finished")
    d = make(ExpertsDashboard, w.run_dir)
    d.dead_window.setValue(5)
    steps, tpe = open_run(w.run_dir).tensor_series("moe/tokens_per_expert")
    dead = d.derived("dead")[:, 0]
    for i, s in enumerate(steps.tolist()):
        window = [j for j, t in enumerate(steps.tolist()) if s - 5 < t <= s]
        want = sum(all(tpe[j, 0, e] == 0 for j in window) for e in range(4))
        assert dead[i] == want, s
    assert dead[steps >= 15].tolist() == [1] * 6
    d.controls.set_step(20)
    assert d.bars.hover_at(3.5, 1.0).endswith("(dead)")


# ----------------------------------------------------------------------------- Routing

def test_routing_heatmap_text_and_share_matrices(make, trained):
    d = make(RoutingDashboard, trained.run_dir)
    r = open_run(trained.run_dir)
    snap = r.snapshot("routing/probe")
    a = snap.arrays
    N, E = a["tokens"].size, 4
    assert d.current()[1] == snap.meta
    # all layers: token x expert stacks the layers; characters on the axis
    assert d.token_map.matrix().shape == (2 * E, N)
    d.controls.set_layer(1)
    m = d.token_map.matrix()
    assert m.shape == (E, N)                               # image = [tokens, experts] transposed
    np.testing.assert_array_equal(m, a["probs"][1].astype(np.float32).T)
    assert d.token_map.x_labels() == ByteTokenizer().token_labels(a["tokens"])
    # the text view: the text itself, each character on its token's top-1 expert colour
    assert d.text_view.plain_text() == a["tokens"].tobytes().decode()
    colors = [c.rgb() for c in _bg_colors(d, E)]
    for i in (0, 5, N // 2, N - 1):
        assert d.text_view.background_of_token(i).rgb() == colors[int(a["topk_idx"][1, i, 0])]
    tip = d.text_view.tooltip_for_token(3)
    assert "L0:" in tip and "L1:" in tip and f"e{int(a['topk_idx'][0, 3, 0])}" in tip

    # domain x expert equals a loop over the snapshot (all k choices)
    dm = d.domain_map.matrix()
    for dom in range(2):
        c = Counter(int(e) for dd, row in zip(a["domains"], a["topk_idx"][1]) if dd == dom for e in row)
        n = sum(c.values())
        for e in range(E):
            assert math.isclose(dm[dom, e], c[e] / n, rel_tol=1e-6)
    assert d.domain_map.y_labels() == ["prose", "python"]
    # token class x expert, top-1 only
    d.count_combo.setCurrentIndex(1)
    cm = d.class_map.matrix()
    per: dict[str, Counter] = {}
    for b, row in zip(a["tokens"], a["topk_idx"][1]):
        per.setdefault(token_class(int(b)), Counter())[int(row[0])] += 1
    present = [n for n in TOKEN_CLASSES if n in per]
    assert d.class_map.y_labels() == present
    for ci, name in enumerate(present):
        tot = sum(per[name].values())
        for e in range(E):
            assert math.isclose(cm[ci, e], per[name][e] / tot, rel_tol=1e-6)

    # click a domain cell: the tokens of that domain whose first choice is that expert
    d.domain_map.click_cell(1, 2)
    want = [i for i in range(N) if a["domains"][i] == 1 and a["topk_idx"][1, i, 0] == 2]
    assert d.tokens.token_indices() == want
    d.count_combo.setCurrentIndex(0)
    got = d.list_cell("class", 0, 1)
    want = [i for i in range(N) if token_class(int(a["tokens"][i])) == present[0]
            and 1 in a["topk_idx"][1, i].tolist()]
    assert got == want
    # click a token cell: that token's choices in every layer
    d.token_map.click_cell(2, 7)
    assert d.tokens.token_indices() == [7, 7]
    assert "p = " in d.token_map.hover_cell(2, 7)

    # the step slider changes the snapshot shown
    steps = r.snapshot_steps("routing/probe")
    d.controls.set_index(0)
    d.settle()                                             # titles follow scrubbing lazily
    first = r.snapshot("routing/probe", int(steps[0]))
    np.testing.assert_array_equal(d.token_map.matrix(), first.arrays["probs"][1].astype(np.float32).T)
    assert f"step {int(steps[0])}" in d.token_map.title()


def _bg_colors(d, E):
    from moe_studio.gui.widgets.routed_text import expert_colors, text_background
    from moe_studio.gui.theme import is_dark_palette

    dark = is_dark_palette(d.palette())
    return [text_background(c, dark) for c in expert_colors(E, dark)]


def test_custom_probe_through_a_checkpoint(make, trained, qtbot):
    d = make(RoutingDashboard, trained.run_dir)
    labels = [d.weights_combo.itemText(i) for i in range(d.weights_combo.count())]
    assert labels[0] == "Latest weights" and any("step 6" in t for t in labels)
    d.weights_combo.setCurrentIndex(labels.index(next(t for t in labels if "step 6" in t)))
    text = "for x in range(3):\n    print(x)"
    d.probe_edit.setPlainText(text)
    with qtbot.waitSignal(d.task.finished, timeout=60_000):
        assert d.route_custom()
    assert d.source() == SOURCE_CUSTOM
    a, meta, what = d.current()
    assert "step 6" in what and meta["step"] == 6
    # what the model of checkpoint 6 gives, routed by the trainer's own code
    import torch

    from moe_studio.engine.model import MoEGPT
    ck = torch.load(trained.run_dir / "checkpoint-0000006.pt", weights_only=True)
    model = MoEGPT(trained.config.model, trained.config.moe, context=trained.config.data.context)
    model.load_state_dict(ck["models"][0])
    saved = trained.models[0]
    trained.models[0] = model
    try:
        want = trained.route_tokens(np.frombuffer(text.encode(), np.uint8))
    finally:
        trained.models[0] = saved
    for k in ("topk_idx", "topk_weight", "probs"):
        np.testing.assert_array_equal(a[k], want[k], err_msg=k)
    assert d.token_map.matrix().shape == (2 * 4, len(text.encode()))
    assert d.domain_map.y_labels() == ["L0 custom", "L1 custom"]
    # scrubbing goes back to the recording
    d.controls.slider.triggerAction(d.controls.slider.SliderAction.SliderSingleStepSub)
    assert d.source() != SOURCE_CUSTOM


def test_custom_probe_error_is_shown(make, tmp_path, qtbot):
    w = write_synthetic_run(tmp_path, steps=3, n_tokens=32, n_experts=4, n_blocks=1)
    w.close("finished")
    d = make(RoutingDashboard, w.run_dir)
    assert not d.route_button.isEnabled()                  # no weights in that run
    with qtbot.waitSignal(d.task.finished, timeout=30_000):
        assert d.route_custom("hello", checkpoint=None)
    assert "no weights" in d.probe_note.text()
    assert not d.route_custom("   ")


# ----------------------------------------------------------------------------- follow

@pytest.mark.parametrize("cls", [GateDashboard, ExpertsDashboard, RoutingDashboard])
def test_follow_extends_the_slider(make, tmp_path, cls):
    w = write_synthetic_run(tmp_path, steps=3, n_tokens=48, n_experts=4, n_blocks=2, every=2)
    try:
        d = make(cls, w.run_dir)
        assert d.controls.steps().tolist() == [1, 3, 5]
        assert d.step() == 5
        write_synthetic_run(tmp_path, steps=2, n_tokens=48, n_experts=4, n_blocks=2, every=2,
                            writer=w, first_step=7)
        assert d.refresh() is True
        assert d.controls.steps().tolist() == [1, 3, 5, 7, 9]
        assert d.step() == 9                               # at the end: stays at the end
        d.controls.set_index(1)
        write_synthetic_run(tmp_path, steps=1, n_tokens=48, n_experts=4, n_blocks=2, every=2,
                            writer=w, first_step=11)
        d.refresh()
        assert d.controls.steps().tolist()[-1] == 11 and d.step() == 3   # kept where it was
        assert d.refresh() is False                        # nothing new
        d.start_follow()
        assert d.is_following() and d._follow.is_active()
        d.hide()                  # another tab in front, or a minimised window: no polling
        assert d.is_following() and not d._follow.is_active()
        write_synthetic_run(tmp_path, steps=1, n_tokens=48, n_experts=4, n_blocks=2, every=2,
                            writer=w, first_step=13)
        d.show()                  # catches up at once, then follows again
        assert d._follow.is_active() and d.controls.steps().tolist()[-1] == 13
        d.stop_follow()
        assert not d.is_following()
    finally:
        w.close("finished")


def test_live_follow_by_timer(make, tmp_path, qtbot):
    """start_follow() polls on its own: a growing run shows up without refresh()."""
    w = write_synthetic_run(tmp_path, steps=2, n_tokens=40, n_experts=4, n_blocks=1, every=2)
    try:
        d = make(RoutingDashboard, w.run_dir)
        d.start_follow()
        write_synthetic_run(tmp_path, steps=2, n_tokens=40, n_experts=4, n_blocks=1, every=2,
                            writer=w, first_step=5)
        qtbot.waitUntil(lambda: d.controls.steps().tolist() == [1, 3, 5, 7], timeout=5000)
        # The slider moves first; the snapshot at the new step is drawn on a later frame
        # (under load, a frame can be late): both must arrive.
        qtbot.waitUntil(lambda: d.current() is not None and d.step() == 7
                        and d.current()[2] == "probe at step 7", timeout=5000)
    finally:
        d.stop_follow()
        w.close("finished")


def test_tabs_are_registered():
    from moe_studio.gui.main_window import DASHBOARDS, _load_class

    specs = dict(DASHBOARDS)
    for title in ("Gates", "Experts", "Routing"):
        cls = _load_class(specs[title])
        for name in ("set_runs", "start_follow", "stop_follow", "refresh"):
            assert callable(getattr(cls, name))


def test_play_button_and_no_timers_left(make, tmp_path, qtbot):
    w = write_synthetic_run(tmp_path, steps=4, n_tokens=32, n_experts=4, n_blocks=1)
    w.close("finished")
    d = make(GateDashboard, w.run_dir)
    d.controls.set_index(0)
    d.controls.play()
    assert d.controls.is_playing()
    qtbot.waitUntil(lambda: d.controls.at_end(), timeout=5000)
    qtbot.waitUntil(lambda: not d.controls.is_playing(), timeout=2000)
    d.controls.play()
    d.stop_follow()                                        # stops playing too
    assert not d.controls.is_playing()


# ----------------------------------------------------------------------------- export

def test_exports_are_written(make, trained, tmp_path):
    d = make(RoutingDashboard, trained.run_dir)
    g = make(GateDashboard, trained.run_dir)
    for name, fig in (("heat", d.domain_map), ("tokens", d.token_map), ("bands", g.bands),
                      ("hist", g.histogram)):
        for ext in ("png", "svg", "csv"):
            p = getattr(fig, f"export_{ext}")(tmp_path / f"{name}.{ext}")
            assert p.exists() and p.stat().st_size > 100, p
    rows = list(csv.reader(open(tmp_path / "heat.csv", encoding="utf-8")))
    assert rows[0][1:] == ["e0", "e1", "e2", "e3"]
    assert [r[0] for r in rows[1:]] == d.domain_map.y_labels()
    np.testing.assert_allclose(np.array([[float(v) for v in r[1:]] for r in rows[1:]]),
                               d.domain_map.matrix(), rtol=1e-6)
    band_rows = list(csv.reader(open(tmp_path / "bands.csv", encoding="utf-8")))
    assert band_rows[0] == ["step", "min", "p7", "p16", "p31", "p50", "p69", "p84", "p93", "max"]


def test_heatmap_levels_hover_and_click(qtbot):
    h = HeatmapPlot("t", "x", "y", fixed_levels=(0.0, 1.0), annotate=True)
    qtbot.addWidget(h)
    h.resize(500, 300)
    h.show()
    m = np.array([[0.1, 0.2, np.nan], [0.3, 0.4, 0.5]])
    h.set_matrix(m, x_labels=["a", "b", "c"], y_labels=["r0", "r1"])
    assert h.levels() == (0.0, 1.0)
    h.set_auto_levels(True)
    assert h.levels() == pytest.approx((0.1, 0.5))
    assert h.auto_action.isChecked()
    h.set_fixed_levels(0.0, 2.0)
    assert not h.auto_levels() and h.levels() == (0.0, 2.0)
    h.reset_levels()
    assert h.levels() == (0.0, 1.0)
    assert h.annotation_texts() == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    assert "r1 · b" in h.hover_cell(1, 1)
    with qtbot.waitSignal(h.cellClicked) as sig:
        h.click_cell(1, 2)
    assert sig.args == [1, 2] and h.selected_cell() == (1, 2)
    assert h.cell_at(2.5, 1.5) == (1, 2) and h.cell_at(3.5, 0.5) is None


def test_bench_quick_keys():
    from moe_studio.bench import routing

    res = routing.run(json_out=True, quick=True)
    for k in ("heatmap_update_median_ms", "heatmap_update_p95_ms", "scrub_gates_fps",
              "scrub_experts_fps", "scrub_routing_fps", "heatmap_within_budget",
              "scrub_within_budget", "budget_heatmap_ms", "budget_scrub_fps"):
        assert k in res, k
    assert res["heatmap_shape"] == [64, 4096]


def test_dropped_plot_says_dropless(make, trained):
    from moe_studio.paths import sample_runs_dir
    d = make(ExpertsDashboard, trained.run_dir)        # capacity factor 1.0: drops measured
    assert d.dropped.placeholder() == ""
    d = make(ExpertsDashboard, sample_runs_dir() / "moe-top2")   # dropless
    assert "Dropless" in d.dropped.placeholder()


def test_heatmap_row_labels_shrink_before_thinning(qtbot):
    """8 rows in a short plot: a smaller font keeps a label on every row; 200 rows do not
    fit at any readable size: the labels keep their size and are thinned."""
    from moe_studio.gui.widgets.heatmap import ROW_FONT_MIN_PT
    h = HeatmapPlot("t", "x", "y")
    qtbot.addWidget(h)
    h.resize(400, 220)
    h.show()
    qtbot.waitExposed(h)
    rows = [f"L{i // 2} {'prose' if i % 2 == 0 else 'python'}" for i in range(8)]
    h.set_matrix(np.random.default_rng(0).random((8, 4)), x_labels=list("abcd"), y_labels=rows)
    h.set_row_group(2)
    qtbot.wait(20)
    base = h.font().pointSizeF()
    ax = h.plot_item.getAxis("left")
    vb = h.plot_item.getViewBox()
    # rows 2 px shorter than a label at the full size: too short for it, not for 7 pt
    from PySide6.QtGui import QFontMetrics
    row_px = QFontMetrics(h.font()).height() - 2
    h.resize(400, int(h.height() - vb.height() + 8 * row_px))
    qtbot.wait(20)
    (y0, y1) = vb.viewRange()[1]
    ticks = ax.tickValues(y0, y1, vb.height())
    shown = ticks[0][1]
    assert len(shown) == 8, (shown, h.row_label_point_size(), vb.height())
    assert ROW_FONT_MIN_PT <= h.row_label_point_size() < base
    h.set_matrix(np.random.default_rng(0).random((200, 4)), x_labels=list("abcd"),
                 y_labels=[f"r{i}" for i in range(200)])
    qtbot.wait(20)
    assert h.row_label_point_size() == base
    (y0, y1) = vb.viewRange()[1]
    assert len(ax.tickValues(y0, y1, vb.height())[0][1]) < 200


def test_cell_texts_wider_than_their_cells_are_left_out(qtbot):
    """A value's text that does not fit its cell would run over its neighbours and the
    row labels ("m0" and "0.7321" read as "=0.7321" in the Ensemble view at 1280 x 800):
    then no cell is written, and once the cells are wide enough every one is."""
    from PySide6.QtGui import QFontMetrics

    h = HeatmapPlot("t", "x", "y", fixed_levels=(0.0, 1.0), annotate=True,
                    value_format=lambda v: f"{v:.6f}")
    qtbot.addWidget(h)
    h.resize(200, 260)
    h.show()
    qtbot.waitExposed(h)
    m = np.full((4, 4), 0.731234)
    h.set_matrix(m)
    cell_px = h.view_box.width() / 4
    f = h.font()
    f.setPointSizeF(max(7.0, f.pointSizeF() - 1.5))
    assert QFontMetrics(f).horizontalAdvance("0.731234") > cell_px - 2   # the narrow case
    assert h.annotation_texts() == []
    h.resize(1200, 260)
    qtbot.waitUntil(lambda: h.annotation_texts() == ["0.731234"] * 16, timeout=3000)
