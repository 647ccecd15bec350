"""The Precision dashboard on a tiny real fp16 run and on the sample pair: what it draws
equals an independent computation from the raw store records (loss scale, skipped
steps, abs-max and share curves, the exponent heatmap, the closest-to-the-edge table);
the format combo moves the range bands; a run without headroom shows how to turn it on;
a growing run extends the slider."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from moe_studio.engine.trainer import Trainer  # noqa: E402
from moe_studio.gui.views.precision import PrecisionDashboard  # noqa: E402
from moe_studio.paths import sample_runs_dir  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

from tiny import tiny_config  # noqa: E402

SAMPLES = ("fp16-overflow", "fp16-router-fp32")
# The design table (docs/DESIGN.md), written out here rather than read from the engine.
RANGES = {"fp16": (65504.0, 2.0 ** -14, 2.0 ** -24), "bf16": ((2 - 2 ** -7) * 2.0 ** 127,
                                                             2.0 ** -126, 2.0 ** -133),
          "fp8_e4m3": (448.0, 2.0 ** -6, 2.0 ** -9), "fp8_e5m2": (57344.0, 2.0 ** -14, 2.0 ** -16)}


def _train(tmp, steps, plant_at=None, **over):
    cfg = tiny_config("tiny-prec-gui", **{"train__steps": steps, "train__warmup_steps": 1,
                                          "train__eval_every": 1000, "train__eval_batches": 1,
                                          "train__snapshot_every": 1000,
                                          "precision__headroom_every": 2, **over})
    tr = Trainer(cfg, runs_dir=tmp)
    for s in range(steps):
        if plant_at is not None and s + 1 == plant_at:
            with torch.no_grad():           # an overflow the monitor must attribute
                tr.models[0].blocks[1].attn.qkv.weight.mul_(1e30)
        tr.step()
    return tr


@pytest.fixture(scope="module")
def fp16_run(tmp_path_factory):
    # init scale 2^32: the first steps overflow and are skipped while the scale falls;
    # a weight blown up at step 6 makes a non-finite event.
    tr = _train(tmp_path_factory.mktemp("gui-prec"), 7, plant_at=6, precision__mode="fp16",
                precision__init_scale=2.0 ** 32)
    tr.close()
    return tr.run_dir


@pytest.fixture
def make(make_dashboard):
    return lambda run=None: make_dashboard(PrecisionDashboard, None if run is None else [run])


def _records(run):
    with open_run(run) as r:
        meta = r.meta
        out = {name: r.tensor_series(f"precision/{name}")
               for name in ("absmax", "min_nonzero", "counts", "exp_hist", "fractions")}
        sc = r.scalars(["precision/loss_scale", "precision/skipped"], member=0)
        ev = r.events(["nonfinite", "loss_scale_backoff"])
    return meta, out, sc, ev


def _check_against_store(d, run, kind="act", fmt="fp16"):
    """Curves and table of ``d`` (showing ``run``) against the raw records."""
    meta, rec, sc, ev = _records(run)
    mods, kinds, fmts = meta["precision_modules"], meta["precision_kinds"], meta["precision_formats"]
    steps = rec["absmax"][0]
    assert d.steps().tolist() == steps.tolist()
    d.set_kind(kind)
    d.set_format(fmt)
    k, f = kinds.index(kind), fmts.index(fmt)
    absmax, frac = rec["absmax"][1], rec["fractions"][1]
    for i, name in enumerate(mods):
        y = absmax[:, i, k]
        if np.isnan(y).all():
            assert name not in d.absmax_plot.series_keys()
            continue
        xs, ys = d.absmax_plot.series_data(name)
        assert xs.tolist() == steps.tolist()
        np.testing.assert_array_equal(ys, y.astype(np.float64))
        _, over = d.overflow_plot.series_data(name)
        _, under = d.underflow_plot.series_data(name)
        np.testing.assert_allclose(over, 100.0 * frac[:, i, k, f, 0].astype(np.float64))
        np.testing.assert_allclose(under, 100.0 * (frac[:, i, k, f, 1].astype(np.float64)
                                                   + frac[:, i, k, f, 2]))
    # loss scale and skipped steps, straight from the scalars and the events
    ls = sc[sc["name"] == "precision/loss_scale"].sort_values("step")
    if len(ls):
        xs, ys = d.scale_plot.series_data("scale")
        assert xs.tolist() == ls["step"].tolist() and ys.tolist() == ls["value"].tolist()
    skipped = sorted(sc[(sc["name"] == "precision/skipped") & (sc["value"] > 0)]["step"])
    assert d.skipped_steps().tolist() == skipped
    backoffs = sorted(ev[(ev["kind"] == "loss_scale_backoff") & (ev["member"] == 0)]["step"])
    assert skipped == backoffs
    # the table at the selected step: headroom log2(max / absmax) for every measured pair
    idx = int(np.flatnonzero(steps == d.step())[0])
    mx, min_normal, _ = RANGES[fmt]
    counts, min_nz = rec["counts"][1][idx], rec["min_nonzero"][1][idx]
    expect = {}
    for i, name in enumerate(mods):
        for kk, kname in enumerate(kinds):
            if counts[i, kk, 0] == 0 and counts[i, kk, 2] == 0:
                continue
            a = float(absmax[idx, i, kk])
            head = math.log2(mx / a) if a > 0 else (math.inf if a == 0 else math.nan)
            mnz = float(min_nz[i, kk])
            expect[(name, kname)] = (head, math.log2(mnz / min_normal) if mnz > 0 else math.nan,
                                     int(counts[i, kk, 2]))
    rows = d.table_rows()
    assert {(r["module"], r["kind"]) for r in rows} == set(expect)
    for r in rows:
        head, foot, nonfinite = expect[(r["module"], r["kind"])]
        assert r["headroom_bits"] == pytest.approx(head, nan_ok=True)
        assert r["footroom_bits"] == pytest.approx(foot, nan_ok=True)
        assert r["nonfinite"] == nonfinite
    # closest to the edge first: non-finite tensors, then by headroom
    order = [(0 if r["nonfinite"] else 1, r["headroom_bits"]) for r in rows]
    assert order == sorted(order, key=lambda t: (t[0], math.inf if math.isnan(t[1]) else t[1]))
    assert d.table_model.rowCount() == len(rows)
    # the view, sorted by its headroom column: inf/NaN rows (sort value -inf) first
    proxy = d.table_proxy
    shown = [proxy.index(i, 3).data(Qt.ItemDataRole.UserRole + 1) for i in range(len(rows))]
    assert shown == sorted(shown)
    assert shown[0] == (-math.inf if rows[0]["nonfinite"] else rows[0]["headroom_bits"])
    assert sorted(proxy.index(i, 0).data(Qt.ItemDataRole.UserRole + 1)
                  for i in range(len(rows))) == sorted(r["module"] for r in rows)


def test_tiny_fp16_run_matches_the_store(make, fp16_run):
    d = make(fp16_run)
    assert d.empty_text() == ""
    assert d.stack.currentWidget() is d.content
    assert d.step() == int(d.steps()[-1])                  # opens at the latest record
    _check_against_store(d, fp16_run, "act", "fp16")
    _check_against_store(d, fp16_run, "grad", "fp8_e4m3")
    assert d.skipped_steps().size >= 1                      # init scale 2^32 overflowed
    nf = d.events("nonfinite")
    assert nf and nf[0]["data"]["module"] == "blocks.1.attn.qkv"
    assert "non-finite" in d.status_text() and "skipped" in d.status_text()
    # one module: the curves keep that module only
    d.set_module("blocks.0.ffn.router")
    d.settle()
    assert d.absmax_plot.series_keys() == ["blocks.0.ffn.router"]
    assert {r["module"] for r in d.table_rows()} == {"blocks.0.ffn.router"}
    d.set_module(None)
    assert len(d.absmax_plot.series_keys()) > 1


def test_heatmap_and_table_follow_the_slider(make, fp16_run):
    d = make(fp16_run)
    meta, rec, _, _ = _records(fp16_run)
    d.set_kind("grad")
    d.set_format("fp16")
    edges = np.asarray(meta["precision_log2_edges"])
    k = meta["precision_kinds"].index("grad")
    for i in (0, 1):
        d.controls.set_index(i)
        s = int(rec["exp_hist"][0][i])
        assert d.step() == s
        hist = rec["exp_hist"][1][i, :, k].astype(np.float64)
        n = rec["counts"][1][i, :, k, 0].astype(np.float64)
        m = d.heatmap.matrix()
        first, stop = d.heat_window()
        assert m.shape == (len(meta["precision_modules"]), stop - first)
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = np.log10(hist / n[:, None])[:, first:stop]
        ref[~np.isfinite(ref)] = np.nan
        np.testing.assert_allclose(m, ref.astype(np.float32), rtol=1e-5, equal_nan=True)
        # the hover read-out of the fullest cell of the first module
        row0 = hist[0, first:stop]
        if row0.sum() > 0:
            col = int(np.argmax(row0))
            text = d.heatmap.hover_cell(0, col)
            assert f"{int(row0[col]):,} of {int(n[0]):,} elements" in text
            assert f"2^{int(edges[first + col])} ≤ |x|" in text and "in fp16:" in text
        # every occupied bin is inside the window
        occupied = np.flatnonzero(hist.sum(0) > 0)
        assert occupied.size == 0 or (first <= occupied[0] and occupied[-1] < stop)
        assert edges[first] <= math.floor(math.log2(RANGES["fp16"][2])) - 1
        d.settle()
        assert f"step {s:,}" in d.heatmap.title()
        absmax = rec["absmax"][1][i]
        r0 = d.table_rows()[-1]
        j = meta["precision_modules"].index(r0["module"])
        assert r0["absmax"] == pytest.approx(float(absmax[j, meta["precision_kinds"].index(r0["kind"])]),
                                             nan_ok=True)


def test_format_combo_moves_the_bands(make, fp16_run):
    d = make(fp16_run)
    for fmt, (mx, mn, ms) in RANGES.items():
        d.set_format(fmt)
        pos = d.edge_positions()
        assert pos["max"] == pytest.approx(math.log2(mx))
        assert pos["min_normal"] == pytest.approx(math.log2(mn))
        assert pos["min_subnormal"] == pytest.approx(math.log2(ms))
        z = d.zones()
        assert z["subnormal"] == pytest.approx((math.log2(ms) - 1, math.log2(mn)))
        assert z["overflow"][0] == pytest.approx(math.log2(mx))
        assert z["flush"][1] == pytest.approx(math.log2(ms) - 1)
        assert "max" in d._max_lines[fmt].label.format
        # the chosen format's max line is dashed on the abs-max plot, the others dotted
        styles = {f: line.pen.style() for f, line in d._max_lines.items()}
        assert styles.pop(fmt) == Qt.PenStyle.DashLine
        assert set(styles.values()) == {Qt.PenStyle.DotLine}
    # the heatmap window takes in the chosen format's range (bf16: 2^-134 .. 2^128)
    assert d.heat_window()[1] - d.heat_window()[0] < 80
    d.set_format("bf16")
    first, stop = d.heat_window()
    edges = d.data.edges
    assert edges[first] <= -134 and edges[stop] >= 128


def test_run_without_headroom_says_how_to_turn_it_on(make, tmp_path):
    tr = _train(tmp_path, 2, precision__headroom=False)
    tr.close()
    d = make(tr.run_dir)
    text = d.empty_text()
    assert "precision.headroom" in text and "setup panel" in text
    assert d.stack.currentWidget() is d.empty
    assert d.table_model.rowCount() == 0
    d.set_runs([])
    assert "precision.headroom" in d.empty_text()


def test_sample_run_without_records(make):
    run = sample_runs_dir() / "moe-vs-ensemble-moe"   # fp32, precision.headroom off
    with open_run(run) as r:
        assert "precision/absmax" not in r.tensor_names()
    d = make(run)
    # how to record it; not the note for an old run made with headroom on (no sample is
    # such a run since the samples were regenerated for issue 16)
    assert "precision.headroom" in d.empty_text() and "recorded none" not in d.empty_text()


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_pair_renders(make, name):
    run = sample_runs_dir() / name
    if not run.exists():
        pytest.skip(f"sample run {name} not generated")
    d = make(run)
    assert d.empty_text() == ""
    _check_against_store(d, run, "grad", "fp16")
    with open_run(run) as r:
        assert r.config["precision"]["mode"] == "fp16"
        assert r.config["moe"]["router_fp32"] is (name == "fp16-router-fp32")


def test_sample_pair_differs_in_overflow():
    """The recorded pair differs only in router precision. With the router in half
    precision its gradient overflows fp16 (skipped steps attributed to a router) and
    drives the loss scale lower than in the float32-router run, where no skipped step
    is the router's (see the preset's docstring for the measured numbers)."""
    runs = [sample_runs_dir() / n for n in SAMPLES]
    if not all(r.exists() for r in runs):
        pytest.skip("sample pair not generated")
    skips, floor = [], []
    for run in runs:
        with open_run(run) as r:
            ev = r.events(["loss_scale_backoff"])
            floor.append(r.scalars(["precision/loss_scale"])["value"].min())
        skips.append([str(d.get("module")) for d in ev["data"]])
    assert skips[0] and any(m.endswith("router") for m in skips[0])
    assert not any(m.endswith("router") for m in skips[1])
    assert floor[0] < floor[1]


def test_follows_a_growing_run(make, tmp_path):
    tr = _train(tmp_path, 0, train__steps=8, precision__mode="fp16")
    try:
        for _ in range(3):
            tr.step()
        tr.flush_records()
        tr.writer.flush()
        d = make(tr.run_dir)
        assert d.steps().tolist() == [1, 2]
        for _ in range(3):
            tr.step()
        tr.flush_records()
        tr.writer.flush()
        assert d.refresh() is True
        assert d.steps().tolist() == [1, 2, 4, 6] and d.step() == 6
        xs, _ = d.scale_plot.series_data("scale")
        assert xs.tolist() == [1, 2, 3, 4, 5, 6]
        assert d.refresh() is False
    finally:
        tr.close()


def test_registered_and_in_the_report(fp16_run):
    from moe_studio.gui.main_window import DASHBOARDS
    from moe_studio.gui.commands.report import render_dashboards

    assert dict(DASHBOARDS)["Precision"] == "moe_studio.gui.views.precision:PrecisionDashboard"
    ((title, pixmap, error),) = render_dashboards([fp16_run], 1000, tabs=["Precision"])
    assert title == "Precision" and error is None and not pixmap.isNull()
