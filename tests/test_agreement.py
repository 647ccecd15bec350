"""Agreement metrics and combination rules, each against an independent plain-numpy
reference written here from the definitions (contingency counts by explicit loops, KL
divergences instead of the entropy form, explicit vote counting)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from moe_studio.engine import _native
from moe_studio.engine import agreement as ag
from moe_studio.engine.combine import (RULES, Stacking, evaluate_rules, make_rule, nll_acc,
                                       split_fit_report)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def members(m=4, n=300, v=7, seed=0, spread=(0.5, 1.0, 1.5, 2.5)):
    """Log-probs [M, N, V] of members sharing a signal, and targets drawn from it."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, v)) * 2.0
    noise = rng.normal(size=(m, n, v)) * np.asarray(spread[:m])[:, None, None]
    z = base[None] + noise
    lp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
    p = np.exp(base - base.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = np.array([rng.choice(v, p=row) for row in p])
    return lp.astype(np.float32), y


# ------------------------------------------------------------------ plain-numpy references
def ref_counts(ci, ck):
    n11 = n10 = n01 = n00 = 0
    for a, b in zip(ci, ck):
        if a and b:
            n11 += 1
        elif a and not b:
            n10 += 1
        elif not a and b:
            n01 += 1
        else:
            n00 += 1
    return n11, n10, n01, n00


def ref_pair_measures(ci, ck):
    n11, n10, n01, n00 = ref_counts(ci, ck)
    n = n11 + n10 + n01 + n00
    q = (n11 * n00 - n01 * n10) / (n11 * n00 + n01 * n10)
    rho = (n11 * n00 - n01 * n10) / math.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    dis = (n01 + n10) / n
    df = n00 / n
    # Cohen's kappa from observed and chance agreement of the 2x2 table
    po = (n11 + n00) / n
    pe = ((n11 + n10) / n) * ((n11 + n01) / n) + ((n01 + n00) / n) * ((n10 + n00) / n)
    kappa = (po - pe) / (1 - pe)
    return q, rho, dis, df, kappa


def ref_interrater(correct):
    m, n = correct.shape
    right = [sum(int(correct[i, j]) for i in range(m)) for j in range(n)]
    p = sum(right) / (n * m)
    return 1 - sum(rj * (m - rj) for rj in right) / m / (n * (m - 1) * p * (1 - p))


def ref_kl(p, q):
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))


def ref_entropy(p):
    return float(-sum(pi * math.log(pi) for pi in p if pi > 0))


# ------------------------------------------------------------------ tests
# Every V-axis measure is checked through both passes: the chunked torch one and the
# fused native kernel (built by setup.py wherever a C compiler is; see
# test_native_kernel_is_built).
BACKENDS = ["torch", "native"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "native" and not _native.available():
        pytest.skip("native agreement kernel not built here")
    return request.param


def test_oracle_measures_match_contingency_counts():
    lp, y = members()
    correct = np.argmax(lp, -1) == y[None]
    r = ag.ensemble_metrics(lp, y)
    assert np.array_equal(r["correct"], correct)
    m = len(lp)
    pairs = list(itertools.combinations(range(m), 2))
    refs = {pq: ref_pair_measures(correct[pq[0]], correct[pq[1]]) for pq in pairs}
    names = ["pair_q", "pair_correlation", "pair_disagreement", "pair_double_fault", "pair_kappa"]
    for idx, name in enumerate(names):
        mat = r[name]
        assert np.allclose(mat, mat.T)
        for (i, k), ref in refs.items():
            assert mat[i, k] == pytest.approx(ref[idx], abs=1e-12), (name, i, k)
    # the matrices built directly agree with the one-pass result
    assert np.allclose(ag.pairwise_q(correct), r["pair_q"])
    assert np.allclose(ag.pairwise_kappa(correct), r["pair_kappa"])
    for name, idx in [("q_statistic", 0), ("correlation", 1), ("disagreement", 2),
                      ("double_fault", 3), ("kappa_pairwise", 4)]:
        assert r[name] == pytest.approx(np.mean([refs[pq][idx] for pq in pairs]), abs=1e-12)
    assert r["kappa_interrater"] == pytest.approx(ref_interrater(correct), abs=1e-12)
    # Kuncheva & Whitaker: interrater kappa = 1 - D_av / (2 p (1 - p))
    p = correct.mean()
    assert r["kappa_interrater"] == pytest.approx(1 - r["disagreement"] / (2 * p * (1 - p)), abs=1e-12)
    # diagonals by definition
    assert np.allclose(np.diag(r["pair_q"]), 1) and np.allclose(np.diag(r["pair_disagreement"]), 0)
    assert np.allclose(np.diag(r["pair_double_fault"]), 1 - correct.mean(1))


def test_known_table_and_undefined_pairs():
    # N11 = 3, N10 = 1, N01 = 2, N00 = 4 for members (0, 1)
    c = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
                  [1, 1, 1, 0, 1, 1, 0, 0, 0, 0],
                  [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=bool)   # member 2 never wrong
    n11, n10, n01, n00 = ag.oracle_counts(c)
    assert (n11[0, 1], n10[0, 1], n01[0, 1], n00[0, 1]) == (3, 1, 2, 4)
    q = ag.pairwise_q(c)
    assert q[0, 1] == pytest.approx((12 - 2) / (12 + 2))
    assert math.isnan(q[0, 2]) and math.isnan(ag.pairwise_correlation(c)[1, 2])
    assert ag.pair_mean(q) == pytest.approx(10 / 14)            # undefined pairs skipped
    assert math.isnan(ag.interrater_kappa(np.ones((3, 5), bool)))
    assert math.isnan(ag.pair_mean(np.full((2, 2), np.nan)))


def test_agreement_js_and_entropy_decomposition(backend):
    lp, y = members(m=3, n=120, v=5, seed=1)
    p = np.exp(lp.astype(np.float64))
    r = ag.ensemble_metrics(lp, y, per_token=True, backend=backend)
    assert r["backend"] == backend
    pred = np.argmax(lp, -1)
    m, n, _ = lp.shape
    for i in range(m):
        for k in range(m):
            same = sum(1 for t in range(n) if pred[i, t] == pred[k, t]) / n
            assert r["agreement"][i, k] == pytest.approx(same, abs=1e-12)
            js = np.mean([0.5 * ref_kl(p[i, t], (p[i, t] + p[k, t]) / 2)
                          + 0.5 * ref_kl(p[k, t], (p[i, t] + p[k, t]) / 2) for t in range(n)])
            assert r["pair_js"][i, k] == pytest.approx(js, abs=2e-5)
            assert 0 <= r["pair_js"][i, k] <= math.log(2) + 1e-6
    total = np.array([ref_entropy(p[:, t].mean(0)) for t in range(n)])
    expected = np.array([np.mean([ref_entropy(p[i, t]) for i in range(m)]) for t in range(n)])
    assert np.allclose(r["token_entropy_total"], total, atol=2e-5)
    assert np.allclose(r["token_entropy_expected"], expected, atol=2e-5)
    assert np.allclose(r["token_mutual_info"], total - expected, atol=3e-5)
    assert (r["token_mutual_info"] > -1e-5).all()
    assert r["entropy_total"] == pytest.approx(total.mean(), abs=2e-5)
    assert r["entropy_expected"] == pytest.approx(expected.mean(), abs=2e-5)
    assert r["mutual_info"] == pytest.approx((total - expected).mean(), abs=3e-5)
    assert r["js_divergence"] == pytest.approx(np.mean([r["pair_js"][i, k] for i, k in [(0, 1), (0, 2), (1, 2)]]))
    # the helpers take the default backend: float32 either way, exp and log differ in
    # the last bits (torch's vs the kernel's), so values near 0 differ by ~1e-7
    d = ag.entropy_decomposition(lp)
    assert np.allclose(d["mutual_info"], r["token_mutual_info"], atol=1e-6)
    assert np.allclose(ag.js_divergence_matrix(lp), r["pair_js"], atol=1e-6)


def test_nll_accuracy_gain_and_input_forms(monkeypatch, backend):
    lp, y = members(seed=2)
    lp64 = lp.astype(np.float64)
    r = ag.ensemble_metrics(torch.from_numpy(lp), torch.from_numpy(y), backend=backend)
    nll = np.array([-np.mean([lp64[i, t, y[t]] for t in range(len(y))]) for i in range(len(lp))])
    assert np.allclose(r["member_nll"], nll, atol=1e-6)
    assert np.allclose(ag.member_nll(lp, y), nll, atol=1e-6)
    assert np.allclose(r["member_acc"], (np.argmax(lp, -1) == y).mean(1))
    ens_p = np.exp(lp64).mean(0)
    ens_nll = -np.mean(np.log(ens_p[np.arange(len(y)), y]))
    assert r["ensemble_nll"] == pytest.approx(ens_nll, abs=1e-6)
    assert r["ensemble_acc"] == pytest.approx(np.mean(ens_p.argmax(-1) == y))
    assert r["gain"] == pytest.approx(nll.mean() - ens_nll, abs=1e-6)
    assert r["gain"] > 0     # Jensen: mixing never loses on average here
    # small chunks, float64 input and numpy input give the same numbers
    monkeypatch.setattr(ag, "_CHUNK_ELEMS", 7 * 13)
    r2 = ag.ensemble_metrics(lp64, y, backend=backend)
    for k in ("gain", "js_divergence", "mutual_info", "q_statistic", "kappa_interrater"):
        assert r2[k] == pytest.approx(r[k], abs=1e-5), k


def test_minus_inf_log_probs_stay_finite(backend):
    lp, y = members(m=2, n=50, v=6, seed=3)
    lp[0, :, 5] = -np.inf          # member 0 rules class 5 out
    lp[1, :, 5] = -np.inf          # and so does member 1: the mixture has a zero
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    y = np.where(y == 5, 0, y)
    r = ag.ensemble_metrics(lp, y, per_token=True, backend=backend)
    for k in ("entropy_total", "entropy_expected", "mutual_info", "js_divergence", "gain"):
        assert math.isfinite(r[k]), k
    # the class nobody predicts changes nothing: same numbers as without it
    r5 = ag.ensemble_metrics(lp[..., :5], y, per_token=True, backend=backend)
    for k in ("entropy_total", "entropy_expected", "mutual_info", "js_divergence", "gain"):
        assert r[k] == pytest.approx(r5[k], abs=1e-6), k


# ------------------------------------------------------------------ the native kernel
def test_native_kernel_is_built():
    """setup.py builds it wherever there is a C compiler (CI and this machine have one):
    a silently missing kernel would fall back to the slow path unnoticed."""
    import shutil
    import sys

    if sys.platform == "win32" or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here")
    assert _native.available(), "moe_studio/engine/_native was not built: pip install -e ."
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert _native.library_name() == "_agreement_avx2"


def test_native_exp_and_log_against_float64():
    if not _native.available():
        pytest.skip("native agreement kernel not built here")
    neg = -np.logspace(-9, 4, 20001).astype(np.float32)
    e, _ = _native.exp_log(np.concatenate([neg, [0.0, -0.0, -87.2, -87.4, -1e4]]).astype(np.float32))
    ref = np.exp(neg.astype(np.float64))
    live = ref > 1e-37
    assert np.max(np.abs(e[:neg.size][live] - ref[live]) / ref[live]) < 1e-6
    assert e[neg.size] == 1.0 and e[neg.size + 1] == 1.0
    assert e[-1] == 0.0 and e[-2] == 0.0          # below -87.3: exactly 0, as float32 exp
    pos = np.logspace(-30, 2, 20001).astype(np.float32)
    _, lg = _native.exp_log(pos)
    ref = np.log(pos.astype(np.float64))
    assert np.max(np.abs(lg - ref) / np.maximum(np.abs(ref), 1.0)) < 1e-6
    _, lg0 = _native.exp_log(np.array([0.0, 1e-45], dtype=np.float32))
    assert np.allclose(lg0, np.log(1e-30), rtol=1e-6)       # clamped like the torch path


@pytest.mark.parametrize("threads", [1, 3])
def test_native_matches_torch_path(threads, monkeypatch):
    """Same numbers from both passes on members that differ a lot and a little, with the
    tokens split over threads (3 threads: uneven ranges) and a vocabulary that is not a
    multiple of the SIMD width."""
    if not _native.available():
        pytest.skip("native agreement kernel not built here")
    monkeypatch.setattr(_native, "MIN_TOKENS_PER_THREAD", 16)
    lp, y = members(m=5, n=700, v=37, seed=7, spread=(0.1, 0.5, 1.0, 2.0, 4.0))
    a = ag.ensemble_metrics(lp, y, per_token=True, backend="torch")
    b = ag.ensemble_metrics(lp, y, per_token=True, backend="native", threads=threads)
    assert b["backend"] == "native"
    for k in ("pred", "correct", "agreement", "member_nll", "member_acc", "ensemble_acc",
              "pair_q", "kappa_interrater"):
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    for k in ("pair_js", "token_entropy_total", "token_entropy_expected", "token_mutual_info",
              "ensemble_nll", "gain", "mutual_info"):
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=5e-6, err_msg=k)


def test_nan_input_takes_the_torch_path():
    """NaN or +inf in the log-probs (a diverged member): the kernel, compiled with fast
    math, reports them and the torch pass propagates them, as without the kernel."""
    lp, y = members(m=2, n=40, v=6, seed=4)
    for bad in (np.nan, np.inf):
        x = lp.copy()
        x[1, 7, 2] = bad
        r = ag.ensemble_metrics(x, y)
        assert r["backend"] == "torch"
        assert math.isnan(r["js_divergence"]) or math.isinf(r["js_divergence"])


def test_loading_the_kernel_keeps_subnormals():
    """The library is compiled with fast math but must not switch the process to
    flush-to-zero (GCC does that when fast math reaches the link): the precision views
    count underflows to subnormals, which would all vanish."""
    _native.available()
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert float(tiny * 1.0) != 0.0
    assert float(np.float32(1e-39) * np.float32(1.0)) != 0.0
    assert float(torch.tensor([1e-20]) * torch.tensor([1e-20])) != 0.0   # product 1e-40


# ------------------------------------------------------------------ combination rules
def test_fixed_rules_against_direct_computation():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3, 40, 6)) * 2           # logits
    lp = (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float32)
    p = np.exp(lp.astype(np.float64))
    out = make_rule("mean_prob").apply(lp).numpy()
    assert np.allclose(out, np.log(p.mean(0)), atol=1e-5)
    zm = z.mean(0)
    out = make_rule("mean_logit").apply(lp).numpy()
    assert np.allclose(out, zm - np.log(np.exp(zm).sum(-1, keepdims=True)), atol=1e-5)
    # vote: explicit counting, ties broken by mean probability
    vote = make_rule("vote")
    out = vote.apply(lp).numpy()
    for t in range(lp.shape[1]):
        counts = np.zeros(6)
        for i in range(3):
            counts[int(np.argmax(lp[i, t]))] += 1
        dist = 0.99 * counts / 3 + 0.01 * p[:, t].mean(0)
        assert np.allclose(out[t], np.log(dist), atol=1e-5)
        top = counts.max()
        tied = [c for c in range(6) if counts[c] == top]
        assert int(np.argmax(out[t])) == max(tied, key=lambda c: p[:, t, c].mean())


def test_loss_weighted_and_stacking_formulas():
    lp, y = members(m=3, n=400, v=6, seed=5)
    p = np.exp(lp.astype(np.float64))
    fit, rep = split_fit_report(400)
    assert (fit, rep) == (slice(0, 200), slice(200, 400))
    lw = make_rule("loss_weighted").fit(lp[:, fit], y[fit])
    nll = np.array([-np.mean(lp[i, :200][np.arange(200), y[:200]]) for i in range(3)])
    w = np.exp(-nll / 0.1)
    w /= w.sum()
    assert np.allclose(lw.params()["weights"], w, atol=1e-6)
    assert np.allclose(lw.apply(lp[:, rep]).numpy(), np.log((w[:, None, None] * p[:, 200:]).sum(0)), atol=1e-5)
    st = make_rule("stacking").fit(lp[:, fit], y[fit])
    pr = st.params()
    wt, temp = np.array(pr["weights"]), np.array(pr["temperature"])
    scaled = lp[:, 200:].astype(np.float64) / temp[:, None, None]
    q = np.exp(scaled - scaled.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    assert np.allclose(st.apply(lp[:, rep]).numpy(), np.log((wt[:, None, None] * q).sum(0)), atol=1e-4)
    # the fit improves on where it starts (mean of probabilities) on the tokens it fits
    fit_nll = nll_acc(st.apply(lp[:, fit]), y[fit])[0]
    assert fit_nll <= nll_acc(make_rule("mean_prob").apply(lp[:, fit]), y[fit])[0] + 1e-6
    # the noisiest member (spread 1.5) gets less weight than the cleanest (0.5)
    assert wt[0] > wt[2]


def test_stacking_never_sees_the_report_half():
    lp, y = members(m=3, n=400, v=6, seed=6)
    a = evaluate_rules(lp, y)
    lp2, y2 = lp.copy(), y.copy()
    rng = np.random.default_rng(0)
    y2[200:] = rng.integers(0, 6, size=200)               # other targets on the report half
    lp2[:, 200:] = lp2[:, 200:][:, ::-1]                   # and other predictions
    b = evaluate_rules(lp2, y2)
    for name in ("stacking", "loss_weighted"):
        assert a[name]["params"] == b[name]["params"], name
        assert a[name]["rule"].fitted_on == 200
    # ... while changing the fit half does change them
    y3 = y.copy()
    y3[:200] = rng.integers(0, 6, size=200)
    c = evaluate_rules(lp, y3)
    assert c["stacking"]["params"] != a["stacking"]["params"]
    # every rule is reported on the report half only
    for name in RULES:
        ref = nll_acc(a[name]["rule"].apply(lp[:, 200:]), y[200:])
        assert a[name]["nll"] == pytest.approx(ref[0]) and a[name]["acc"] == pytest.approx(ref[1])
    # deterministic
    assert Stacking().fit(lp[:, :200], y[:200]).params() == a["stacking"]["params"]
    with pytest.raises(ValueError):
        make_rule("median")


def test_backend_argument_is_checked():
    lp, y = members(m=2, n=10, v=4)
    with pytest.raises(ValueError, match="backend must be"):
        ag.ensemble_metrics(lp, y, backend="fast")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="runs on the CPU"):
            ag.ensemble_metrics(torch.from_numpy(lp).cuda(), torch.from_numpy(y).cuda(),
                                backend="native")
    assert ag.ensemble_metrics(lp, y, backend="torch")["backend"] == "torch"
