"""FLOPs per token (engine/flops.py) against a count written out by hand and against
torch's own FlopCounterMode on a real forward pass."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from moe_studio.engine.expert_kernels import expert_kernel_setting, set_expert_kernel
from moe_studio.engine.flops import TRAIN_FACTOR, count_flops, step_flops
from moe_studio.engine.model import MoEGPT
from moe_studio.engine.trainer import Trainer
from moe_studio.store.reader import RunReader

from tiny import tiny_config


def _model(cfg):
    torch.manual_seed(0)
    return MoEGPT(cfg.model, cfg.moe, context=cfg.data.context)


def test_hand_count_tiny_moe():
    # 2 layers, d=32, d_ff=64, 4 experts top-2, context 16, vocab 256, both blocks MoE.
    cfg = tiny_config()
    f = count_flops(_model(cfg))
    d, h, E, k, T, V, L = 32, 64, 4, 2, 16, 256, 2
    per_layer_fixed = 2 * d * 3 * d + 2 * d * d + 4 * T * d + 2 * d * E   # qkv, out, scores, router
    expert = 2 * (d * h + h * d)
    head = 2 * d * V
    assert f.forward_active == L * (per_layer_fixed + k * expert) + head
    assert f.forward_total == L * (per_layer_fixed + E * expert) + head
    assert f.train_active == 3 * f.forward_active


def test_hand_count_dense_and_shared():
    cfg = tiny_config(model__moe_layers="none")
    d, ff, T, V = 32, 64, 16, 256
    f = count_flops(_model(cfg))
    assert f.forward_active == f.forward_total == 2 * (8 * d * d + 4 * T * d + 4 * d * ff) + 2 * d * V
    cfg = tiny_config(moe__n_shared=1, moe__top_k=1, moe__d_expert=16)
    f = count_flops(_model(cfg))
    layer = 8 * d * d + 4 * T * d + 2 * d * 4 + 4 * d * 16 + 4 * d * 16   # + shared + 1 expert
    assert f.forward_active == 2 * layer + 2 * d * V


def _counted(model, x, backward=False):
    # The math backend of SDPA: torch's fused CPU attention kernel has no FLOP formula
    # registered with FlopCounterMode (it would count 0), the math one is two bmm's.
    was = expert_kernel_setting()
    set_expert_kernel("loop")   # plain matmuls, which FlopCounterMode sees
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            if backward:
                model(x, x)[1].backward()
            else:
                model(x)
    finally:
        set_expert_kernel(was)
    return fc.get_total_flops()


@pytest.mark.parametrize("moe_layers,top_k", [("none", 2), ("all", 2), ("1", 1)])
def test_matches_flop_counter_mode(moe_layers, top_k):
    cfg = tiny_config(model__moe_layers=moe_layers, moe__top_k=top_k)
    model = _model(cfg).eval()
    B, T = 3, cfg.data.context
    x = torch.randint(0, 256, (B, T))
    assert _counted(model, x) == count_flops(model).forward_active * B * T
    # forward + backward: the backward's two products per matmul make it 3 x forward
    assert _counted(model.train(), x, backward=True) == TRAIN_FACTOR * count_flops(model).forward_active * B * T


def test_trainer_records_flops(tmp_path):
    cfg = tiny_config(train__steps=3, train__eval_every=3)
    tr = Trainer(cfg, tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    r = RunReader(tr.run_dir)
    meta = r.meta["flops_per_token"]
    assert meta["forward_active"] == tr.flops.forward_active
    assert meta["train_active"] == 3 * meta["forward_active"]
    df = r.scalars(["cost/train_flops"], member=-1)
    per = cfg.data.batch_size * cfg.data.context * meta["train_active"]
    assert list(df["value"]) == [float(per * s) for s in df["step"]]
    assert len(df) == 3
    fps = r.scalars(["cost/flops_per_s"], member=-1)["value"]
    assert (fps > 0).all()
    r.close()


def test_boosting_counts_the_ensemble_so_far_forward():
    from moe_studio.engine.flops import FlopCount
    c = FlopCount(forward_active=10, forward_total=20, context=4)
    assert step_flops(c, tokens=5, models=1, extra_forwards=2) == 5 * (30 + 20)


@pytest.mark.parametrize("factor", [0.0, 1.25, 2.0])
def test_expert_choice_counts_what_the_experts_ran(factor):
    # Expert choice: each of the E experts runs on C = ceil(factor * N * k / E) of the
    # N tokens of a forward (factor 0 = 1.0), so a token costs E * C / N experts, not
    # top_k. FlopCounterMode counts the matmuls that actually ran.
    cfg = tiny_config(moe__router="expert_choice", moe__capacity_factor=factor)
    model = _model(cfg).eval()
    B, T, E, k = 3, cfg.data.context, 4, 2
    N = B * T
    x = torch.randint(0, 256, (B, T))
    f = count_flops(model, batch_tokens=N)
    assert f.forward_active * N == _counted(model, x)
    C = min(N, math.ceil((factor or 1.0) * N * k / E))
    dense = count_flops(_model(tiny_config(moe__top_k=1)))   # one expert per token
    per_expert_per_token = dense.forward_total - dense.forward_active   # (E - 1) experts, 2 blocks
    expert = per_expert_per_token / (E - 1) / 2
    top_k_count = count_flops(_model(tiny_config())).forward_active
    assert f.forward_active == pytest.approx(top_k_count + 2 * (E * C / N - k) * expert, rel=1e-12)
    if factor > 1:
        assert f.forward_active > top_k_count   # the top_k count would be wrong here


def test_trainer_counts_expert_choice_at_its_batch(tmp_path):
    cfg = tiny_config(train__steps=2, train__warmup_steps=0, train__eval_every=100,
                      moe__router="expert_choice",
                      moe__capacity_factor=1.25)
    tr = Trainer(cfg, tmp_path)
    tr.close(checkpoint=False)
    N = cfg.data.batch_size * cfg.data.context
    assert tr.flops == count_flops(tr.models[0], batch_tokens=N)
    model = tr.models[0].eval()
    x = torch.randint(0, 256, (cfg.data.batch_size, cfg.data.context))
    assert tr.flops.forward_active * N == _counted(model, x)
