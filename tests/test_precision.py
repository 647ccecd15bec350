"""Mixed precision: format fractions against real casts, the exponent histogram against a
numpy reference, headroom records in the store, skipped steps under a GradScaler driven
into overflow, non-finite attribution to a planted module, and that watching changes
nothing."""
import math

import numpy as np
import pytest
import torch

from moe_studio.config import ExperimentConfig
from moe_studio.engine.formats import (FORMATS, LOG2_EDGES, N_BINS, exponent_histogram,
                                       format_counts, format_fractions,
                                       fractions_from_histogram)
from moe_studio.engine.headroom import KINDS, HeadroomMonitor
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run
from tiny import tiny_config

CAST_FORMATS = [f for f in ("fp16", "bf16", "fp8_e5m2") if FORMATS[f].dtype is not None]


def log_uniform(n, lo, hi, dtype=torch.float64, seed=0):
    """n values with log2|x| uniform in [lo, hi] and random signs."""
    g = torch.Generator().manual_seed(seed)
    e = torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=g)
    sign = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return (sign * torch.exp2(e)).to(dtype)


def adversarial(fmt):
    """Edge values of one format, exactly and one float32 step either side, as float32."""
    f = FORMATS[fmt]
    points = [f.max, f.overflow_threshold, f.flush_threshold, f.min_subnormal,
              f.subnormal_threshold, f.min_normal, f.min_normal * 1.5, 1.0]
    p = torch.tensor(points, dtype=torch.float32)
    near = torch.cat([p, torch.nextafter(p, torch.full_like(p, math.inf)),
                      torch.nextafter(p, torch.zeros_like(p))])
    # ties between subnormals (odd and even neighbours), a few multiples of the spacing
    ties = torch.tensor([k * f.min_subnormal / 2 for k in (3, 5, 6, 7)], dtype=torch.float32)
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 3e38, 1e-45])
    x = torch.cat([near, ties, special])
    return torch.cat([x, -x])


def cast_reference(x, fmt):
    """(overflow, subnormal, flush_to_zero) counts from a direct cast x.to(dtype)."""
    f = FORMATS[fmt]
    y = x.to(f.dtype).double()
    fin = torch.isfinite(x) & (x != 0)
    overflow = int((fin & torch.isinf(y)).sum())
    flush = int((fin & (y == 0)).sum())
    subnormal = int((fin & (y != 0) & (y.abs() < f.min_normal)).sum())
    return [overflow, subnormal, flush]


@pytest.mark.parametrize("fmt", CAST_FORMATS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_format_counts_match_a_direct_cast_on_random_values(fmt, dtype):
    x = log_uniform(40_000, -160, 140, dtype=dtype)
    ref = cast_reference(x, fmt)
    assert format_counts(x, (fmt,))[0].tolist() == ref
    assert ref[1] > 0 and ref[2] > 0                          # every outcome exercised,
    assert ref[0] > 0 or (fmt == "bf16" and dtype == torch.float32)  # (bf16 > any fp32)
    fr = format_fractions(x, fmt)
    assert [fr["overflow"], fr["subnormal"], fr["flush_to_zero"]] == [c / x.numel() for c in ref]


@pytest.mark.parametrize("fmt", CAST_FORMATS)
def test_format_counts_match_a_direct_cast_at_the_edges(fmt):
    for f_edges in FORMATS:        # this format's cast at every format's edge values
        x = adversarial(f_edges)
        assert format_counts(x, (fmt,))[0].tolist() == cast_reference(x, fmt), f_edges


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_measured_exactly(dtype):
    x = log_uniform(5000, -30, 20).to(dtype)
    for fmt in CAST_FORMATS:
        assert format_counts(x, (fmt,))[0].tolist() == cast_reference(x, fmt)


def test_e4m3fn_overflow_matches_the_cast():
    """e4m3fn has no inf. PyTorch < 2.12 casts finite values past 464 to NaN; newer
    versions saturate them to ±448 (pytorch/pytorch#178817). Either way the value did not
    fit. Reference for "rounds past 448": the cast of x/2 (halving keeps the rounding of
    a normal value) doubled, which the range then cannot hold."""
    f = FORMATS["fp8_e4m3"]
    if f.dtype is None:
        pytest.skip("this torch has no float8_e4m3fn")
    x = torch.cat([log_uniform(40_000, -14, 12, dtype=torch.float32), adversarial("fp8_e4m3"),
                   torch.tensor([448.0, 463.9, 464.0, 464.01, 479.0, 480.0, -464.0, -464.1])])
    fin = torch.isfinite(x) & (x != 0)
    half = (x / 2).to(f.dtype).float() * 2
    over = fin & ~(half.abs() <= 448)                     # NaN counts as "did not fit"
    y = x.to(f.dtype).float()
    assert (torch.isnan(y[over]) | (y[over].abs() == 448)).all()   # NaN or saturated
    flush = fin & (y == 0)
    sub = fin & (y != 0) & (y.abs() < f.min_normal) & ~over
    got = format_counts(x, ("fp8_e4m3",))[0].tolist()
    assert got == [int(over.sum()), int(sub.sum()), int(flush.sum())]
    assert got[0] > 0 and got[1] > 0 and got[2] > 0
    assert format_counts(torch.tensor([464.0, 464.0001]), ("fp8_e4m3",))[0, 0] == 1


def test_exponent_histogram_matches_numpy():
    edges = 2.0 ** LOG2_EDGES.astype(np.float64)           # exact powers of two
    powers = torch.tensor(edges[5:-5])
    x64 = torch.cat([log_uniform(30_000, -160, 140), powers, torch.nextafter(powers, torch.zeros_like(powers)),
                     torch.tensor([0.0, -0.0, math.inf, math.nan, -math.inf])])
    for x in (x64, x64.float(), log_uniform(5000, -30, 20).half(), log_uniform(5000, -140, 120).bfloat16()):
        a = x.double().abs().numpy()
        fin = np.isfinite(a) & (a != 0)
        idx = np.clip(np.searchsorted(edges, a[fin], side="right") - 1, 0, N_BINS - 1)
        ref = np.bincount(idx, minlength=N_BINS)
        h = exponent_histogram(x)
        assert np.array_equal(h.counts.numpy(), ref), x.dtype
        assert int(h.zeros) == int((a == 0).sum())
        assert int(h.nonfinite) == int((~np.isfinite(a)).sum())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fractions_from_histogram_are_close_to_exact(fmt):
    x = torch.cat([log_uniform(50_000, -160, 140), torch.zeros(100), torch.tensor([math.inf])])
    h = exponent_histogram(x)
    approx = fractions_from_histogram(h.counts.numpy(), int(h.zeros), int(h.nonfinite), fmt)
    exact = format_fractions(x, fmt)
    one_bin = 1.0 / 300               # log-uniform over 300 octaves: one bin's share
    for k in exact:
        assert abs(approx[k] - exact[k]) < 2 * one_bin, k


# ------------------------------------------------------------------------- the trainer

def tiny(**over) -> ExperimentConfig:
    base = dict(train__steps=6, train__warmup_steps=1, train__eval_every=1000,
                train__eval_batches=1, train__snapshot_every=1000, precision__headroom_every=2)
    return tiny_config("tiny-precision", **{**base, **over})


def events(tr, kind):
    with open_run(tr.run_dir) as r:
        ev = r.events([kind])
    return ev.sort_values("step").to_dict("records")


def test_headroom_records_reach_the_store(tmp_path):
    tr = Trainer(tiny(), runs_dir=tmp_path)
    for _ in range(4):
        tr.step()
    tr.close()
    with open_run(tr.run_dir) as r:
        names = r.meta["precision_modules"]
        assert names[0] == "tok_emb" and names[-1] == "lm_head"
        # forward order: a block's router runs before its experts
        assert names.index("blocks.0.ffn.router") < names.index("blocks.0.ffn.experts") \
            < names.index("blocks.1.attn.qkv")
        assert r.meta["precision_kinds"] == list(KINDS)
        assert r.meta["precision_formats"] == list(FORMATS)
        assert r.meta["precision_log2_edges"] == LOG2_EDGES.tolist()
        n, K, F = len(names), len(KINDS), len(FORMATS)
        assert list(r.tensor_steps("precision/absmax")) == [1, 2, 4]
        _, absmax = r.tensor("precision/absmax", step=2)
        _, min_nz = r.tensor("precision/min_nonzero", step=2)
        _, hist = r.tensor("precision/exp_hist", step=2)
        _, frac = r.tensor("precision/fractions", step=2)
        _, counts = r.tensor("precision/counts", step=2)
        assert absmax.shape == min_nz.shape == (n, K)
        assert hist.shape == (n, K, N_BINS) and hist.dtype == np.int32
        assert frac.shape == (n, K, F, 3) and counts.shape == (n, K, 3)
        # every element measured is a zero or in a bin; LM head has no weight of its own
        assert np.array_equal(hist.sum(-1) + counts[..., 1], counts[..., 0])
        assert counts[-1, KINDS.index("weight"), 0] == 0 and np.isnan(absmax[-1, 2])
        assert (absmax[:-1] > 0).all() and (min_nz[:-1] <= absmax[:-1]).all()
        scal = set(r.scalar_names())
        assert {"precision/max_act_absmax", "precision/max_grad_absmax",
                "precision/worst_fp16_overflow", "precision/worst_fp8_e4m3_flush_to_zero"} <= scal


@pytest.mark.parametrize("mode", ["fp32", "fp16"])
def test_headroom_does_not_change_the_loss_curve(tmp_path, mode):
    curves = []
    for on in (False, True):
        tr = Trainer(tiny(precision__headroom=on, precision__headroom_every=1,
                          precision__mode=mode), runs_dir=tmp_path)
        for _ in range(4):
            tr.step()
        tr.close()
        with open_run(tr.run_dir) as r:
            curves.append(r.scalars(["train/loss"]).sort_values("step").value.to_numpy())
    assert np.array_equal(curves[0], curves[1])


def test_bf16_autocast_trains_on_cpu(tmp_path):
    tr = Trainer(tiny(precision__mode="bf16", train__steps=3), runs_dir=tmp_path)
    losses = [tr.step().loss for _ in range(3)]
    tr.close()
    assert all(math.isfinite(v) for v in losses)
    assert not events(tr, "nonfinite")


def test_grad_scaler_driven_into_overflow_skips_and_backs_off(tmp_path):
    # A loss scale of 2^32 overflows fp16 gradients at once: every step is skipped and
    # the scale halves each time. Skips are not non-finite events.
    tr = Trainer(tiny(precision__mode="fp16", precision__init_scale=2.0 ** 32, train__steps=2),
                 runs_dir=tmp_path)
    tr.step()
    tr.step()
    tr.close()
    ev = events(tr, "loss_scale_backoff")
    assert [e["step"] for e in ev] == [1, 2]
    assert ev[0]["data"]["from"] == 2.0 ** 32 and ev[0]["data"]["to"] == 2.0 ** 31
    assert ev[0]["data"]["kind"] == "gradient" and ev[0]["data"]["module"]
    with open_run(tr.run_dir) as r:
        s = r.scalars(["precision/loss_scale", "precision/skipped"]).sort_values("step")
    assert s[s.name == "precision/loss_scale"].value.tolist() == [2.0 ** 31, 2.0 ** 30]
    assert s[s.name == "precision/skipped"].value.tolist() == [1.0, 1.0]
    assert not events(tr, "nonfinite")


def test_skipped_steps_are_the_steps_the_optimizer_did_not_take(tmp_path):
    """Independent of the trainer's own bookkeeping: a step the GradScaler skipped
    leaves every parameter as it was; every other step moves them. Init scale 2^24
    overflows the first steps' fp16 gradients, then the scale has fallen far enough."""
    tr = Trainer(tiny(precision__mode="fp16", precision__init_scale=2.0 ** 24,
                      train__steps=8, train__warmup_steps=0), runs_dir=tmp_path)
    unchanged = []
    for _ in range(8):
        before = [p.detach().clone() for p in tr.models[0].parameters()]
        tr.step()
        after = list(tr.models[0].parameters())
        if all(torch.equal(b, a) for b, a in zip(before, after)):
            unchanged.append(tr.step_count)
    tr.close()
    with open_run(tr.run_dir) as r:
        s = r.scalars(["precision/skipped"])
    skipped = sorted(s[s.value > 0].step.tolist())
    assert skipped == unchanged
    assert 0 < len(skipped) < 8                  # some overflowed, training went on
    assert [e["step"] for e in events(tr, "loss_scale_backoff")] == skipped


def test_skipped_step_names_the_module_with_the_planted_gradient(tmp_path):
    tr = Trainer(tiny(precision__mode="fp16", precision__init_scale=256.0, train__steps=3),
                 runs_dir=tmp_path)
    planted = tr.models[0].blocks[0].attn.out_proj
    armed = {"on": False}
    planted.weight.register_hook(lambda g: g * math.inf if armed["on"] else g)
    tr.step()
    armed["on"] = True
    tr.step()
    armed["on"] = False
    tr.step()
    tr.close()
    ev = events(tr, "loss_scale_backoff")
    assert [e["step"] for e in ev] == [2]
    assert ev[0]["data"]["module"] == "blocks.0.attn.out_proj"
    assert ev[0]["data"]["to"] == ev[0]["data"]["from"] / 2
    assert "blocks.0.attn.out_proj" in ev[0]["message"]


def test_nonfinite_is_attributed_to_the_planted_module(tmp_path):
    # fp16: a weight scaled by 1e30 overflows the first Linear that uses it; everything
    # after it (attention, router, experts, head) goes non-finite too.
    tr = Trainer(tiny(precision__mode="fp16", train__steps=3), runs_dir=tmp_path)
    tr.step()
    with torch.no_grad():
        tr.models[0].blocks[1].attn.qkv.weight.mul_(1e30)
    tr.step()
    tr.close()
    ev = events(tr, "nonfinite")
    assert ev and ev[0]["step"] == 2
    data = ev[0]["data"]
    assert data["module"] == "blocks.1.attn.qkv" and data["kind"] == "activation"
    assert data["step"] == 2 and "train/loss" in data["names"]
    assert data["modules"][0] == "blocks.1.attn.qkv" and len(data["modules"]) > 1
    assert "blocks.1.attn.qkv" in ev[0]["message"]


def test_stop_on_nan_names_the_module(tmp_path):
    tr = Trainer(tiny(precision__stop_on_nan=True, precision__headroom=False, train__steps=3),
                 runs_dir=tmp_path)
    tr.step()
    with torch.no_grad():
        tr.models[0].blocks[0].attn.out_proj.weight[0, 0] = math.inf
    with pytest.raises(FloatingPointError, match=r"blocks\.0\.attn\.out_proj"):
        tr.step()
    tr.close("failed", "stopped on NaN")


def test_monitor_on_a_plain_model_reports_gradient_origin():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                                torch.nn.Tanh(), torch.nn.Linear(8, 1))
    mon = HeadroomMonitor(model, every=1)
    assert [t.name for t in mon.targets] == ["0", "2", "4"]
    # Plant an inf in the gradient reaching the middle layer's output: its weight gradient
    # and everything upstream go non-finite; the origin is the one nearest the loss.
    model[3].register_full_backward_hook(lambda m, gi, go: (gi[0] * math.inf,))
    mon.begin_step(1)
    model(torch.randn(4, 8)).sum().backward()
    mon.after_backward()
    mon.after_update(1, grad_norm=torch.tensor(math.inf))
    info = mon.attribute(1)
    assert info == {"module": "2", "kind": "gradient", "modules": ["0", "2"], "step": 1}
    (rec,) = mon.collect()
    assert rec.absmax.shape == (3, 3) and rec.counts[0, KINDS.index("grad"), 2] > 0
    mon.remove()


def test_streaks_between_logged_steps_are_reported_once():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    bad_steps = {2, 3, 6}
    state = {"step": 0}
    # Registered before the monitor's own hook, so the monitor sees the planted output.
    model[1].register_forward_hook(lambda m, a, out: out * math.inf if state["step"] in bad_steps
                                   else None)
    mon = HeadroomMonitor(model, every=0)
    for step in range(1, 9):
        state["step"] = step
        mon.begin_step(step)
        model(torch.randn(2, 4)).sum()
        mon.after_backward()
        mon.after_update(step)
    assert mon.attribute(3) == {"module": "1", "kind": "activation", "modules": ["1", "2"],
                                "step": 2}
    assert mon.attribute(4) is None
    # Nothing logged steps 5..8: the streak that began at 6 is still owed an event.
    assert [i["step"] for i in mon.unreported(8)] == [6]
    assert mon.unreported(8) == []


def test_bench_quick_returns_its_keys():
    from moe_studio.bench.precision import run

    out = run(json_out=True, quick=True)
    for k in ("step_s_headroom_off", "step_s_headroom_on", "headroom_overhead", "loss_curve",
              "budgets", "device"):
        assert k in out
    assert out["loss_curve"]["max_abs_diff"] == 0.0 and out["loss_curve"]["identical"]
