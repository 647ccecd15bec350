"""Routers: shapes and weights of every kind, training-only noise, the aux_free bias,
and the two router losses against the formulas computed here with plain numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moe_studio.config.schema import MoEConfig
from moe_studio.engine.routers import (AuxFreeRouter, NoisyTopKRouter, SoftRouter, TopKRouter,
                                       load_balancing_loss, make_router, router_z_loss)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, E = 8, 5


def router(name="topk", **kw):
    torch.manual_seed(0)
    r = make_router(MoEConfig(**{"n_experts": E, "top_k": 2, "router": name, **kw}), D)
    # Larger gate weights than the model's init, so choices and weights are clearly apart.
    with torch.no_grad():
        r.gate.weight.normal_(0, 1.0)
    return r


def tokens(T=11, seed=1):
    return torch.randn(T, D, generator=torch.Generator().manual_seed(seed))


def test_make_router_kinds():
    assert isinstance(router("topk"), TopKRouter)
    assert isinstance(router("noisy_topk"), NoisyTopKRouter)
    assert isinstance(router("soft"), SoftRouter)
    assert isinstance(router("aux_free"), AuxFreeRouter)
    with pytest.raises(ValueError, match="moe.router"):
        make_router(MoEConfig(router="hash"), D)


@pytest.mark.parametrize("name", ["topk", "noisy_topk", "soft", "aux_free"])
@pytest.mark.parametrize("training", [False, True])
def test_shapes_dtypes_and_weights(name, training):
    r = router(name).train(training)
    out = r(tokens())
    k = E if name == "soft" else 2
    assert out.logits.shape == out.probs.shape == (11, E)
    assert out.logits.dtype == out.probs.dtype == torch.float32
    assert out.topk_idx.shape == out.topk_weight.shape == (11, k)
    assert out.topk_idx.dtype == torch.int64
    assert out.aux_loss.shape == out.z_loss.shape == ()
    assert out.aux_loss.requires_grad and out.z_loss.requires_grad
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(11))
    # every router here renormalises (or, soft / noisy, is normalised by construction)
    torch.testing.assert_close(out.topk_weight.sum(-1), torch.ones(11))
    assert all(len(set(row)) == k for row in out.topk_idx.tolist())   # k distinct experts


def test_topk_picks_most_probable_and_renormalises():
    x = tokens()
    out = router("topk")(x)
    probs = np.asarray(out.probs.detach())
    for t in range(11):
        best = np.argsort(-probs[t])[:2]
        assert out.topk_idx[t].tolist() == best.tolist()
        expected = probs[t, best] / probs[t, best].sum()
        np.testing.assert_allclose(out.topk_weight[t].detach().numpy(), expected, rtol=1e-6)


def test_topk_without_renormalize_keeps_raw_probabilities():
    out = router("topk", renormalize=False)(tokens())
    torch.testing.assert_close(out.topk_weight, out.probs.gather(-1, out.topk_idx))
    assert torch.all(out.topk_weight.sum(-1) < 1)


def test_switch_top1():
    out = router("topk", top_k=1, renormalize=False)(tokens())
    assert out.topk_idx.shape == (11, 1)
    torch.testing.assert_close(out.topk_idx[:, 0], out.probs.argmax(-1))
    torch.testing.assert_close(out.topk_weight[:, 0], out.probs.max(-1).values)


def test_soft_router_uses_all_experts_with_their_probabilities():
    out = router("soft")(tokens())
    assert torch.equal(out.topk_idx, torch.arange(E).expand(11, E))
    torch.testing.assert_close(out.topk_weight, out.probs)


def test_noisy_topk_noise_only_in_training():
    r = router("noisy_topk")
    x = tokens()
    r.eval()
    a, b = r(x), r(x)
    assert torch.equal(a.topk_idx, b.topk_idx) and torch.equal(a.probs, b.probs)
    # eval: plain top-k of the clean logits, softmax over the kept two
    clean = x @ r.gate.weight.T
    top, idx = clean.topk(2, dim=-1)
    assert torch.equal(a.topk_idx, idx)
    torch.testing.assert_close(a.topk_weight, top.softmax(-1))
    torch.testing.assert_close(a.probs, clean.softmax(-1))

    r.train()
    c, d = r(x), r(x)
    torch.testing.assert_close(c.logits, clean)        # logits are the clean ones
    assert not torch.equal(c.probs, d.probs)           # probs: softmax of the noisy logits
    assert not torch.allclose(c.probs, a.probs)
    # weights are softmax over the chosen noisy logits: consistent with probs' ratios
    chosen = c.probs.gather(-1, c.topk_idx)
    torch.testing.assert_close(c.topk_weight, chosen / chosen.sum(-1, keepdim=True))
    # noise reaches the noise gate's weights
    (c.topk_weight[:, 0].sum()).backward()
    assert r.noise.weight.grad is not None and r.noise.weight.grad.abs().sum() > 0


def test_noisy_topk_noise_scale_is_learned_plus_floor():
    r = router("noisy_topk", noise_eps=0.0).train()
    with torch.no_grad():
        r.noise.weight.fill_(-1e4 / D)    # softplus(very negative) = 0: no noise at all
    x = tokens().abs()                    # positive inputs so the noise logits are very negative
    assert torch.equal(r(x).topk_idx, r.eval()(x).topk_idx)


def test_aux_free_bias_changes_choices_not_weights():
    r = router("aux_free")
    x = tokens()
    before = r(x)
    with torch.no_grad():
        r.bias[3] = 10.0                 # large enough to win every token's top-2
    after = r(x)
    assert torch.all((after.topk_idx == 3).any(-1))
    torch.testing.assert_close(after.probs, before.probs)       # scores untouched
    torch.testing.assert_close(after.logits, before.logits)
    chosen = after.probs.gather(-1, after.topk_idx)              # weights: unbiased probs
    torch.testing.assert_close(after.topk_weight, chosen / chosen.sum(-1, keepdim=True))


def test_aux_free_update_follows_sign_of_load_error():
    r = router("aux_free", bias_update_rate=0.1)
    r.update_bias(torch.tensor([10, 0, 5, 6, 4]))                # mean 5
    torch.testing.assert_close(r.bias, torch.tensor([-0.1, 0.1, 0.0, -0.1, 0.1]))
    r.update_bias(torch.tensor([10., 0., 5., 6., 4.]))
    torch.testing.assert_close(r.bias, torch.tensor([-0.2, 0.2, 0.0, -0.2, 0.2]))
    assert "bias" in r.state_dict()                               # saved with checkpoints
    assert not any(p is r.bias for p in r.parameters())


@pytest.mark.parametrize("name", ["topk", "aux_free", "noisy_topk"])
def test_jitter_only_in_training(name):
    x = tokens()
    plain, jit = router(name), router(name, jitter=0.1)
    plain.eval(), jit.eval()
    torch.testing.assert_close(jit(x).logits, plain(x).logits)
    jit.train()
    torch.manual_seed(5)
    a = jit(x).logits
    assert not torch.allclose(a, plain(x).logits)
    # the noise is multiplicative uniform in [0.9, 1.1] on the input: reproduce it
    torch.manual_seed(5)
    factor = torch.empty_like(x).uniform_(0.9, 1.1)
    torch.testing.assert_close(a, (x * factor) @ jit.gate.weight.T)
    assert 0.9 <= factor.min() and factor.max() <= 1.1


def test_router_fp32_under_autocast():
    x = tokens()
    fp32, low = router("topk"), router("topk", router_fp32=False)
    exact = x @ fp32.gate.weight.T
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = fp32(x), low(x)
    assert a.logits.dtype == b.logits.dtype == torch.float32
    torch.testing.assert_close(a.logits, exact)
    bf16 = (x.bfloat16() @ low.gate.weight.T.bfloat16()).float()
    torch.testing.assert_close(b.logits, bf16)
    assert not torch.equal(b.logits, exact)


# --- losses against the formulas, computed independently -----------------------------


def numpy_aux_loss(probs: np.ndarray, topk_idx: np.ndarray, n_experts: int) -> float:
    T, k = topk_idx.shape
    f = np.zeros(n_experts)
    for t in range(T):
        for j in range(k):
            f[topk_idx[t, j]] += 1.0 / (T * k)
    P = probs.mean(axis=0)
    return float(n_experts * sum(f[i] * P[i] for i in range(n_experts)))


def numpy_z_loss(logits: np.ndarray) -> float:
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse ** 2))


@pytest.mark.parametrize("name", ["topk", "noisy_topk", "soft", "aux_free"])
def test_router_losses_match_formulas(name):
    r = router(name).train()
    out = r(tokens(T=23))
    probs, idx = out.probs.detach().double().numpy(), out.topk_idx.numpy()
    assert out.aux_loss.item() == pytest.approx(numpy_aux_loss(probs, idx, E), rel=1e-5)
    assert out.z_loss.item() == pytest.approx(numpy_z_loss(out.logits.detach().double().numpy()),
                                              rel=1e-5)


def test_aux_loss_limits_and_gradient():
    # uniform routing: f_i = 1/E, P_i = 1/E -> loss 1
    probs = torch.full((8, 4), 0.25)
    idx = torch.tensor([[0, 1], [2, 3]] * 4)
    assert load_balancing_loss(probs, idx, 4).item() == pytest.approx(1.0)
    # everything to expert 0 with certainty -> loss E
    probs = torch.zeros(8, 4)
    probs[:, 0] = 1
    assert load_balancing_loss(probs, torch.zeros(8, 1, dtype=torch.long), 4).item() == pytest.approx(4.0)
    # gradient reaches the probabilities only (f is a count)
    logits = torch.randn(6, 4, requires_grad=True)
    loss = load_balancing_loss(logits.softmax(-1), logits.topk(2, -1).indices, 4)
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_z_loss_formula_and_gradient():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    expected = (np.log(2.0) ** 2 + np.log(np.e + np.e ** 2) ** 2) / 2
    z = router_z_loss(logits)
    assert z.item() == pytest.approx(expected, rel=1e-6)
    z.backward()
    # d/dl of lse^2 / T = 2 lse softmax / T
    lse = torch.logsumexp(logits.detach(), -1, keepdim=True)
    torch.testing.assert_close(logits.grad, lse * F.softmax(logits.detach(), -1))
