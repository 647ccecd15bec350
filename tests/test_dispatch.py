"""Sort-based dispatch against a naive per-token reference written here, capacity
dropping, the MoE layer (shared expert, statistics) and the moe-layer benchmark."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moe_studio.config.schema import MoEConfig
from moe_studio.engine import expert_kernels as kernels
from moe_studio.engine.dispatch import expert_capacity, moe_dispatch
from moe_studio.engine.moe_layer import MoEFeedForward

KERNELS = ["loop", "grouped"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _restore_kernel():
    yield
    kernels.set_expert_kernel("auto")
    kernels.TUNER.reset()       # a test may have taught it that grouped_mm fails


def use_kernel(kernel: str, d: int = 8, h: int = 4) -> None:
    """Force a kernel; skip where 'grouped' would silently fall back to the loop."""
    if kernel == "grouped" and not kernels.grouped_mm_works(torch.device("cpu"), torch.float32, d, h):
        pytest.skip("torch._grouped_mm does not run here")
    kernels.set_expert_kernel(kernel)


def naive_moe(x, topk_idx, topk_weight, w1, w2, keep=None):
    """out[t] = sum over t's kept choices j of weight * expert(x[t]), one token at a time."""
    T, k = topk_idx.shape
    rows = []
    for t in range(T):
        acc = torch.zeros_like(x[t])
        for j in range(k):
            if keep is not None and not keep[t][j]:
                continue
            e = int(topk_idx[t, j])
            acc = acc + topk_weight[t, j] * (F.gelu(x[t] @ w1[e]) @ w2[e])
        rows.append(acc)
    return torch.stack(rows)


def keep_mask(topk_idx, n_experts, capacity):
    """Walk the tokens in order; each expert accepts its first `capacity` pairs."""
    used = [0] * n_experts
    keep = []
    for row in topk_idx.tolist():
        keep_row = []
        for e in row:
            used[e] += 1
            keep_row.append(used[e] <= capacity)
        keep.append(keep_row)
    return keep


def random_problem(T=13, d=8, h=4, E=4, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, d, generator=g)
    w1 = torch.randn(E, d, h, generator=g) / math.sqrt(d)
    w2 = torch.randn(E, h, d, generator=g) / math.sqrt(h)
    # k distinct experts per token, and one expert (E-1) never chosen: an empty block
    scores = torch.rand(T, E, generator=g)
    scores[:, E - 1] = -1.0
    topk_idx = scores.topk(k, dim=-1).indices
    topk_weight = torch.rand(T, k, generator=g)
    return x, topk_idx, topk_weight, w1, w2


def _grads(fn, tensors):
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*tensors)
    g = torch.linspace(-1, 1, out.numel()).view_as(out)   # not all-ones: exercises the mixing
    out.backward(g)
    return out.detach(), [t.grad for t in tensors]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_dispatch_matches_naive_outputs_and_gradients(kernel, k):
    use_kernel(kernel)
    x, idx, w, w1, w2 = random_problem(k=k)
    out, grads = _grads(lambda x, w, w1, w2: moe_dispatch(x, idx, w, w1, w2).out, [x, w, w1, w2])
    ref, ref_grads = _grads(lambda x, w, w1, w2: naive_moe(x, idx, w, w1, w2), [x, w, w1, w2])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for name, a, b in zip(["x", "topk_weight", "w1", "w2"], grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"gradient of {name}")
    assert grads[2][-1].abs().sum() == 0   # the unused expert gets no gradient


def test_counts_without_capacity():
    x, idx, w, w1, w2 = random_problem(T=13, k=2)
    res = moe_dispatch(x, idx, w, w1, w2)
    expected = torch.tensor([(idx == e).sum().item() for e in range(4)])
    assert torch.equal(res.tokens_per_expert, expected)
    assert res.tokens_per_expert.sum() == 13 * 2
    assert res.dropped_per_expert.sum() == 0


def test_capacity_formula():
    assert expert_capacity(0.0, 100, 2, 8) == 0
    assert expert_capacity(1.0, 100, 2, 8) == 25
    assert expert_capacity(1.25, 100, 2, 8) == math.ceil(1.25 * 100 * 2 / 8) == 32
    assert expert_capacity(0.01, 10, 1, 8) == 1


def test_capacity_drops_latest_tokens_exactly():
    # 5 tokens, top-1, 2 experts, capacity 2: expert 0 gets tokens 0,1,3,4 -> keeps 0,1.
    x, _, _, w1, w2 = random_problem(T=5, E=2, k=1)
    idx = torch.tensor([[0], [0], [1], [0], [0]])
    w = torch.ones(5, 1)
    res = moe_dispatch(x, idx, w, w1, w2, capacity=2)
    assert res.tokens_per_expert.tolist() == [4, 1]
    assert res.dropped_per_expert.tolist() == [2, 0]
    assert torch.all(res.out[3:] == 0)                     # dropped: no MoE output at all
    assert torch.all(res.out[:3].abs().sum(-1) > 0)
    torch.testing.assert_close(res.out[:3], naive_moe(x[:3], idx[:3], w[:3], w1, w2))


@pytest.mark.parametrize("kernel", KERNELS)
def test_capacity_matches_reference_with_gradients(kernel):
    use_kernel(kernel)
    E, k, T = 4, 2, 17
    x, idx, w, w1, w2 = random_problem(T=T, E=E, k=k, seed=3)
    cap = 5
    keep = keep_mask(idx, E, cap)
    res = moe_dispatch(x, idx, w, w1, w2, capacity=cap)
    counts = [(idx == e).sum().item() for e in range(E)]
    assert res.tokens_per_expert.tolist() == counts
    assert res.dropped_per_expert.tolist() == [max(0, c - cap) for c in counts]
    assert sum(not kj for row in keep for kj in row) == res.dropped_per_expert.sum().item() > 0

    out, grads = _grads(lambda x, w, w1, w2: moe_dispatch(x, idx, w, w1, w2, cap).out,
                        [x, w, w1, w2])
    ref, ref_grads = _grads(lambda x, w, w1, w2: naive_moe(x, idx, w, w1, w2, keep),
                            [x, w, w1, w2])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    dropped = torch.tensor([[not kj for kj in row] for row in keep])
    assert torch.all(grads[1][dropped] == 0)               # dropped pairs: no gate gradient


def test_auto_kernel_agrees_and_records_choice():
    kernels.set_expert_kernel("auto")
    x, idx, w, w1, w2 = random_problem(T=9, d=8, h=8)
    out = moe_dispatch(x, idx, w, w1, w2).out
    torch.testing.assert_close(out, naive_moe(x, idx, w, w1, w2), atol=1e-5, rtol=1e-5)
    choices = [c for c in kernels.kernel_choices() if (c["d_model"], c["d_hidden"]) == (8, 8)]
    assert choices and choices[0]["kernel"] in ("loop", "grouped")
    with pytest.raises(ValueError):
        kernels.set_expert_kernel("fast")


def test_grouped_falls_back_where_it_cannot_run(monkeypatch):
    def unsupported(*args, **kwargs):
        raise RuntimeError("grouped_mm: not supported for this device / dtype")

    monkeypatch.setattr(torch, "_grouped_mm", unsupported, raising=False)
    kernels.TUNER.reset()                                     # forget earlier probes
    kernels.set_expert_kernel("grouped")
    x, idx, w, w1, w2 = random_problem()
    torch.testing.assert_close(moe_dispatch(x, idx, w, w1, w2).out, naive_moe(x, idx, w, w1, w2),
                               atol=1e-5, rtol=1e-5)
    assert not kernels.grouped_mm_works(torch.device("cpu"), torch.float32, 8, 4)


def test_grouped_probe_ignores_callers_autocast_and_inference_mode(monkeypatch):
    cpu = torch.device("cpu")
    kernels.TUNER.reset()
    expected = kernels.grouped_mm_works(cpu, torch.float32, 8, 4)    # probed in no context
    for ctx in (torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode()):
        kernels.TUNER.reset()
        with ctx:
            assert kernels.grouped_mm_works(cpu, torch.float32, 8, 4) == expected


def test_dispatch_under_inference_mode():
    x, idx, w, w1, w2 = random_problem(T=7, d=4, h=12)
    with torch.inference_mode():
        out = moe_dispatch(x, idx, w, w1, w2).out
    torch.testing.assert_close(out, naive_moe(x, idx, w, w1, w2), atol=1e-5, rtol=1e-5)


# --- the MoE layer --------------------------------------------------------------------


def _layer(**moe):
    torch.manual_seed(0)
    cfg = MoEConfig(**{"n_experts": 4, "top_k": 2, **moe})
    return MoEFeedForward(8, cfg, d_ff=12).eval()


@pytest.mark.parametrize("shared", [0, 1])
def test_layer_is_router_plus_experts_plus_shared(shared):
    layer = _layer(n_shared=shared)
    x = torch.randn(2, 5, 8)
    y = layer(x)
    flat = x.reshape(10, 8)
    r = layer.router(flat)
    ref = naive_moe(flat, r.topk_idx, r.topk_weight, layer.w1, layer.w2)
    if shared:
        s = layer.shared
        ref = ref + F.gelu(flat @ s.up_proj.weight.T) @ s.down_proj.weight.T
    torch.testing.assert_close(y, ref.view(2, 5, 8), atol=1e-5, rtol=1e-5)


def test_layer_capacity_dropped_tokens_get_only_shared_output():
    layer = _layer(top_k=1, capacity_factor=0.5, n_shared=1)
    x = torch.randn(1, 16, 8)
    y = layer(x)
    flat = x.reshape(16, 8)
    r = layer.router(flat)
    keep = keep_mask(r.topk_idx, 4, expert_capacity(0.5, 16, 1, 4))
    dropped = torch.tensor([not row[0] for row in keep])
    assert dropped.any()
    shared_only = layer.shared(flat)
    torch.testing.assert_close(y[0][dropped], shared_only[dropped])
    assert layer.last.dropped_per_expert.sum().item() == dropped.sum().item()


def test_layer_statistics():
    layer = _layer()
    x = torch.randn(3, 4, 8)
    layer(x)
    s = layer.last
    probs = s.probs
    assert probs.shape == (12, 4) and s.topk_idx.shape == (12, 2) and s.topk_weight.shape == (12, 2)
    assert s.tokens_per_expert.dtype == torch.float32 and s.tokens_per_expert.sum() == 24
    assert s.dropped_per_expert.shape == (4,) and s.dropped_per_expert.sum() == 0
    ent = -(probs * probs.log()).sum(-1).mean()
    torch.testing.assert_close(s.entropy, ent)
    torch.testing.assert_close(s.top1_prob, probs.max(-1).values.mean())
    logits = layer.router(x.reshape(12, 8)).logits
    torch.testing.assert_close(s.logit_absmean, logits.abs().mean())
    torch.testing.assert_close(s.logit_absmax, logits.abs().max())
    for t in (s.entropy, s.aux_loss, s.z_loss, s.probs, s.tokens_per_expert):
        assert not t.requires_grad
    assert layer.aux_loss.requires_grad and layer.z_loss.requires_grad
    torch.testing.assert_close(s.aux_loss, layer.aux_loss.detach())

    layer.collect_stats = False
    layer(x)
    assert layer.last is None and layer.tokens_per_expert.sum() == 24


def test_layer_soft_router_uses_every_expert():
    layer = _layer(router="soft")
    x = torch.randn(1, 6, 8)
    y = layer(x)
    flat = x.reshape(6, 8)
    probs = layer.router(flat).probs
    ref = sum(probs[:, e:e + 1] * (F.gelu(flat @ layer.w1[e]) @ layer.w2[e]) for e in range(4))
    torch.testing.assert_close(y.view(6, 8), ref, atol=1e-5, rtol=1e-5)
    assert layer.last.tokens_per_expert.tolist() == [6.0] * 4


# --- benchmark smoke test -------------------------------------------------------------


def test_bench_quick_returns_expected_keys():
    from moe_studio.bench.moe_layer import run

    r = run(json_out=True, quick=True)
    assert {"device", "threads", "tokens", "d_model", "d_expert", "configs", "budgets"} <= set(r)
    assert len(r["configs"]) == 2
    for c in r["configs"]:
        assert set(c["ms"]) == {"moe_layer", "dense_ffn", "naive_loop", "onehot_einsum"}
        assert set(c["ratio_to_dense"]) == set(c["ms"])
        assert all(v > 0 for v in c["ms"].values())
        assert c["expert_kernel"] in ("loop", "grouped")
    assert r["trainer_shape"]["expert_kernel"] in ("loop", "grouped")
    # large-layer and trainer-shape ratios to dense, sorted vs naive at both, 64x vs baselines
    assert len(r["budgets"]) == 5 and all("ok" in b for b in r["budgets"].values())
    for b in r["budgets"].values():
        assert b["verdict"] in ("ok", "missed", "unresolved")
        assert b["ci95"][0] <= b["value"] <= b["ci95"][1]
        assert b["ok"] == (b["verdict"] == "ok")


def test_bench_baselines_compute_the_same_function():
    from moe_studio.bench.moe_layer import naive_loop, onehot_einsum

    layer = _layer()
    x = torch.randn(1, 10, 8)
    y = layer(x)
    torch.testing.assert_close(naive_loop(layer, x), y, atol=1e-5, rtol=1e-5)
    # Capacity large enough that nothing drops: the einsum dispatch is then exact too.
    torch.testing.assert_close(onehot_einsum(layer, x, capacity_factor=4.0), y,
                               atol=1e-5, rtol=1e-5)


def test_tuners_keep_their_own_choices():
    """A KernelTuner holds its setting and measurements itself: a second one neither
    sees nor changes the process's; an unknown name from the environment measures."""
    x, idx, w, w1, w2 = random_problem(T=9, d=8, h=8)
    xs, counts = x[:9], torch.tensor([3, 3, 3, 0])
    own = kernels.KernelTuner("loop")
    before = kernels.kernel_choices()
    assert own.choose(xs, w1, w2, counts) == "loop" and own.choices() == []
    assert kernels.kernel_choices() == before and kernels.expert_kernel_setting() == "auto"
    assert kernels.KernelTuner("fastest").setting == "auto"
    auto = kernels.KernelTuner()
    assert auto.choose(xs, w1, w2, counts) in ("loop", "grouped")
    # measured only where both kernels can run
    assert len(auto.choices()) == int(auto.grouped_mm_works(torch.device("cpu"), torch.float32, 8, 8))


def test_expert_chunks_keep_each_chunks_hidden_under_the_bound(monkeypatch):
    monkeypatch.setattr(kernels, "GROUPED_CHUNK_BYTES", 100)
    # 10 bytes a row: at most 10 rows a chunk, an expert of more rows alone
    assert kernels._expert_chunks([4, 4, 4, 0, 12, 3, 3], 10) == [2, 2, 1, 2]
    assert kernels._expert_chunks([1, 2, 3], 10) == [3]
    assert sum(kernels._expert_chunks([5] * 64, 10)) == 64


@pytest.mark.parametrize("act", ["gelu", "swiglu"])
def test_grouped_kernel_in_chunks_gives_the_same_numbers_as_one_call(monkeypatch, act):
    """On the CPU a large batch runs in chunks of experts (hidden activations kept in
    cache): outputs and all three gradients bit-identical to one grouped call, with
    empty experts and an expert larger than a chunk among them."""
    if not kernels.grouped_mm_works(torch.device("cpu"), torch.float32, 8, 12 if act == "gelu" else 24, 12):
        pytest.skip("torch._grouped_mm does not run here")
    g = torch.Generator().manual_seed(7)
    sizes = [5, 0, 9, 30, 2, 0, 7, 11]
    counts = torch.tensor(sizes)
    N, d, h = sum(sizes), 8, 12
    xs = torch.randn(N, d, generator=g)
    w1 = torch.randn(8, d, h if act == "gelu" else 2 * h, generator=g)
    w2 = torch.randn(8, h, d, generator=g)
    gout = torch.randn(N, d, generator=g)
    calls = []
    real = kernels._grouped_pair
    monkeypatch.setattr(kernels, "_grouped_pair", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    results = []
    for bound in (1 << 30, 20 * w1.shape[-1] * 4):       # one call; then <= 20 rows a chunk
        monkeypatch.setattr(kernels, "GROUPED_CHUNK_BYTES", bound)
        leaves = [t.clone().requires_grad_() for t in (xs, w1, w2)]
        out = kernels.mlp_grouped(leaves[0], leaves[1], leaves[2], counts)
        out.backward(gout)
        results.append([out.detach()] + [t.grad for t in leaves])
    assert calls[0] == N and len(calls) > 2 and sum(calls[1:]) == N
    for a, b in zip(*results):
        assert torch.equal(a, b)
