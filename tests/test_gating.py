"""Sigmoid gating with a selection bias (DeepSeek-V3) and expert-choice routing
(Zhou et al. 2022), each against a reference written here with numpy and plain loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moe_studio.config.schema import MoEConfig
from moe_studio.engine.moe_layer import MoEFeedForward
from moe_studio.engine.routers import ExpertChoiceRouter, SigmoidRouter, make_router

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, E, K = 8, 6, 2


def _router(name, **kw):
    torch.manual_seed(0)
    r = make_router(MoEConfig(n_experts=E, top_k=K, router=name, **kw), D)
    with torch.no_grad():
        r.gate.weight.normal_(0, 1.0)
    return r


def _x(T=10, seed=3):
    return torch.randn(T, D, generator=torch.Generator().manual_seed(seed))


def sigmoid_reference(x, W, bias, k):
    """Per token: scores 1/(1+exp(-x.w_e)); choose by score + bias, weigh by score."""
    idx, wts = [], []
    for row in x.tolist():
        s = [1 / (1 + math.exp(-float(np.dot(row, w)))) for w in W.tolist()]
        order = sorted(range(len(s)), key=lambda e: -(s[e] + bias[e]))[:k]
        total = sum(s[e] for e in order)
        idx.append(order)
        wts.append([s[e] / total for e in order])
    return idx, wts


def test_sigmoid_router_matches_reference_and_bias_only_chooses():
    r = _router("sigmoid")
    assert isinstance(r, SigmoidRouter)
    x = _x()
    bias = [0.0, 0.3, -0.2, 0.0, 0.5, 0.0]
    r.bias.copy_(torch.tensor(bias))
    out = r(x)
    idx, wts = sigmoid_reference(x.numpy(), r.gate.weight.detach().numpy(), bias, K)
    assert out.topk_idx.tolist() == idx
    np.testing.assert_allclose(out.topk_weight.detach().numpy(), wts, rtol=1e-5, atol=1e-6)
    unbiased, _ = sigmoid_reference(x.numpy(), r.gate.weight.detach().numpy(), [0.0] * E, K)
    assert unbiased != idx          # the bias changed some choices ...
    # ... but the weights are still the chosen unbiased scores, normalised
    s = torch.sigmoid(x @ r.gate.weight.T)
    torch.testing.assert_close(out.probs, s / s.sum(-1, keepdim=True))
    out.topk_weight.sum().backward()
    assert r.gate.weight.grad is not None and not r.bias.requires_grad


def test_sigmoid_bias_follows_the_aux_free_rule():
    r = _router("sigmoid", bias_update_rate=0.01)
    load = torch.tensor([9.0, 1.0, 5.0, 5.0, 0.0, 10.0])   # mean 5
    r.update_bias(load)
    assert r.bias.tolist() == pytest.approx([-0.01, 0.01, 0.0, 0.0, 0.01, -0.01])


def expert_choice_reference(probs, C):
    """Each expert walks the tokens from its highest probability down and takes C."""
    taken = []
    for e in range(probs.shape[1]):
        col = probs[:, e].tolist()
        order = sorted(range(len(col)), key=lambda t: -col[t])[:C]
        taken.append([(t, col[t]) for t in order])
    return taken


@pytest.mark.parametrize("factor", [0.0, 2.0])
def test_expert_choice_layer_matches_reference(factor):
    torch.manual_seed(0)
    layer = MoEFeedForward(D, MoEConfig(n_experts=E, top_k=K, router="expert_choice",
                                        capacity_factor=factor), 12).eval()
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1.0)
    x = torch.randn(2, 7, D)
    flat = x.reshape(14, D)
    y = layer(x).reshape(14, D)
    probs = torch.softmax(flat @ layer.router.gate.weight.T, dim=-1)
    C = math.ceil((factor or 1.0) * 14 * K / E)
    ref = torch.zeros_like(flat)
    got_expert = [0] * 14
    for e, picks in enumerate(expert_choice_reference(probs, C)):
        for t, p in picks:
            h = torch.nn.functional.gelu(flat[t] @ layer.w1[e])
            ref[t] += p * (h @ layer.w2[e])
            got_expert[t] += 1
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    assert layer.last.tokens_per_expert.tolist() == [float(C)] * E
    assert sum(got_expert) == C * E
    assert float(layer.aux_loss) == 0.0
    assert isinstance(layer.router, ExpertChoiceRouter)


def test_expert_choice_caveat_is_in_the_help_text():
    from dataclasses import fields
    help_ = {f.name: f.metadata["help"] for f in fields(MoEConfig)}["router"]
    assert "expert_choice" in help_ and "causal" in help_ and "future" in help_
