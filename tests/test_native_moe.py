"""The native routing bookkeeping (engine/native_moe.py, _native/moe_kernel.c) against
torch computed another way: float64 autograd for the router's softmax / top-k /
logsumexp and their gradients, argsort and bincount for the sort, index and index_add
for the gather and the combine; and whole MoE layers and training steps on the native
path against the torch path."""
from __future__ import annotations

import shutil
import sys

import pytest
import torch

from moe_studio.config import presets
from moe_studio.engine import _native, native_moe
from moe_studio.engine.dispatch import moe_dispatch
from moe_studio.engine.model import MoEGPT
from moe_studio.engine.moe_layer import MoEFeedForward

needs_native = pytest.mark.skipif(not native_moe.available(),
                                  reason="the native MoE kernel is not built here")


@pytest.fixture
def torch_path(monkeypatch):
    """Within the test, every caller takes the torch path."""
    def use_torch():
        monkeypatch.setattr(native_moe, "applies", lambda *a: False)
    return use_torch


def test_native_moe_kernel_is_built():
    """setup.py builds it wherever there is a C compiler (CI and this machine have one)."""
    if sys.platform == "win32" or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here")
    assert native_moe.available(), "moe_studio/engine/_native was not built: pip install -e ."
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert native_moe.library_name() == "_moe_avx2"


def _route_reference(logits: torch.Tensor, k: int, renorm: bool):
    """float64 softmax, top-k by logit (ties to the lower id), weights, logsumexp."""
    l64 = logits.double()
    probs = l64.softmax(-1)
    # a stable descending sort puts equal logits in id order
    idx = torch.sort(l64, dim=-1, descending=True, stable=True).indices[:, :k]
    w = probs.gather(-1, idx)
    if renorm:
        w = w / w.sum(-1, keepdim=True)
    return probs, idx, w, torch.logsumexp(l64, -1)


@needs_native
@pytest.mark.parametrize("T,E,k,renorm", [(97, 8, 2, True), (97, 8, 2, False), (64, 8, 1, False),
                                          (50, 6, 6, True), (40, 64, 8, True), (33, 3, 2, True)])
def test_route_topk_against_float64_autograd(T, E, k, renorm):
    g = torch.Generator().manual_seed(T * E + k)
    logits = (torch.randn(T, E, generator=g) * 3).requires_grad_()
    probs, idx, w, lse = native_moe.route_topk(logits, k, renorm)
    ref_logits = logits.detach().double().requires_grad_()
    rp, ri, rw, rl = _route_reference(ref_logits, k, renorm)
    assert torch.equal(idx, ri)
    assert torch.allclose(probs.double(), rp, rtol=1e-5, atol=1e-7)
    assert torch.allclose(w.double(), rw, rtol=1e-5, atol=1e-7)
    assert torch.allclose(lse.double(), rl, rtol=1e-6, atol=1e-6)
    # gradients through all three differentiable outputs at once
    gp, gw, gl = (torch.randn(t.shape, generator=g) for t in (probs, w, lse))
    torch.autograd.backward([probs, w, lse], [gp, gw, gl])
    torch.autograd.backward([rp, rw, rl], [gp.double(), gw.double(), gl.double()])
    assert torch.allclose(logits.grad.double(), ref_logits.grad, rtol=1e-4, atol=1e-6)


@needs_native
@pytest.mark.parametrize("renorm", [True, False])
def test_route_topk_with_a_selection_bias_chooses_by_probability_plus_bias(renorm):
    """Aux-loss-free balancing: the choice by probs + bias, the weights unbiased."""
    g = torch.Generator().manual_seed(9)
    T, E, k = 80, 8, 2
    logits = torch.randn(T, E, generator=g).requires_grad_()
    bias = torch.randn(E, generator=g) * 0.2
    probs, idx, w, _ = native_moe.route_topk(logits, k, renorm, bias=bias)
    ref = logits.detach().double().requires_grad_()
    p64 = ref.softmax(-1)
    ridx = torch.sort(p64.detach() + bias.double(), dim=-1, descending=True, stable=True).indices[:, :k]
    rw = p64.gather(-1, ridx)
    if renorm:
        rw = rw / rw.sum(-1, keepdim=True)
    assert torch.equal(idx, ridx)
    assert not torch.equal(idx, native_moe.route_topk(logits.detach(), k, renorm)[1])  # it mattered
    assert torch.allclose(w.double(), rw, rtol=1e-5, atol=1e-7)
    gw = torch.randn(T, k, generator=g)
    w.backward(gw)
    rw.backward(gw.double())
    assert torch.allclose(logits.grad.double(), ref.grad, rtol=1e-4, atol=1e-6)


@needs_native
def test_route_topk_gradient_of_each_output_alone():
    """An unused output arrives as None in the backward (the kernel's NULL paths)."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(20, 5, generator=g)
    for which in range(3):
        logits = base.clone().requires_grad_()
        probs, _, w, lse = native_moe.route_topk(logits, 2, True)
        (probs, w, lse)[which].pow(2).sum().backward()
        ref = base.double().requires_grad_()
        rp, _, rw, rl = _route_reference(ref, 2, True)
        (rp, rw, rl)[which].pow(2).sum().backward()
        assert torch.allclose(logits.grad.double(), ref.grad, rtol=1e-4, atol=1e-7), which


@needs_native
def test_route_topk_ties_go_to_the_lower_expert_id():
    logits = torch.zeros(4, 6)
    logits[1, 4] = logits[1, 2] = 1.0
    probs, idx, w, _ = native_moe.route_topk(logits, 3, True)
    assert idx.tolist() == [[0, 1, 2], [2, 4, 0], [0, 1, 2], [0, 1, 2]]
    assert torch.allclose(probs[0], torch.full((6,), 1 / 6))
    assert torch.allclose(w.sum(-1), torch.ones(4))


@needs_native
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_route_topk_declines_non_finite_logits(bad):
    logits = torch.randn(10, 4)
    logits[7, 2] = bad
    assert native_moe.route_topk(logits, 2, True) is None


@needs_native
def test_router_falls_back_to_torch_on_non_finite_logits():
    """A NaN in the router's input (fp16 overflow upstream) gives the torch path's
    result, not a refusal or garbage."""
    from moe_studio.engine.routers import TopKRouter
    torch.manual_seed(0)
    router = TopKRouter(16, 4, 2)
    x = torch.randn(12, 16)
    x[5] = float("nan")
    out = router(x)
    assert torch.isnan(out.probs[5]).all() and torch.isfinite(out.probs[:5]).all()
    assert torch.isnan(out.z_loss)


@needs_native
def test_sort_pairs_against_argsort_and_bincount():
    g = torch.Generator().manual_seed(1)
    for E, k in ((8, 2), (5, 1), (64, 4)):
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(123)])
        order, pos, counts = native_moe.sort_pairs(idx, E)
        flat = idx.reshape(-1)
        assert torch.equal(order, torch.argsort(flat, stable=True))
        assert torch.equal(pos[order], torch.arange(flat.numel()))
        assert torch.equal(counts, torch.bincount(flat, minlength=E))


@needs_native
def test_sort_pairs_refuses_an_expert_id_out_of_range():
    with pytest.raises(ValueError, match="outside 0..3"):
        native_moe.sort_pairs(torch.tensor([[0, 4]]), 4)


@needs_native
def test_gather_and_combine_against_index_ops():
    g = torch.Generator().manual_seed(2)
    T, E, k, d = 57, 6, 3, 10
    idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    order, pos, _ = native_moe.sort_pairs(idx, E)
    x = torch.randn(T, d, generator=g, requires_grad=True)
    ys = torch.randn(T * k, d, generator=g, requires_grad=True)
    w = torch.rand(T, k, generator=g, requires_grad=True)
    gxs, gout = torch.randn(T * k, d, generator=g), torch.randn(T, d, generator=g)

    xs = native_moe.gather_rows(x, order, pos, k)
    out = native_moe.combine(ys, w, pos)
    torch.autograd.backward([xs, out], [gxs, gout])

    x64, ys64, w64 = (t.detach().double().requires_grad_() for t in (x, ys, w))
    rxs = x64.index_select(0, order // k)
    pair_rows = ys64.index_select(0, pos).view(T, k, d)      # pair p's row, in pair order
    rout = (w64.unsqueeze(-1) * pair_rows).sum(1)
    torch.autograd.backward([rxs, rout], [gxs.double(), gout.double()])
    assert torch.equal(xs, x.detach()[order // k])
    assert torch.allclose(out.double(), rout, atol=1e-5)
    for a, b in ((x, x64), (ys, ys64), (w, w64)):
        assert torch.allclose(a.grad.double(), b.grad, atol=1e-5)


def _dispatch_both(torch_path, capacity=0):
    g = torch.Generator().manual_seed(5)
    T, d, E, h, k = 96, 16, 8, 24, 2
    x = torch.randn(T, d, generator=g)
    idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    w = torch.rand(T, k, generator=g)
    w1, w2 = torch.randn(E, d, h, generator=g) * 0.3, torch.randn(E, h, d, generator=g) * 0.3
    gout = torch.randn(T, d, generator=g)
    results = []
    for native in (True, False):
        if not native:
            torch_path()
        leaves = [t.clone().requires_grad_() for t in (x, w, w1, w2)]
        res = moe_dispatch(leaves[0], idx, leaves[1], leaves[2], leaves[3], capacity)
        res.out.backward(gout)
        results.append((res, [t.grad for t in leaves]))
    return results


@needs_native
def test_dispatch_native_matches_torch_path(torch_path):
    (nat, nat_grads), (ref, ref_grads) = _dispatch_both(torch_path)
    assert torch.allclose(nat.out, ref.out, atol=1e-5)
    assert torch.equal(nat.tokens_per_expert, ref.tokens_per_expert)
    assert torch.equal(nat.dropped_per_expert, ref.dropped_per_expert)
    assert nat.pair_kept is None and ref.pair_kept is None
    for a, b in zip(nat_grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-5)


@needs_native
def test_capacity_limits_stay_on_the_torch_path(monkeypatch):
    """Dropping is the torch path's (the native one is dropless only)."""
    called = []
    monkeypatch.setattr(native_moe, "sort_pairs", lambda *a: called.append(a))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(32, 8, generator=g)
    idx = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(32)])
    res = moe_dispatch(x, idx, torch.rand(32, 2, generator=g), torch.randn(4, 8, 12, generator=g),
                       torch.randn(4, 12, 8, generator=g), capacity=10)
    assert not called and res.pair_kept is not None


def test_applies_only_to_float32_on_the_cpu_without_autocast(monkeypatch):
    monkeypatch.setattr(native_moe, "available", lambda: True)
    f32 = torch.zeros(2, 2)
    assert native_moe.applies(f32, torch.zeros(2, dtype=torch.long))
    assert not native_moe.applies(f32, torch.zeros(2, dtype=torch.float64))
    assert not native_moe.applies(torch.zeros(2, dtype=torch.bfloat16))
    assert not native_moe.applies(torch.zeros(2, device="meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not native_moe.applies(f32)
    monkeypatch.setattr(native_moe, "available", lambda: False)
    assert not native_moe.applies(f32)


def test_moe_studio_native_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("MOE_STUDIO_NATIVE", "0")
    assert _native.open_library("_moe") is None


def _tiny_moe_config(router: str = "topk"):
    c = presets.mixtral_top2()
    c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.d_ff = 2, 32, 2, 64
    c.moe.d_expert = 32
    c.moe.router = router
    if router == "sigmoid":
        c.moe.aux_loss_coef = 0.0
    return c


@needs_native
@pytest.mark.parametrize("router", ["topk", "aux_free", "noisy_topk", "sigmoid", "soft"])
def test_moe_layer_native_matches_torch_path(router, torch_path):
    """Whole layers, every router that feeds the dropless dispatch: the output, both
    losses and every parameter's gradient agree with the torch path."""
    cfg = _tiny_moe_config(router).moe
    got = []
    for native in (True, False):
        if not native:
            torch_path()
        torch.manual_seed(11)
        layer = MoEFeedForward(32, cfg, 64)
        if hasattr(layer.router, "bias"):   # a balancing bias that changes choices
            layer.router.bias.copy_(torch.linspace(-0.05, 0.05, cfg.n_experts))
        x = torch.randn(3, 20, 32, requires_grad=True)
        torch.manual_seed(12)       # the same noise for noisy top-k
        routes = native_moe.report()["route_calls"]
        y = layer(x)
        if native:   # the routers with a native pass took it
            assert (native_moe.report()["route_calls"] > routes) == (router in ("topk", "aux_free"))
        (y.square().mean() + layer.aux_loss + layer.z_loss).backward()
        got.append((y, layer.aux_loss, layer.z_loss, x.grad,
                    {n: p.grad for n, p in layer.named_parameters()}))
    (y1, a1, z1, gx1, g1), (y2, a2, z2, gx2, g2) = got
    assert torch.allclose(y1, y2, atol=1e-5)
    assert torch.allclose(a1, a2, atol=1e-6) and torch.allclose(z1, z2, rtol=1e-5)
    assert torch.allclose(gx1, gx2, atol=1e-6)
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-6), n


@needs_native
def test_training_losses_native_and_torch_paths_agree(torch_path):
    """Twenty AdamW steps of a small MoE language model: the native path's losses follow
    the torch path's to float32 rounding, and their routing stays the same."""
    cfg = _tiny_moe_config()
    curves = []
    for native in (True, False):
        if not native:
            torch_path()
        torch.manual_seed(0)
        model = MoEGPT(cfg.model, cfg.moe, context=16, vocab=50)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(20):
            x = torch.randint(0, 50, (4, 16), generator=g)
            loss = model(x, x.roll(-1, 1))[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curves.append(losses)
    assert curves[0] == pytest.approx(curves[1], rel=1e-4)


@needs_native
def test_inference_mode_takes_the_native_path_and_matches_the_torch_path(torch_path):
    """The routing probe and sampling run the model under inference mode."""
    cfg = _tiny_moe_config()
    torch.manual_seed(0)
    model = MoEGPT(cfg.model, cfg.moe, context=16, vocab=50).eval()
    x = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(3))
    before = native_moe.report()["route_calls"]
    with torch.inference_mode():
        native = model(x)[0]
    assert native_moe.report()["route_calls"] == before + cfg.model.n_layers
    torch_path()
    with torch.inference_mode():
        reference = model(x)[0]
    assert torch.allclose(native, reference, atol=1e-5)


@needs_native
def test_random_shapes_native_and_torch_dispatch_agree(torch_path):
    """Forty random layer shapes, the edges included (one token, one expert, k = E, 256
    experts, a width of 1): the native router + dispatch against the torch path."""
    rng = torch.Generator().manual_seed(123)
    cases = [(1, 1, 1, 1), (1, 4, 4, 3), (5, 256, 8, 4), (64, 2, 2, 1)]
    while len(cases) < 40:
        E = int(torch.randint(1, 65, (1,), generator=rng))
        k = int(torch.randint(1, E + 1, (1,), generator=rng))
        cases.append((int(torch.randint(1, 200, (1,), generator=rng)), E, k,
                      int(torch.randint(1, 40, (1,), generator=rng))))
    from moe_studio.engine.routers import TopKRouter
    results = {True: [], False: []}
    for native in (True, False):
        if not native:
            torch_path()
        for T, E, k, d in cases:
            g = torch.Generator().manual_seed(T * 1000 + E * 10 + k)
            router = TopKRouter(d, E, k)
            with torch.no_grad():
                router.gate.weight.copy_(torch.randn(E, d, generator=g))
            x = torch.randn(T, d, generator=g, requires_grad=True)
            w1 = (torch.randn(E, d, 6, generator=g) / d ** 0.5).requires_grad_()
            w2 = (torch.randn(E, 6, d, generator=g) / 6 ** 0.5).requires_grad_()
            r = router(x)
            out = moe_dispatch(x, r.topk_idx, r.topk_weight, w1, w2).out
            (out.square().sum() + r.aux_loss + r.z_loss).backward()
            results[native].append((r.topk_idx, out.detach(), r.z_loss.detach(), x.grad,
                                    router.gate.weight.grad, w1.grad, w2.grad))
    for case, a, b in zip(cases, results[True], results[False]):
        assert torch.equal(a[0], b[0]), case
        for u, v in zip(a[1:], b[1:]):   # float32 sums in another order: relative to the size
            assert (u - v).abs().max() <= 1e-5 * v.abs().max() + 1e-6, case
