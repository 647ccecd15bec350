"""Gated (SwiGLU) experts and dense feed-forward against a SwiGLU written here from
three separate matrices, outputs and gradients, with both expert kernels."""
from __future__ import annotations

import math

import pytest
import torch

from moe_studio.config.schema import ExperimentConfig, MoEConfig
from moe_studio.engine import expert_kernels as kernels
from moe_studio.engine.dispatch import moe_dispatch
from moe_studio.engine.model import MoEGPT
from moe_studio.engine.moe_layer import FeedForward, MoEFeedForward
from moe_studio.engine.params import count_params

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_expert_kernel")


def swiglu_ref(x, w_gate, w_up, w_down):
    """Shazeer 2020: (silu(x W_gate) * (x W_up)) W_down, silu written out."""
    g = x @ w_gate
    return ((g * torch.sigmoid(g)) * (x @ w_up)) @ w_down


def reference_moe(x, idx, weight, gates, ups, downs):
    rows = []
    for t in range(x.shape[0]):
        acc = torch.zeros_like(x[t])
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            acc = acc + weight[t, j] * swiglu_ref(x[t], gates[e], ups[e], downs[e])
        rows.append(acc)
    return torch.stack(rows)


@pytest.mark.parametrize("kernel", ["loop", "grouped"])
def test_swiglu_dispatch_matches_reference_outputs_and_gradients(kernel):
    T, d, h, E, k = 11, 8, 4, 4, 2
    if kernel == "grouped" and not kernels.grouped_mm_works(torch.device("cpu"), torch.float32, d, 2 * h, h):
        pytest.skip("torch._grouped_mm does not run here")
    kernels.set_expert_kernel(kernel)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, d, generator=g)
    gates = torch.randn(E, d, h, generator=g) / math.sqrt(d)
    ups = torch.randn(E, d, h, generator=g) / math.sqrt(d)
    downs = torch.randn(E, h, d, generator=g) / math.sqrt(h)
    scores = torch.rand(T, E, generator=g)
    scores[:, 0] = -1  # expert 0 never chosen: an empty block
    idx = scores.topk(k, dim=-1).indices
    weight = torch.rand(T, k, generator=g)
    grad_out = torch.linspace(-1, 1, T * d).view(T, d)

    leaves = [t.clone().requires_grad_() for t in (x, weight, gates, ups, downs)]
    lx, lw, lg, lu, ld = leaves
    out = moe_dispatch(lx, idx, lw, torch.cat([lg, lu], dim=-1), ld).out
    out.backward(grad_out)
    refs = [t.clone().requires_grad_() for t in (x, weight, gates, ups, downs)]
    ref = reference_moe(refs[0], idx, *refs[1:])
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for name, a, b in zip(["x", "weight", "gate", "up", "down"], leaves, refs):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5, msg=f"gradient of {name}")
    assert leaves[2].grad[0].abs().sum() == 0


def test_swiglu_dense_ffn_and_shared_expert_match_reference():
    torch.manual_seed(0)
    ffn = FeedForward(8, 6, "swiglu")
    x = torch.randn(5, 8, requires_grad=True)
    w = ffn.up_proj.weight                      # [2h, d]: gate rows, then up rows
    ref = swiglu_ref(x, w[:6].T, w[6:].T, ffn.down_proj.weight.T)
    torch.testing.assert_close(ffn(x), ref, atol=1e-6, rtol=1e-6)
    gx, = torch.autograd.grad(ffn(x).sum(), x)
    rx, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(gx, rx, atol=1e-6, rtol=1e-6)

    layer = MoEFeedForward(8, MoEConfig(n_experts=4, top_k=2, expert_act="swiglu", d_expert=6), 99)
    assert layer.w1.shape == (4, 8, 12) and layer.w2.shape == (4, 6, 8) and layer.d_hidden == 6


def test_swiglu_model_parameter_count_and_wide_members_agree():
    cfg = ExperimentConfig()
    cfg.model.n_layers, cfg.model.d_model, cfg.model.d_ff, cfg.model.n_heads = 2, 16, 24, 2
    cfg.model.moe_layers, cfg.model.ffn_act, cfg.moe.expert_act = "1", "swiglu", "swiglu"
    cfg.moe.n_experts, cfg.moe.d_expert, cfg.data.context = 4, 8, 16
    model = MoEGPT(cfg.model, cfg.moe, cfg.data.context)
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg).total
    # dense block: 3 * d * d_ff; MoE block: 4 experts of 3 * d * 8 + router d * 4
    assert count_params(cfg).total - count_params(_with(cfg, "gelu")).total == 16 * 24 + 4 * 16 * 8

    from moe_studio.engine.wide import WideMembers
    models = [model, MoEGPT(cfg.model, cfg.moe, cfg.data.context)]
    for m in models:
        m.eval()
    idx = torch.randint(0, 256, (2, 3, 16))
    wide = WideMembers(models).loss(idx, idx)
    own = torch.stack([m(idx[i], idx[i])[1] for i, m in enumerate(models)])
    torch.testing.assert_close(wide, own, atol=1e-5, rtol=1e-5)


def _with(cfg, act):
    from moe_studio.config import copy_config
    c = copy_config(cfg)
    c.model.ffn_act = c.moe.expert_act = act
    return c


def test_bench_quick_has_swiglu_and_sigmoid_rows():
    from moe_studio.bench.moe_layer import run

    g = run(json_out=True, quick=True)["gated"]
    assert set(g["ms"]) == {"moe_swiglu", "moe_swiglu_sigmoid", "dense_swiglu_ffn"}
    assert all(v > 0 for v in g["ms"].values()) and g["ratio_to_dense"]["dense_swiglu_ffn"] == 1.0
    assert g["expert_kernel"] in ("loop", "grouped")
    assert set(g["budgets"]) == {"moe_swiglu_over_dense_swiglu_8x2",
                                 "moe_swiglu_sigmoid_over_dense_swiglu_8x2"}
    # judged on the confidence interval (bench/_common.budget): ok only when all of it is in
    for b in g["budgets"].values():
        assert b["limit"] == 1.3 and b["ok"] == (b["verdict"] == "ok")
        assert b["verdict"] == ("ok" if b["ci95"][1] <= 1.3 else
                                "missed" if b["ci95"][0] > 1.3 else "unresolved")
