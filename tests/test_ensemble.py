"""Ensemble training end to end on tiny configs: batched members = the per-member loop,
bagging resamples, snapshot cycles, boosting weights, the records the dashboard reads,
the MoE-vs-ensemble presets and the benchmark's keys."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moe_studio.config import ExperimentConfig, presets, validate
from moe_studio.engine.boosting import BOOST_BETA, boosting_weights
from moe_studio.engine.schedule import member_at, segment_starts
from moe_studio.engine.wide import WideMembers
from moe_studio.engine.params import count_params
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run
from tiny import tiny_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**over) -> ExperimentConfig:
    base = dict(model__moe_layers="none", ensemble__members=3, train__steps=6,
                train__warmup_steps=1, train__snapshot_every=100)
    return tiny_config("tiny-ens", **{**base, **over})


def train(cfg, runs, batched=True, steps=None):
    tr = Trainer(cfg, runs_dir=runs)
    tr.ensemble.batched = batched and tr.ensemble.wide is not None
    calls = [0]
    if tr.ensemble.wide is not None:
        orig = tr.ensemble.wide.loss

        def counted(*a):
            calls[0] += 1
            return orig(*a)
        tr.ensemble.wide.loss = counted
    for _ in range(steps or cfg.train.steps):
        tr.step()
    return tr, calls[0]


def series(run_dir, name):
    r = open_run(run_dir)
    df = r.scalars([name])
    r.close()
    return {(int(s), int(m)): v for s, m, v in zip(df.step, df.member, df.value)}


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """A finished 3-member dense run with batched members (shared by several tests)."""
    tr, calls = train(tiny(), tmp_path_factory.mktemp("seeds"))
    tr.close()
    return tr, calls


# ------------------------------------------------------------------ batching
@pytest.mark.parametrize("over", [
    {},                                                             # dense, seeds
    {"model__moe_layers": "1", "ensemble__method": "bagging", "ensemble__members": 2},  # MoE block
])
def test_batched_members_match_the_per_member_loop(tmp_path, seeds_run, over):
    cfg = tiny(**over)
    if over:
        a, calls = train(cfg, tmp_path / "batched")
        a.close()
    else:
        a, calls = seeds_run
    assert a.ensemble.wide is not None and a.ensemble.batch_reason == ""
    # step 1 and the precision monitor's measuring steps run the loop; the rest is batched
    assert calls == sum(1 for s in range(1, cfg.train.steps) if (s + 1) % 10 != 0)
    b, _ = train(cfg, tmp_path / "loop", batched=False)
    b.close()
    for name in ("train/loss", "train/grad_norm", "train/aux_loss", "val/loss"):
        la, lb = series(a.run_dir, name), series(b.run_dir, name)
        assert la.keys() == lb.keys() and la
        for k in la:
            assert la[k] == pytest.approx(lb[k], rel=1e-4, abs=1e-5), (name, k)


def test_wide_forward_equals_each_member():
    cfg = validate(tiny(model__moe_layers="0"))
    from moe_studio.engine.model import MoEGPT
    models = []
    for m in range(3):
        torch.manual_seed(m)
        models.append(MoEGPT(cfg.model, cfg.moe, context=16))
    x = torch.randint(0, 256, (3, 2, 16))
    y = torch.randint(0, 256, (3, 2, 16))
    y[1, 0, :4] = -1                              # ignored targets
    wide = WideMembers(models).loss(x, y)
    for m in range(3):
        assert float(wide[m].detach()) == pytest.approx(float(models[m](x[m], y[m])[1].detach()), abs=1e-5)
    assert WideMembers.supports(models[:1]) is not None


# ------------------------------------------------------------------ bagging
def test_bagging_resamples_differ_between_members_and_reproduce(tmp_path):
    def starts(seed):
        tr = Trainer(tiny(ensemble__method="bagging", train__seed=seed), runs_dir=tmp_path)
        s = [smp.starts.copy() for smp in tr.samplers]
        tr.close("stopped")
        return s
    a, b, c = starts(0), starts(0), starts(1)
    n = len(a[0])
    for i in range(3):
        assert np.array_equal(a[i], b[i])                       # same seed: same resample
        assert not np.array_equal(a[i], c[i])                   # other seed: another
        assert len(a[i]) == n and np.all(np.diff(a[i]) >= 0)
        # a bootstrap resample leaves out about 1/e of the windows
        assert 0.3 < 1 - len(np.unique(a[i])) / n < 0.45
        for k in range(i + 1, 3):
            assert not np.array_equal(a[i], a[k])              # members differ


def test_seeds_members_draw_from_every_window(seeds_run):
    tr, _ = seeds_run
    assert all(len(np.unique(s.starts)) == len(s.starts) for s in tr.samplers)


# ------------------------------------------------------------------ snapshot
def test_snapshot_cycles_restart_the_lr_and_keep_snapshots(tmp_path):
    cfg = tiny(ensemble__method="snapshot", train__steps=12, train__eval_every=6)
    tr = Trainer(cfg, runs_dir=tmp_path)
    assert tr.ensemble.starts == [0, 4, 8, 12] and not tr.ensemble.batched
    for _ in range(4):
        tr.step()
    snap0 = torch.load(tr.run_dir / "snapshot-00.pt", weights_only=True)
    assert snap0["member"] == 0 and snap0["step"] == 4
    for k, v in tr.models[0].state_dict().items():
        assert torch.equal(snap0["model"][k], v)
    tr.step()                                          # first step of cycle 1
    # member 1 continued member 0's optimizer (4 steps + 1), not a fresh one
    st = next(iter(tr.optimizers[1].state.values()))
    assert int(st["step"]) == 5
    for _ in range(7):
        tr.step()
    tr.close()
    assert sorted(p.name for p in tr.run_dir.glob("snapshot-*.pt")) == \
        ["snapshot-00.pt", "snapshot-01.pt", "snapshot-02.pt"]
    lr = series(tr.run_dir, "lr")
    lr = [lr[(s, -1)] for s in range(1, 13)]
    for first in (4, 8):                               # 0-based first step of cycles 1, 2
        assert lr[first] == pytest.approx(cfg.train.lr) and lr[first] > lr[first - 1]
        assert lr[first - 1] == pytest.approx(cfg.train.min_lr)
    val = series(tr.run_dir, "val/loss")
    assert {m for s, m in val if s == 6} == {-1, 0, 1}          # snapshot 0 + member in training
    assert {m for s, m in val if s == 12} == {-1, 0, 1, 2}
    assert val[(6, 0)] == val[(12, 0)]                          # snapshot 0 is frozen
    n = series(tr.run_dir, "ens/n_members")
    assert n[(6, -1)] == 2 and n[(12, -1)] == 3
    tl = series(tr.run_dir, "train/loss")
    assert [m for s, m in sorted(tl)] == [member_at(s - 1, tr.ensemble.starts) for s, _ in sorted(tl)]


# ------------------------------------------------------------------ boosting
def test_boosting_weights_formula():
    loss = torch.tensor([0.1, 2.0, 0.5, 4.0, 1.0])
    w = boosting_weights(loss)
    ref = np.exp(BOOST_BETA * loss.numpy())
    assert np.allclose(w.numpy(), ref / ref.mean(), atol=1e-6)
    assert float(w.mean()) == pytest.approx(1.0)
    order = torch.argsort(loss)
    assert torch.all(torch.diff(w[order]) > 0)                 # monotone in the loss
    assert segment_starts(10, 3) == [0, 3, 7, 10]


def test_boosting_weights_follow_the_ensembles_loss(tmp_path):
    cfg = tiny(ensemble__method="boosting", ensemble__members=2, train__steps=8,
               train__eval_every=8, data__batch_size=8, train__warmup_steps=2)
    tr = Trainer(cfg, runs_dir=tmp_path)
    assert tr.ensemble.starts == [0, 4, 8]
    for _ in range(4):
        tr.step()
    assert tr.ensemble.last_boost is None                     # member 0 is not weighted
    params0 = {k: v.clone() for k, v in tr.models[0].state_dict().items()}
    tr.step()
    lb = tr.ensemble.last_boost
    assert lb["member"] == 1 and lb["step"] == 5
    # the ensemble so far (member 0 alone), recomputed here
    m0 = tr.models[0]
    m0.eval()
    with torch.no_grad():
        lp = F.log_softmax(m0(lb["x"])[0].float(), -1)
    m0.train()
    ens_loss = -lp.gather(-1, lb["y"][..., None])[..., 0]
    assert torch.allclose(lb["ens_loss"], ens_loss, atol=1e-5)
    ref = torch.exp(BOOST_BETA * ens_loss)
    assert torch.allclose(lb["weights"], ref / ref.mean(), atol=1e-4)
    wrong = lp.argmax(-1) != lb["y"]
    assert wrong.any() and (~wrong).any()
    assert lb["weights"][wrong].mean() > lb["weights"][~wrong].mean()
    for k, v in tr.models[0].state_dict().items():            # member 0 no longer trains
        assert torch.equal(params0[k], v)
    for _ in range(3):
        tr.step()
    tr.close()
    corr = series(tr.run_dir, "boost/weight_loss_corr")
    assert set(corr) == {(s, 1) for s in range(5, 9)} and all(v > 0.5 for v in corr.values())
    ess = series(tr.run_dir, "boost/weight_ess")
    assert all(0 < v <= 1 for v in ess.values())
    # member 1 backpropagates the weighted loss; member 0 the plain one
    tl, tt = series(tr.run_dir, "train/loss"), series(tr.run_dir, "train/total_loss")
    assert all(tl[k] == pytest.approx(tt[k], abs=1e-6) for k in tl if k[1] == 0)
    assert any(abs(tl[k] - tt[k]) > 1e-4 for k in tl if k[1] == 1)
    lr = series(tr.run_dir, "lr")
    assert lr[(5, -1)] < lr[(6, -1)]                           # member 1 warms up afresh
    r = open_run(tr.run_dir)
    edges, counts = r.histogram("boost/weights", member=1)[1:3]
    assert counts.sum() == 8 * 16
    r.close()


# ------------------------------------------------------------------ records
def test_records_reach_the_store(seeds_run):
    tr, _ = seeds_run
    r = open_run(tr.run_dir)
    names = set(r.scalar_names())
    rules = ("mean_prob", "mean_logit", "vote", "loss_weighted", "stacking")
    for n in [f"ens/{rule}/{k}" for rule in rules for k in ("val_loss", "val_acc")] + [
            "ens/gain", "ens/disagreement", "ens/q_statistic", "ens/correlation",
            "ens/double_fault", "ens/kappa_pairwise", "ens/kappa_interrater",
            "ens/js_divergence", "ens/entropy_total", "ens/entropy_expected", "ens/mutual_info",
            "ens/member/val_loss", "ens/member/val_acc", "ens/n_members", "ens/n_tokens",
            "ens/n_fit_tokens", "val/loss", "val/acc"]:
        assert n in names, n
    for n in ("ens/agreement", "ens/pair_q", "ens/pair_js", "ens/pair_kappa"):
        step, mat = r.tensor(n, member=-1)
        assert step == 6 and mat.shape == (3, 3)
    assert r.tensor("ens/stacking/weights", member=-1)[1].shape == (3,)
    df = r.scalars(member=-1)
    last = {n: float(df[(df.name == n) & (df.step == 6)].value.iloc[0]) for n in set(df.name)}
    mem = r.scalars(["ens/member/val_loss"])
    assert sorted(mem.member) == [0, 1, 2]
    assert last["ens/gain"] == pytest.approx(mem.value.mean() - last["ens/mean_prob/val_loss"], abs=1e-9)
    total = tr.config.data.batch_size * tr.config.train.eval_batches * tr.config.data.context
    assert last["ens/n_tokens"] + last["ens/n_fit_tokens"] == total
    assert last["ens/n_fit_tokens"] % tr.config.data.context == 0     # split at a window boundary
    snap = r.snapshot("ensemble/probe", member=-1)
    n = len(snap.arrays["tokens"])
    assert snap.arrays["top1"].shape == (3, n) and snap.arrays["mutual_info"].shape == (n,)
    assert (snap.arrays["mutual_info"] >= 0).all() and snap.meta["members"] == [0, 1, 2]
    r.close()
    # member -1 val/loss: mean of the members' probabilities over every validation token
    nll, count = 0.0, 0
    for m in tr.models:
        m.eval()
    with torch.no_grad():
        for x, y in tr.val_batches:
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            lps = torch.stack([F.log_softmax(m(x)[0].float(), -1) for m in tr.models])
            ens = torch.logsumexp(lps, 0) - math.log(3)
            nll -= float(ens.gather(-1, y[..., None]).sum())
            count += y.numel()
    assert series(tr.run_dir, "val/loss")[(6, -1)] == pytest.approx(nll / count, abs=1e-6)


# ------------------------------------------------------------------ presets & bench
def test_moe_vs_ensemble_presets_match_in_parameters():
    moe, dense = validate(presets.moe_vs_ensemble_moe()), validate(presets.moe_vs_ensemble_dense())
    pm, pd = count_params(moe), count_params(dense)
    assert moe.moe.n_experts == dense.ensemble.members == 4
    assert dense.model.moe_layers == "none"
    assert abs(pd.run_total - pm.run_total) / pm.run_total < 0.01
    assert (pm.total, pd.total, pd.run_total) == (1_356_032, 339_648, 1_358_592)
    assert {presets.moe_vs_ensemble_moe, presets.moe_vs_ensemble_dense} <= set(presets.PRESETS.values())


def test_bench_quick_keys():
    from moe_studio.bench.ensemble import run
    out = run(json_out=True, quick=True)
    for k in ("step_ms", "step_cpu_ms", "ensemble_vs_single", "loop_vs_single", "metrics_ms",
              "metrics_cpu_ms", "rules_ms", "budgets", "load_avg"):
        assert k in out, k
    assert set(out["step_ms"]) == {"single", "batched", "loop"}
    assert out["ensemble_vs_single"] > 0 and out["metrics_ms"] > 0


def test_batched_step_reports_every_module_to_the_precision_monitor(tmp_path, monkeypatch):
    """The batched forward calls no nn.Linear / nn.Embedding of the members, so their
    forward hooks never fire; it reports each module's output to the member's monitor
    itself. A batched step must show each monitor the same modules, with the same
    values, as the per-member loop (else a NaN made in attention would be blamed on a
    gradient)."""
    from moe_studio.engine.headroom import HeadroomMonitor

    seen: dict[int, list] = {}
    orig = HeadroomMonitor._on_forward

    def spy(self, i, module, args, output, *rest):
        t = self.targets[i].output(output)
        if self._armed and t is not None:
            seen.setdefault(id(self), []).append((i, float(t.detach().min()), float(t.detach().max())))
        return orig(self, i, module, args, output, *rest)

    monkeypatch.setattr(HeadroomMonitor, "_on_forward", spy)
    cfg = tiny(model__moe_layers="1", ensemble__method="bagging", ensemble__members=2,
               train__steps=2, precision__headroom=True)
    per_step = {}
    for batched in (True, False):
        tr = Trainer(cfg, runs_dir=tmp_path / str(batched))
        tr.ensemble.batched = batched
        tr.step()                                   # step 1 always runs the loop
        seen.clear()
        tr.step()                                   # batched when asked
        per_step[batched] = [sorted(seen[id(mon)]) for mon in tr.monitors]
        n_targets = len(tr.monitors[0].targets)
        tr.close("stopped")
    for m in range(2):
        got, want = per_step[True][m], per_step[False][m]
        assert [i for i, *_ in got] == [i for i, *_ in want]
        assert len({i for i, *_ in got}) == n_targets        # every module, once
        for (i, lo, hi), (_, lo2, hi2) in zip(got, want):
            assert lo == pytest.approx(lo2, rel=1e-4, abs=1e-5), i
            assert hi == pytest.approx(hi2, rel=1e-4, abs=1e-5), i


@pytest.mark.parametrize("batched", [True, False])
def test_a_nan_in_one_member_is_blamed_on_that_member_and_its_first_module(tmp_path, batched):
    """The batched forward checks each output once over all members (on the CPU) and
    only looks at the members' slices when something is not finite: a NaN made in
    member 1's attention must flag member 1's attention, and nothing of member 0."""
    cfg = tiny(ensemble__method="bagging", ensemble__members=2, train__steps=4,
               precision__headroom=True, precision__headroom_every=100)
    tr = Trainer(cfg, runs_dir=tmp_path)
    tr.ensemble.batched = batched
    try:
        tr.step()                                    # step 1 always runs the loop
        calls = [0]
        orig = tr.ensemble.wide.loss
        tr.ensemble.wide.loss = lambda *a: (calls.__setitem__(0, calls[0] + 1), orig(*a))[1]
        with torch.no_grad():
            tr.models[1].blocks[1].attn.out_proj.weight[0, 0] = float("nan")
        tr.step()
        assert calls[0] == (1 if batched else 0)
    finally:
        tr.close("stopped")
    with open_run(tr.run_dir) as r:
        ev = r.events(["nonfinite"]).to_dict("records")
    assert [(e["step"], e["member"]) for e in ev] == [(2, 1)]
    data = ev[0]["data"]
    assert (data["module"], data["kind"]) == ("blocks.1.attn.out_proj", "activation")
    assert "blocks.0.attn.qkv" not in data["modules"]    # before the NaN: finite


def test_clip_grad_norms_matches_torch_clip_per_member():
    """One pass over several members' gradients equals clip_grad_norm_ run on each:
    the same norms before clipping and the same clipped gradients; members below the
    limit are left alone, parameters without a gradient are skipped."""
    from moe_studio.engine.trainer import clip_grad_norms

    g = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (5,), (3, 3, 2)]
    members = []
    for scale in (0.01, 1.0, 30.0):
        ps = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g) * scale
        members.append(ps)
    members[1].append(torch.nn.Parameter(torch.zeros(4)))          # no gradient
    ref = [[p.grad.clone() for p in ps if p.grad is not None] for ps in members]
    ref_norms = []
    for grads in ref:
        holders = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
        for h, x in zip(holders, grads):
            h.grad = x
        ref_norms.append(float(torch.nn.utils.clip_grad_norm_(holders, 1.5)))
    norms = clip_grad_norms(members, 1.5)
    assert [float(n) for n in norms] == pytest.approx(ref_norms, rel=1e-6)
    assert ref_norms[0] < 1.5 < ref_norms[2]
    for ps, grads in zip(members, ref):
        for p, want in zip([p for p in ps if p.grad is not None], grads):
            assert torch.allclose(p.grad, want, rtol=1e-6, atol=1e-9)
    # max_norm <= 0 measures without clipping
    before = [p.grad.clone() for p in members[2]]
    again = clip_grad_norms(members, 0.0)
    assert float(again[2]) == pytest.approx(1.5, rel=1e-5)
    assert all(torch.equal(p.grad, b) for p, b in zip(members[2], before))
    assert [float(n) for n in clip_grad_norms([[torch.nn.Parameter(torch.zeros(2))]], 1.0)] == [0.0]
