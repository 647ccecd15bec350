"""Boosting as the seeds describe it (engine/boosting.py, engine/ensemble.py): SAMME
member weights and token weights, gradient boosting on logits, the configurable token
re-weighting beta and headline combination rule, against numpy written here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moe_studio.config import ConfigError, validate
from moe_studio.engine.boosting import samme_alpha, samme_weights
from moe_studio.engine.combine import make_rule
from moe_studio.engine.trainer import Trainer

from tiny import tiny_config


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_samme_alpha_and_weights_against_numpy():
    K = 256
    for err in (0.1, 0.5, 0.9):
        assert samme_alpha(err, K) == pytest.approx(np.log((1 - err) / err) + np.log(K - 1))
    assert samme_alpha(1 - 1 / K, K) == 0.0 and samme_alpha(0.999, K) == 0.0
    rng = np.random.default_rng(0)
    wrong = rng.random((3, 5, 7)) < 0.4
    alphas = [1.5, 0.3, 2.0]
    s = np.tensordot(np.array(alphas), wrong.astype(float), axes=1)
    ref = np.exp(s) / np.exp(s).mean()
    np.testing.assert_allclose(samme_weights(torch.from_numpy(wrong), alphas).numpy(), ref, rtol=1e-5)


def test_sum_logit_and_weighted_vote_rules_against_numpy():
    rng = np.random.default_rng(1)
    M, N, V = 3, 40, 6
    logits = rng.normal(size=(M, N, V)) * 2
    lp = _np_log_softmax(logits)
    out = make_rule("sum_logit").apply(torch.from_numpy(lp).float()).numpy()
    np.testing.assert_allclose(out, _np_log_softmax(logits.sum(0)), atol=1e-5)
    a = [0.5, 2.0, 1.0]
    got = make_rule("samme", weights=a).apply(torch.from_numpy(lp).float()).numpy()
    mean_p = np.exp(lp).mean(0)
    for n in range(N):
        votes = np.zeros(V)
        for m in range(M):
            votes[int(np.argmax(lp[m, n]))] += a[m]
        np.testing.assert_allclose(got[n], np.log(0.99 * votes / sum(a) + 0.01 * mean_p[n]),
                                   atol=1e-5)
        assert np.argmax(got[n]) == np.argmax(votes + 1e-9 * mean_p[n])


def test_samme_run_alphas_and_headline(tmp_path):
    cfg = tiny_config(ensemble__method="boosting", ensemble__members=2, ensemble__boost_mode="samme",
                      ensemble__combine="samme", train__steps=6, train__eval_every=6,
                      train__warmup_steps=1)
    tr = Trainer(cfg, tmp_path)
    ens = tr.ensemble
    while not tr.done:
        tr.step()
    # reference: plain numpy over the SAMME windows
    wrongs = []
    for m in range(2):
        model = tr.models[m].eval()
        ws = []
        for xb, yb in ens._alpha_windows():
            with torch.no_grad():
                lg = model(torch.from_numpy(xb))[0].numpy()
            ws.append(np.argmax(lg, -1) != yb)
        wrongs.append(np.concatenate(ws).ravel())
    err0 = wrongs[0].mean()
    a0 = math.log((1 - err0) / err0) + math.log(255)
    assert ens.alphas[0] == pytest.approx(a0, rel=1e-6)
    w = np.exp(a0 * wrongs[0])
    err1 = (w * wrongs[1]).sum() / w.sum()
    assert ens.alphas[1] == pytest.approx(math.log((1 - err1) / err1) + math.log(255), rel=1e-6)
    # member 1 trained on tokens weighted by member 0's mistakes
    lb = ens.last_boost
    m0 = tr.models[0].eval()
    with torch.no_grad():
        miss = (m0(lb["x"])[0].argmax(-1) != lb["y"]).numpy()
    ref = np.exp(a0 * miss)
    np.testing.assert_allclose(lb["weights"].numpy(), ref / ref.mean(), rtol=1e-4)
    # the headline val/loss is the alpha-weighted vote over all validation tokens
    out = tr.evaluate()
    nll, n = 0.0, 0
    for xb, yb in tr.val_batches:
        with torch.no_grad():
            lps = [_np_log_softmax(tr.models[m].eval()(torch.from_numpy(xb))[0].double().numpy())
                   for m in range(2)]
        votes = np.zeros_like(lps[0])
        for m in range(2):
            np.put_along_axis(votes, np.argmax(lps[m], -1)[..., None],
                              np.take_along_axis(votes, np.argmax(lps[m], -1)[..., None], -1)
                              + ens.alphas[m], -1)
        p = 0.99 * votes / sum(ens.alphas.values()) + 0.01 * np.exp(np.stack(lps)).mean(0)
        nll -= np.log(np.take_along_axis(p, yb[..., None], -1)).sum()
        n += yb.size
    assert out["val/loss"] == pytest.approx(nll / n, rel=1e-4)
    tr.close(checkpoint=False)


def test_gradient_boosting_fits_the_residual_of_the_sum(tmp_path):
    cfg = tiny_config(ensemble__method="boosting", ensemble__members=2,
                      ensemble__boost_mode="gradient", ensemble__combine="sum_logit",
                      train__steps=4, train__eval_every=4, train__warmup_steps=1)
    tr = Trainer(cfg, tmp_path)
    for _ in range(2):
        tr.step()                       # member 0's segment
    x, y = tr.members.batch(1)
    m0, m1 = tr.models[0].eval(), tr.models[1].train()
    logits1, lm = m1(x, y)
    loss = tr.ensemble.member_loss(1, 2, x, y, logits1, lm)
    with torch.no_grad():
        z = m0(x)[0].double().numpy() + logits1.detach().double().numpy()
    ref = -np.take_along_axis(_np_log_softmax(z), y.numpy()[..., None], -1).mean()
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-5)
    # its gradient reaches member 1 only: member 0 is frozen in the sum
    loss.backward()
    assert all(p.grad is None for p in m0.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m1.parameters())
    tr.close(checkpoint=False)


def test_beta_is_a_config_key(tmp_path):
    cfg = tiny_config(ensemble__method="boosting", ensemble__members=2, ensemble__boost_beta=0.0,
                      train__steps=4, train__eval_every=100, train__warmup_steps=1)
    tr = Trainer(cfg, tmp_path)
    for _ in range(3):
        tr.step()
    w = tr.ensemble.last_boost["weights"]
    assert torch.allclose(w, torch.ones_like(w))       # beta 0: every token weighs the same
    tr.close(checkpoint=False)


def test_samme_rule_needs_samme_boosting():
    with pytest.raises(ConfigError) as e:
        validate(tiny_config(ensemble__members=2, ensemble__combine="samme"))
    assert "ensemble.combine" in str(e.value) and "\n" not in str(e.value)
