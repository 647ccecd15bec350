"""Capacity as GShard and Switch define it: first choices of all tokens before any
second choice, and capacity counted per sequence, each against a walk written here in
plain Python loops; per-row drops recorded by the layer."""
from __future__ import annotations

import math

import pytest
import torch

from moe_studio.config.schema import MoEConfig
from moe_studio.engine import expert_kernels as kernels
from moe_studio.engine.dispatch import expert_capacity, moe_dispatch
from moe_studio.engine.moe_layer import MoEFeedForward
from moe_studio.engine.trainer import Trainer
from moe_studio.store.reader import open_run
from tiny import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_expert_kernel")


def reference_keep(topk_idx, n_experts, capacity, priority, group_size):
    """keep[t][j]: walk each group of tokens, in the order the priority names, and let
    every expert accept pairs until it has `capacity` of them in that group."""
    T, k = len(topk_idx), len(topk_idx[0])
    size = group_size or T
    keep = [[False] * k for _ in range(T)]
    for g0 in range(0, T, size):
        used = [0] * n_experts
        tokens = range(g0, g0 + size)
        if priority == "first_choice":
            walk = [(t, j) for j in range(k) for t in tokens]
        else:
            walk = [(t, j) for t in tokens for j in range(k)]
        for t, j in walk:
            e = topk_idx[t][j]
            if used[e] < capacity:
                used[e] += 1
                keep[t][j] = True
    return keep


def reference_out(x, idx, w, w1, w2, keep):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            if keep[t][j]:
                e = int(idx[t, j])
                out[t] += w[t, j] * (torch.nn.functional.gelu(x[t] @ w1[e]) @ w2[e])
    return out


def problem(T=24, d=8, h=4, E=4, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    # skewed scores: experts 0 and 1 popular, so capacity bites on first and second choices
    scores = torch.rand(T, E, generator=g) + torch.tensor([0.6, 0.4, 0.0, 0.0])[:E]
    idx = scores.topk(k, dim=-1).indices
    return (torch.randn(T, d, generator=g), idx, torch.rand(T, k, generator=g),
            torch.randn(E, d, h, generator=g) / math.sqrt(d), torch.randn(E, h, d, generator=g) / 2)


@pytest.mark.parametrize("kernel", ["loop", "grouped"])
@pytest.mark.parametrize("priority", ["first_choice", "token_order"])
@pytest.mark.parametrize("group_size", [0, 6])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_capacity_matches_reference_walk(kernel, priority, group_size, k):
    kernels.set_expert_kernel(kernel)
    x, idx, w, w1, w2 = problem(k=k)
    E, T = w1.shape[0], x.shape[0]
    cap = expert_capacity(1.0, group_size or T, k, E)
    res = moe_dispatch(x, idx, w, w1, w2, cap, priority=priority, group_size=group_size)
    keep = reference_keep(idx.tolist(), E, cap, priority, group_size)
    assert res.pair_kept.tolist() == keep
    assert res.dropped_per_expert.sum().item() == sum(not v for row in keep for v in row) > 0
    torch.testing.assert_close(res.out, reference_out(x, idx, w, w1, w2, keep), atol=1e-5, rtol=1e-5)


def test_first_choice_keeps_first_choices_that_token_order_drops():
    x, _, w, w1, w2 = problem(k=2)
    # first choices spread evenly (6 per expert), every second choice on expert 0 (or 1)
    first_choice = torch.arange(24) % 4
    idx = torch.stack([first_choice, (first_choice == 0).long()], dim=1)
    cap = expert_capacity(1.0, x.shape[0], 2, 4)                   # 12
    first = moe_dispatch(x, idx, w, w1, w2, cap, priority="first_choice").pair_kept
    token = moe_dispatch(x, idx, w, w1, w2, cap, priority="token_order").pair_kept
    assert first[:, 0].all()               # capacity 1.0 serves every first choice ...
    assert not token[:, 0].all()           # ... which walking token by token does not


def test_layer_records_drops_per_sequence():
    torch.manual_seed(0)
    cfg = MoEConfig(n_experts=4, top_k=2, capacity_factor=0.5, capacity_group="batch")
    layer = MoEFeedForward(8, cfg, 12)
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1.0)
    x = torch.randn(3, 8, 8)
    layer(x)
    batch_rows = layer.last.dropped_per_row
    idx = layer.last.topk_idx.tolist()
    keep = reference_keep(idx, 4, expert_capacity(0.5, 24, 2, 4), "first_choice", 0)
    expect = [sum(not v for t in range(8 * b, 8 * b + 8) for v in keep[t]) for b in range(3)]
    assert batch_rows.tolist() == expect
    assert batch_rows.sum() == layer.last.dropped_per_expert.sum()

    layer.capacity_group = "sequence"
    layer(x)
    keep = reference_keep(idx, 4, expert_capacity(0.5, 8, 2, 4), "first_choice", 8)
    expect = [sum(not v for t in range(8 * b, 8 * b + 8) for v in keep[t]) for b in range(3)]
    assert layer.last.dropped_per_row.tolist() == expect


def test_training_run_records_drops_per_row(tmp_path):
    cfg = tiny_config(moe__capacity_factor=0.5, moe__capacity_group="sequence", train__steps=3)
    tr = Trainer(cfg, runs_dir=tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    steps, rows = open_run(tr.run_dir).tensor_series("moe/dropped_per_row")
    assert rows.shape == (3, 2, cfg.data.batch_size)          # steps x MoE blocks x sequences
    drops = open_run(tr.run_dir).tensor_series("moe/dropped_per_expert")[1]
    assert rows.sum() == drops.sum() > 0
