"""The Experts, Gates and Training views' data readers, without a QApplication: on real
recorded sample runs (and small runs written here, for what no sample records: dead
experts, balancing biases, a growing run), what each reader holds equals an independent
computation made here directly from the store, by another read path where there is one
(one record at a time instead of whole series) and plain loops."""
from __future__ import annotations

import math
from pathlib import Path
import statistics
import subprocess
import sys

import numpy as np
import pytest

from moe_studio.gui.views import experts_data as ED
from moe_studio.gui.views import gates_data as GD
from moe_studio.gui.views import training_data as TD
from moe_studio.samples import sample_runs_dir
from moe_studio.store import RunWriter, open_run


VIEWS_DIR = Path(__file__).resolve().parents[1] / "moe_studio" / "gui" / "views"
READERS = sorted(f"views.{p.stem}" for p in VIEWS_DIR.glob("*_data.py")) + ["run.polling"]


@pytest.mark.parametrize("module", READERS)
def test_the_reader_imports_no_qt(module):
    """Importing a reader loads no Qt, pyqtgraph or torch module (the import-graph rule
    says the same from the source; this runs it)."""
    code = (f"import sys, moe_studio.gui.{module}; "
            "bad = sorted(k for k in sys.modules if k.startswith(('PySide6', 'pyqtgraph', 'torch'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def top2():
    with open_run(sample_runs_dir() / "moe-top2") as r:
        yield r


# ----------------------------------------------------------------------------- Experts

def test_experts_reader_on_a_sample_run(top2):
    blocks = [int(b) for b in top2.meta["moe_blocks"]]
    d = ED.ExpertsData()
    d.load(top2, 0, blocks)
    assert d.blocks == blocks and d.n_experts == 8 and d.router == "topk"
    assert d.dropless                                   # capacity_factor 0

    # one record at a time, not the whole series
    steps = top2.tensor_steps("moe/tokens_per_expert")
    assert d.steps.tolist() == steps.tolist()
    picks = np.linspace(0, steps.size - 1, 12).astype(int)
    for i in picks.tolist():
        s, tokens = top2.tensor("moe/tokens_per_expert", int(steps[i]))
        assert s == steps[i]
        np.testing.assert_array_equal(d.tokens()[i], tokens)
        for r in range(len(blocks)):
            loads = [float(v) for v in tokens[r]]
            mean = sum(loads) / len(loads)
            # per-expert token shares of the row, against the uniform share
            assert math.isclose(d.derived("cv")[i, r], statistics.pstdev(loads) / mean, rel_tol=1e-9)
            assert math.isclose(d.derived("max_mean")[i, r], max(loads) / mean, rel_tol=1e-9)
            for e, n in enumerate(loads):
                share = n / sum(loads)
                assert math.isclose(d.derived("over_uniform")[i, r, e], share * len(loads),
                                    rel_tol=1e-9)
            assert d.derived("dropped")[i, r] == 0.0   # dropless: nothing dropped
        # the bars at the step: all layers, then one
        vals, dead, uniform = d.at_step(i, d.rows(None))
        np.testing.assert_array_equal(vals, tokens)
        # dead: no tokens in any record of the last dead_window steps, record by record
        window = [int(t) for t in steps if steps[i] - d.dead_window < t <= steps[i]]
        recs = [top2.tensor("moe/tokens_per_expert", t)[1] for t in window]
        expect = [[all(rec[r][e] == 0 for rec in recs) for e in range(8)]
                  for r in range(len(blocks))]
        np.testing.assert_array_equal(dead, np.array(expect))
        assert math.isclose(uniform, tokens.sum() / len(blocks) / 8, rel_tol=1e-12)
        vals, _, uniform = d.at_step(i, d.rows(blocks[2]))
        np.testing.assert_array_equal(vals, tokens[2:3])
        assert math.isclose(uniform, tokens[2].sum() / 8, rel_tol=1e-12)

    # load / uniform over the run: row (layer, expert), column step
    mat, labels = d.over_time(None)
    assert mat.shape == (len(blocks) * 8, steps.size)
    assert labels[:2] == ["L0 e0", "L0 e1"] and labels[-1] == f"L{blocks[-1]} e7"
    i = int(picks[5])
    _, tokens = top2.tensor("moe/tokens_per_expert", int(steps[i]))
    assert math.isclose(mat[3 * 8 + 5, i], float(tokens[3, 5]) / (float(tokens[3].sum()) / 8),
                        rel_tol=1e-9)
    assert d.cell_of_step_map(3 * 8 + 5, i, None) == (3, 5, int(steps[i]))
    mat1, labels1 = d.over_time(blocks[1])
    assert labels1 == [f"e{e}" for e in range(8)]
    np.testing.assert_array_equal(mat1, mat[8:16])
    assert d.cell_of_step_map(5, i, blocks[1]) == (1, 5, int(steps[i]))
    assert d.bias() is None and d.bias_series(None) == []
    assert d.step_index(int(steps[i]) + 1) == i and d.step_index(None) is None


def test_experts_probe_tokens_of_a_cell(top2):
    snap = top2.snapshot("routing/probe")
    a = snap.arrays
    got = ED.probe_choices(a, 1, 3)
    idx, w = a["topk_idx"][1], a["topk_weight"][1]
    want = {}
    for t in range(idx.shape[0]):
        for k in range(idx.shape[1]):
            if int(idx[t, k]) == 3:
                want[t] = (k, float(w[t, k]))
                break
    assert got == want and list(got) == sorted(want)
    assert 0 < len(got) < idx.shape[0]


def _writer(tmp_path, name: str, config: dict):
    return RunWriter.create(tmp_path, name=name, config=config, config_toml="",
                            commit_interval=0.01)


def test_experts_reader_dead_experts_biases_and_a_growing_run(tmp_path):
    """Dead experts (no tokens in the window), the balancing biases, and what a live
    run's later records add: one load and an ingest equal one load of the whole run."""
    rng = np.random.default_rng(0)
    cfg = {"moe": {"n_experts": 3, "router": "aux_free", "capacity_factor": 1.0}}
    w = _writer(tmp_path, "dead", cfg)
    tokens, biases = {}, {}

    def record(step):
        t = rng.integers(1, 50, size=(2, 3)).astype(np.float32)
        if step >= 20:
            t[1, 2] = 0.0                 # layer 1's expert 2 gets nothing from step 20 on
        tokens[step], biases[step] = t, rng.normal(size=(2, 3)).astype(np.float32)
        w.add_tensor(step, "moe/tokens_per_expert", t)
        w.add_tensor(step, "moe/dropped_per_expert", np.floor(t / 5))
        w.add_tensor(step, "moe/bias", biases[step])

    for s in range(0, 40, 10):
        record(s)
    w.flush()
    try:
        with open_run(w.run_dir) as r:
            d = ED.ExpertsData(dead_window=15)
            d.load(r, 0, [0, 1])
            f = r.follower(from_start=False)
            assert not d.dropless and d.steps.tolist() == [0, 10, 20, 30]
            # dead: no tokens in any record of (step - 15, step]
            want = [[all(tokens[s][row, e] == 0 for s in tokens if step - 15 < s <= step)
                     for row in range(2) for e in range(3)] for step in sorted(tokens)]
            assert d.derived("dead_mask").reshape(4, 6).tolist() == want
            assert d.derived("dead")[:, 1].tolist() == [0, 0, 0, 1]   # step 20 sees step 10
            d.set_dead_window(5)
            assert d.derived("dead")[:, 1].tolist() == [0, 0, 1, 1]
            for i, s in enumerate(sorted(tokens)):
                dropped = sum(float(np.floor(v / 5)) for v in tokens[s][0])
                assert math.isclose(d.derived("dropped")[i, 0], 100 * dropped / tokens[s][0].sum(),
                                    rel_tol=1e-6)
            # biases: each expert's in one layer, the spread of each layer for all
            series = d.bias_series(1)
            assert [(k, c) for k, c, _ in series] == [("e0", 0), ("e1", 1), ("e2", 2)]
            np.testing.assert_allclose(series[2][2], [biases[s][1, 2] for s in sorted(biases)])
            spread = d.bias_series(None)
            assert [k for k, _, _ in spread] == ["L0", "L1"]
            np.testing.assert_allclose(spread[0][2], [max(biases[s][0]) - min(biases[s][0])
                                                      for s in sorted(biases)], rtol=1e-6)

            # the run grows: the poll's new steps are appended, and only those
            v0 = d.version
            for s in (40, 50):
                record(s)
            w.flush()
            f.poll()
            assert d.ingest(r, 0) is True and d.version > v0
            whole = ED.ExpertsData(dead_window=5)
            whole.load(r, 0, [0, 1])
            assert d.steps.tolist() == whole.steps.tolist() == [0, 10, 20, 30, 40, 50]
            for key in ("dead_mask", "dropped", "cv", "over_uniform"):
                np.testing.assert_array_equal(d.derived(key), whole.derived(key))
            np.testing.assert_array_equal(d.bias(), whole.bias())
            assert d.ingest(r, 0) is False                       # nothing new
    finally:
        w.close("finished")


# ----------------------------------------------------------------------------- Gates

def _percentile_walk(edges, counts, q):
    """The q-th percentile of a histogram: walk the bins to the q-th share of the total
    and interpolate inside that bin."""
    total = float(sum(counts))
    target, acc = q / 100 * total, 0.0
    for b, n in enumerate(counts):
        if n and acc + n >= target:
            return edges[b] + (target - acc) / n * (edges[b + 1] - edges[b])
        acc += n
    return edges[-1]


def test_gates_reader_on_a_sample_run(top2):
    blocks = [int(b) for b in top2.meta["moe_blocks"]]
    d = GD.GatesData()
    d.load(top2, 0, blocks)
    assert d.blocks == blocks and d.n_experts == 8
    steps = top2.snapshot_steps("routing/probe")   # histograms are taken with the probe
    assert d.steps().tolist() == steps.tolist()

    # all layers pooled, at a few steps, from one histogram record at a time
    ps, pe, pc = d.pooled_histogram(None)
    assert ps.tolist() == steps.tolist()
    bs, bands = d.percentile_bands(None)
    for i in (0, steps.size // 2, steps.size - 1):
        recs = [top2.histogram(f"router_probs/L{b}", int(steps[i])) for b in blocks]
        assert all(rec[0] == steps[i] for rec in recs)
        edges = recs[0][1]
        pooled = [sum(float(rec[2][k]) for rec in recs) for k in range(edges.size - 1)]
        np.testing.assert_allclose(pc[i], pooled)
        for j, q in enumerate((0, 7, 16, 31, 50, 69, 84, 93, 100)):
            assert math.isclose(bands[i, j], _percentile_walk(edges, pooled, q), abs_tol=1e-9)
        s, centres, width, share = GD.histogram_at((ps, pe, pc), int(steps[i]) + 1)
        assert s == steps[i]
        np.testing.assert_allclose(share, [100 * n / sum(pooled) for n in pooled])
        np.testing.assert_allclose(centres, (edges[:-1] + edges[1:]) / 2)
        assert math.isclose(width, min(np.diff(edges)))
    assert GD.histogram_at((ps, pe, pc), None) is None

    # one layer: its own histograms; its curves are the stored scalars
    s1, _, c1 = d.pooled_histogram(blocks[1])
    rec = top2.histogram(f"router_probs/L{blocks[1]}", int(steps[3]))
    np.testing.assert_array_equal(c1[3], rec[2])
    for name in GD.CURVES:
        df = top2.scalars([f"moe/L{blocks[1]}/{name}"], member=0)
        x, y = d.curve(blocks[1], name)
        want = sorted(zip(df["step"].tolist(), df["value"].tolist()))
        assert list(zip(x.tolist(), y.tolist())) == want
    assert d.curve(99, "entropy") is None
    entropy = d.curve(blocks[0], "entropy")[1]
    assert entropy.max() <= math.log(8) + 1e-6            # never above the uniform router's


def test_gates_reader_follows_a_growing_run(tmp_path):
    w = _writer(tmp_path, "gates", {"moe": {"n_experts": 4}})
    edges = np.linspace(0, 1, 6)
    rng = np.random.default_rng(1)

    def record(step):
        for b in (0, 2):
            w.add_histogram(step, f"router_probs/L{b}", edges, rng.integers(0, 9, 5))
            w.add_scalars(step, {f"moe/L{b}/entropy": float(rng.random()),
                                 f"moe/L{b}/top1_prob": float(rng.random()), "train/loss": 1.0})

    for s in (2, 4):
        record(s)
    w.flush()
    try:
        with open_run(w.run_dir) as r:
            d = GD.GatesData()
            d.load(r, 0, [0, 2])
            f = r.follower(from_start=False)
            assert d.steps().tolist() == [2, 4]
            record(6)
            w.flush()
            v0 = d.version
            assert d.ingest(r, f.poll(), 0) is True and d.version > v0
            whole = GD.GatesData()
            whole.load(r, 0, [0, 2])
            assert d.steps().tolist() == whole.steps().tolist() == [2, 4, 6]
            for b in (0, 2):
                for name in ("entropy", "top1_prob"):
                    np.testing.assert_array_equal(d.curve(b, name)[1], whole.curve(b, name)[1])
            np.testing.assert_array_equal(d.pooled_histogram(None)[2], whole.pooled_histogram(None)[2])
            assert d.ingest(r, f.poll(), 0) is False
    finally:
        w.close("finished")


# ----------------------------------------------------------------------------- Training

@pytest.fixture
def bagging():
    with open_run(sample_runs_dir() / "bagging-4") as r:
        yield r


def test_training_reader_on_an_ensemble_sample(bagging):
    t = TD.RunTrack.of(0, sample_runs_dir() / "bagging-4", bagging, bagging.follower(), moe_layers=0)
    assert (t.name, t.members, t.total_steps, t.status) == ("bagging-4", 4, 500, "finished")
    changed = TD.ingest(t, t.follower.poll().scalars, TD.X_STEP)
    # every plotted series, each member's and the run-wide ones; never the tokens column
    assert ("train/loss", 3) in changed and ("val/loss", -1) in changed and ("lr", -1) in changed
    assert all(name in TD.PLOT_OF for name, _ in changed)
    for name, member in [("train/loss", 0), ("train/loss", 3), ("val/loss", -1), ("lr", -1)]:
        df = bagging.scalars([name], member=member)
        step, value, _ = t.buffers[(name, member)].view()
        assert list(zip(step.tolist(), value.tolist())) == \
            sorted(zip(df["step"].astype(float).tolist(), df["value"].tolist()))

    # the tokens axis: the run-wide tokens record at its steps, interpolated between,
    # proportional to the step outside
    tok = bagging.scalars(["tokens"], member=-1).sort_values("step")
    s, n = tok["step"].to_numpy(float), tok["value"].to_numpy(float)
    np.testing.assert_allclose(t.tokens_at(s), n)
    mid = (s[3] + s[4]) / 2
    assert math.isclose(t.tokens_at(np.array([mid]))[0], (n[3] + n[4]) / 2, rel_tol=1e-12)
    assert math.isclose(t.tokens_at(np.array([2 * s[-1]]))[0], 2 * n[-1], rel_tol=1e-12)
    buf = t.buffers[("train/loss", 1)]
    np.testing.assert_allclose(TD.x_of(t, buf, TD.X_TOKENS), t.tokens_at(buf.view()[0]))
    walls = bagging.scalars(None)["wall_time"]
    np.testing.assert_allclose(TD.x_of(t, buf, TD.X_WALL), buf.view()[2] - walls.min())
    assert TD.x_of(t, buf, TD.X_WALL).min() >= 0

    # the planned end: only while running, and never on wall time
    assert TD.planned_end([t], TD.X_STEP) is None
    t.status = "running"
    assert TD.planned_end([t], TD.X_STEP) == 500
    assert math.isclose(TD.planned_end([t], TD.X_TOKENS), t.tokens_at(np.array([500.0]))[0])
    assert TD.planned_end([t], TD.X_WALL) is None

    # names and colours: members, the ensemble, one run or an overlay
    assert TD.series_style(t, "train/loss", 2, False) == ("train m2", 2)
    assert TD.series_style(t, "val/loss", -1, False) == ("val ensemble", "ensemble")
    assert TD.series_style(t, "lr", -1, False) == ("lr", 0)
    u = TD.RunTrack.of(1, sample_runs_dir() / "bagging-4", bagging, bagging.follower(), moe_layers=0)
    TD.label_overlay([t, u])      # one name twice: told apart by the run id
    assert t.label == f"bagging-4 ({bagging.run_id})"
    assert TD.series_style(u, "val/loss", -1, True) == (f"{u.label} · val ensemble", (1, 4))
    assert TD.series_style(u, "train/loss", 1, True) == (f"{u.label} · train m1", (1, 1))


def test_training_buffers_take_rows_in_any_order(bagging):
    """A poll's rows in pieces and out of order end as one ascending series per
    (name, member), as if read at once."""
    df = bagging.scalars(["train/loss", "val/loss", "tokens"], member=None)
    shuffled = df.sample(frac=1.0, random_state=3)
    once = TD.RunTrack.of(0, sample_runs_dir() / "bagging-4", bagging, bagging.follower(), moe_layers=0)
    parts = TD.RunTrack.of(1, sample_runs_dir() / "bagging-4", bagging, bagging.follower(), moe_layers=0)
    TD.ingest(once, df, TD.X_STEP)
    keys = set()
    for chunk in np.array_split(np.arange(len(shuffled)), 7):
        keys |= TD.ingest(parts, shuffled.iloc[chunk], TD.X_TOKENS)
    assert set(parts.buffers) == set(once.buffers) and ("tokens", -1) not in keys
    for key, buf in once.buffers.items():
        a, b = buf.view(), parts.buffers[key].view()
        assert np.all(np.diff(b[0]) >= 0)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])      # each value stays with its step
    assert parts.last_step() == int(df["step"].max())
    assert parts.last_value("val/loss", -1) == \
        df[(df["name"] == "val/loss") & (df["member"] == -1)].sort_values("step")["value"].iloc[-1]
