"""Kohavi-Wolpert variance and the entropy measure E (metrics/diversity.py) against
numpy written here from Kuncheva & Whitaker (2003), their recorded values in a run,
and the Ensemble view's table."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moe_studio.engine.agreement import ensemble_metrics, pair_mean, pairwise_disagreement
from moe_studio.metrics.diversity import entropy_measure, kohavi_wolpert_variance


def _ref(correct):
    """Per token: l = members right; KW = mean of l (M - l) / M^2, E = mean of
    min(l, M - l) / (M - ceil(M / 2)), written as explicit loops."""
    M, N = correct.shape
    kw = e = 0.0
    for j in range(N):
        l_j = sum(bool(correct[m, j]) for m in range(M))
        kw += l_j * (M - l_j) / (M * M)
        e += min(l_j, M - l_j) / (M - math.ceil(M / 2))
    return kw / N, e / N


@pytest.mark.parametrize("M", [2, 3, 4, 5])
def test_against_loops_and_the_disagreement_identity(M):
    rng = np.random.default_rng(M)
    correct = rng.random((M, 300)) < rng.uniform(0.3, 0.8, size=(M, 1))
    kw, e = _ref(correct)
    assert kohavi_wolpert_variance(correct) == pytest.approx(kw, abs=1e-12)
    assert entropy_measure(correct) == pytest.approx(e, abs=1e-12)
    # Kuncheva & Whitaker eq. 15: KW = (M - 1) / (2M) * averaged pairwise disagreement
    d_av = pair_mean(pairwise_disagreement(correct))
    assert kohavi_wolpert_variance(correct) == pytest.approx((M - 1) / (2 * M) * d_av, abs=1e-12)


def test_bounds():
    agree = np.ones((4, 10), bool)
    assert kohavi_wolpert_variance(agree) == 0.0 and entropy_measure(agree) == 0.0
    split = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], bool)   # 2 of 4 right on every token
    assert entropy_measure(split) == 1.0 and kohavi_wolpert_variance(split) == 0.25
    assert math.isnan(entropy_measure(np.ones((1, 5), bool)))
    with pytest.raises(ValueError):
        kohavi_wolpert_variance(np.ones(5, bool))


def test_ensemble_metrics_reports_them():
    rng = np.random.default_rng(0)
    lp = torch.log_softmax(torch.from_numpy(rng.normal(size=(3, 200, 5))).float(), -1)
    y = torch.from_numpy(rng.integers(0, 5, 200))
    out = ensemble_metrics(lp, y, backend="torch")
    correct = (lp.argmax(-1) == y[None]).numpy()
    kw, e = _ref(correct)
    assert out["kw_variance"] == pytest.approx(kw) and out["entropy_e"] == pytest.approx(e)


def test_ensemble_view_shows_them(qtbot, tmp_path):
    from moe_studio.engine.trainer import Trainer
    from moe_studio.gui.views.ensemble import EnsembleDashboard
    from moe_studio.store import open_run
    from tiny import tiny_config
    tr = Trainer(tiny_config(ensemble__members=2, train__steps=2, train__eval_every=2), tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    with open_run(tr.run_dir) as r:
        rec = r.scalars(["ens/kw_variance", "ens/entropy_e"], member=-1)
    assert set(rec["name"]) == {"ens/kw_variance", "ens/entropy_e"}
    d = EnsembleDashboard()
    qtbot.addWidget(d)
    d.show()
    d.set_runs([tr.run_dir])
    heads = [h.replace("\n", " ") for h in d._compare_headers()]
    row = d.compare_rows()[0]
    kw = float(rec[rec["name"] == "ens/kw_variance"]["value"].iloc[-1])
    assert row[heads.index("KW variance")] == pytest.approx(kw)
    assert "ens/kw_variance" in d.oracle.series_keys()
    d.close()
