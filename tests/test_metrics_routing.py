"""Routing statistics (moe_studio.metrics.routing) against independent computations:
plain loops, np.percentile on the raw values, collections.Counter."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from moe_studio.data.tokenizer import TOKEN_CLASSES, token_class
from moe_studio.metrics import routing as R


def fake_probe(n=300, layers=3, experts=6, k=2, domains=2, seed=0):
    """A routing/probe snapshot as the trainer records it (CONTRACTS.md)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(layers, n, experts))
    dom = np.repeat(np.arange(domains), n // domains + 1)[:n].astype(np.uint8)
    logits[..., 0] += 2.0 * (dom == 0)      # domain 0 prefers expert 0
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    idx = np.argsort(-probs, axis=-1)[..., :k].astype(np.int16)
    w = np.take_along_axis(probs, idx.astype(np.int64), -1)
    w = (w / w.sum(-1, keepdims=True)).astype(np.float16)
    text = ("The quick brown fox, 42 times! def f(x): return x[0] + {'a': 1}\n\t" * 10)
    tokens = np.frombuffer(text.encode()[:n], np.uint8).copy()
    return {"tokens": tokens, "domains": dom, "topk_idx": idx, "topk_weight": w,
            "probs": probs.astype(np.float16)}


# ----------------------------------------------------------------------- percentiles

def test_histogram_percentiles_small_exact_cases():
    edges = np.array([0.0, 1, 2, 3, 4])
    counts = np.array([0, 2, 2, 0])
    p = R.histogram_percentiles(edges, counts, (0, 25, 50, 75, 100))
    # CDF: 0 at 1, 2 at 2, 4 at 3 (linear inside each bin); min/max are the outer edges
    # of the non-empty bins, never the empty ones around them.
    np.testing.assert_allclose(p, [1.0, 1.5, 2.0, 2.5, 3.0])
    assert np.isnan(R.histogram_percentiles(edges, np.zeros(4))).all()
    # a leading step axis, and one histogram with all its mass in one bin
    two = R.histogram_percentiles(edges, np.array([[0, 2, 2, 0], [0, 0, 0, 5]]))
    assert two.shape == (2, 9)
    np.testing.assert_allclose(two[1], np.linspace(3, 4, 101)[list(R.BAND_PERCENTILES)])
    with pytest.raises(ValueError):
        R.histogram_percentiles(edges, np.ones(3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_percentiles_match_np_percentile_of_the_raw_values(seed):
    rng = np.random.default_rng(seed)
    # router probabilities of 8 experts: a pile near 0 and a tail up to 1
    raw = rng.dirichlet(np.full(8, 0.3), size=2000).reshape(-1)
    edges = np.linspace(0.0, 1.0, 51)
    counts, _ = np.histogram(raw, bins=edges)
    got = R.histogram_percentiles(edges, counts)
    want = np.percentile(raw, R.BAND_PERCENTILES)
    width = edges[1] - edges[0]
    # Inside a bin the histogram forgets where the values were: one bin width at most.
    assert np.all(np.abs(got - want) <= width + 1e-12), (got, want)
    assert np.all(np.diff(got) >= 0)


def test_histogram_percentiles_loop_reference():
    """A plain-loop CDF walk over random histograms with empty bins."""
    rng = np.random.default_rng(5)
    edges = np.sort(rng.uniform(0, 10, 13))
    for _ in range(20):
        counts = rng.integers(0, 4, 12) * (rng.random(12) < 0.6)
        if counts.sum() == 0:
            continue
        got = R.histogram_percentiles(edges, counts)
        total = counts.sum()
        for q, v in zip(R.BAND_PERCENTILES, got):
            target = q / 100 * total
            acc = 0.0
            for j, c in enumerate(counts):
                if c == 0:
                    continue
                if acc + c >= target:
                    want = edges[j] + (target - acc) / c * (edges[j + 1] - edges[j])
                    break
                acc += c
            assert math.isclose(v, want, rel_tol=1e-9, abs_tol=1e-9)


# ----------------------------------------------------------------------- load

def test_choice_counts_and_balance_figures_against_counter():
    snap = fake_probe()
    E = 6
    got = R.choice_counts(snap["topk_idx"], E)
    got1 = R.choice_counts(snap["topk_idx"], E, top1=True)
    for layer in range(3):
        c = Counter(int(e) for row in snap["topk_idx"][layer] for e in row)
        c1 = Counter(int(row[0]) for row in snap["topk_idx"][layer])
        assert got[layer].tolist() == [c[e] for e in range(E)]
        assert got1[layer].tolist() == [c1[e] for e in range(E)]
        loads = [c[e] for e in range(E)]
        mean = sum(loads) / E
        std = math.sqrt(sum((x - mean) ** 2 for x in loads) / E)
        assert math.isclose(R.load_cv(got)[layer], std / mean)
        assert math.isclose(R.max_over_mean(got)[layer], max(loads) / mean)
        for e in range(E):
            assert math.isclose(R.load_share(got)[layer, e], loads[e] / sum(loads))
            assert math.isclose(R.load_over_uniform(got)[layer, e], loads[e] / mean)
    w = R.choice_counts(snap["topk_idx"], E, weights=snap["topk_weight"])
    want = np.zeros((3, E))
    for layer in range(3):
        for row, wr in zip(snap["topk_idx"][layer], snap["topk_weight"][layer]):
            for e, x in zip(row, wr):
                want[layer, e] += float(x)
    np.testing.assert_allclose(w, want, rtol=1e-9)
    assert R.uniform_share(8) == 0.125
    # nothing routed: zeros, not NaN
    assert R.load_cv(np.zeros(4)) == 0 and R.max_over_mean(np.zeros(4)) == 0
    with pytest.raises(ValueError):
        R.choice_counts(np.array([[7]]), 4)


def test_dropped_fraction_loop():
    rng = np.random.default_rng(1)
    routed = rng.integers(0, 50, (5, 3, 8)).astype(float)
    dropped = np.floor(routed * rng.random(routed.shape))
    got = R.dropped_fraction(dropped, routed)
    for s in range(5):
        for layer in range(3):
            want = sum(dropped[s, layer]) / sum(routed[s, layer])
            assert math.isclose(got[s, layer], want)
    assert R.dropped_fraction(np.zeros(3), np.zeros(3)) == 0


def test_dead_experts_over_a_step_window_loop():
    rng = np.random.default_rng(2)
    steps = np.arange(2, 82, 2)                       # log_every = 2
    load = rng.integers(0, 3, (steps.size, 2, 5)).astype(float)
    load[:, 0, 3] = 0                                 # always dead
    load[-4:, 1, 1] = 0                               # dead for the last 4 records (8 steps)
    load[:-4, 1, 1] = 5
    window = 7
    mask = R.dead_expert_mask(steps, load, window)
    for i, s in enumerate(steps):
        recs = [j for j, t in enumerate(steps) if s - window < t <= s]
        for layer in range(2):
            for e in range(5):
                assert mask[i, layer, e] == all(load[j, layer, e] == 0 for j in recs)
    last = R.dead_experts(steps, load, window)
    assert last[0, 3] and last[1, 1]
    assert not R.dead_experts(steps, load, 9)[1, 1]   # the window reaches back to a live record
    np.testing.assert_array_equal(R.dead_expert_counts(steps, load, window), mask.sum(-1))
    assert R.dead_experts(np.empty(0, int), np.empty((0, 2, 5)), 5).shape == (2, 5)


# ----------------------------------------------------------------------- gates

def test_entropy_and_top1_against_loops():
    snap = fake_probe(n=40)
    probs = snap["probs"].astype(np.float64)
    ent = R.gate_entropy(snap["probs"])
    top = R.top1_prob(snap["probs"])
    for layer in range(3):
        for i in range(40):
            p = probs[layer, i]
            assert math.isclose(ent[layer, i], -sum(x * math.log(x) for x in p if x > 0),
                                rel_tol=1e-9)
            assert top[layer, i] == max(p)
    assert R.gate_entropy(np.array([1.0, 0.0, 0.0])) == 0.0
    assert math.isclose(R.gate_entropy(np.full(4, 0.25)), math.log(4))
    np.testing.assert_array_equal(R.top1_expert(snap["topk_idx"]), snap["topk_idx"][..., 0])


# ----------------------------------------------------------------------- specialisation

@pytest.mark.parametrize("top1", [False, True])
def test_domain_expert_share_against_a_loop(top1):
    snap = fake_probe()
    share = R.domain_expert_share(snap["domains"], snap["topk_idx"], 2, 6, top1=top1)
    assert share.shape == (3, 2, 6)
    for layer in range(3):
        for d in range(2):
            choices = [int(e) for dom, row in zip(snap["domains"], snap["topk_idx"][layer])
                       if dom == d for e in (row[:1] if top1 else row)]
            c = Counter(choices)
            for e in range(6):
                assert math.isclose(share[layer, d, e], c[e] / len(choices))
    np.testing.assert_allclose(share.sum(-1), 1.0)
    # domain 0 was built to prefer expert 0
    assert (share[:, 0, 0] > share[:, 1, 0]).all()
    one = R.domain_expert_share(snap["domains"], snap["topk_idx"][1], 2, 6, top1=top1)
    np.testing.assert_array_equal(one, share[1])


def test_share_matrix_empty_group_is_nan_and_weights():
    idx = np.array([[0, 1], [1, 2], [2, 0]])
    share = R.share_matrix([0, 0, 2], idx, 3, 3)
    np.testing.assert_allclose(share[0], [0.25, 0.5, 0.25])
    assert np.isnan(share[1]).all()
    np.testing.assert_allclose(share[2], [0.5, 0.0, 0.5])
    w = np.array([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0]])
    sw = R.share_matrix([0, 0, 0], idx, 1, 3, weights=w)
    np.testing.assert_allclose(sw[0], [(0.75 + 0) / 3, (0.25 + 0.5) / 3, (0.5 + 1.0) / 3])
    with pytest.raises(ValueError):
        R.share_matrix([0, 5, 0], idx, 3, 3)


@pytest.mark.parametrize("top1", [False, True])
def test_class_expert_share_against_counter(top1):
    snap = fake_probe()
    share = R.class_expert_share(snap["tokens"], snap["topk_idx"], 6, top1=top1)
    assert share.shape == (3, len(TOKEN_CLASSES), 6)
    for layer in range(3):
        per_class: dict[str, Counter] = {}
        for b, row in zip(snap["tokens"], snap["topk_idx"][layer]):
            for e in (row[:1] if top1 else row):
                per_class.setdefault(token_class(int(b)), Counter())[int(e)] += 1
        for ci, name in enumerate(TOKEN_CLASSES):
            c = per_class.get(name)
            if c is None:
                assert np.isnan(share[layer, ci]).all()
                continue
            n = sum(c.values())
            for e in range(6):
                assert math.isclose(share[layer, ci, e], c[e] / n)


def test_total_variation_between_groups():
    share = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [np.nan] * 3])
    assert math.isclose(R.group_total_variation(share), 0.5)
    three = np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    assert math.isclose(R.group_total_variation(three), (1 + 0 + 1) / 3)
    assert np.isnan(R.group_total_variation(np.array([[1.0, 0.0]])))
    stacked = R.group_total_variation(np.stack([share, three]))
    np.testing.assert_allclose(stacked, [0.5, 2 / 3])


def test_tokens_in_cell_and_context():
    snap = fake_probe(n=60)
    idx = snap["topk_idx"][2]
    got = R.tokens_in_cell(snap["domains"], idx, 1, 3)
    want = [i for i in range(60) if snap["domains"][i] == 1 and 3 in idx[i].tolist()]
    assert got.tolist() == want
    got1 = R.tokens_in_cell(None, idx, None, 3, top1=True)
    assert got1.tolist() == [i for i in range(60) if idx[i, 0] == 3]

    toks = np.frombuffer("ab\ncé fin".encode(), np.uint8)
    before, ch, after = R.token_context(toks, 5, width=3)  # second byte of 'é'
    assert ch == "é" and before == "b↵c" and after == " fi"
    assert R.token_context(toks, 0, width=2) == ("", "a", "b↵")
    with pytest.raises(IndexError):
        R.token_context(toks, 99)
