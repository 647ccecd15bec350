"""The trainer end to end on tiny configs: records in the store, determinism, checkpoint
round trip, every router trains, evaluation, failure handling, the CLI."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_studio.config import ExperimentConfig, dumps
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run
from tiny import tiny_config


def tiny(**over) -> ExperimentConfig:
    return tiny_config("tiny", **over)


def run_losses(cfg, tmp_path, steps=None):
    tr = Trainer(cfg, runs_dir=tmp_path)
    losses = []
    for _ in range(steps or cfg.train.steps):
        losses.append(tr.step().loss)
    return tr, losses


def test_records_reach_the_store(tmp_path):
    tr, _ = run_losses(tiny(), tmp_path)
    tr.close()
    r = open_run(tr.run_dir)
    assert r.status == "finished"
    df = r.scalars()
    names = set(df["name"])
    for n in ["train/loss", "train/aux_loss", "train/z_loss", "lr", "tokens_per_s", "val/loss",
              "moe/L0/entropy", "moe/L1/top1_prob", "moe/L1/load_cv", "moe/L0/dropped_frac"]:
        assert n in names, n
    loss = df[(df.name == "train/loss") & (df.member == 0)]
    assert list(loss.step) == list(range(1, 13))
    # tokens per expert: every token makes top_k choices
    step, tpe = r.tensor("moe/tokens_per_expert", step=6)
    assert tpe.shape == (2, 4)
    assert np.allclose(tpe.sum(axis=1), 4 * 16 * 2)
    snap = r.snapshot("routing/probe", step=12)
    assert snap is not None
    n = len(snap.arrays["tokens"])
    assert snap.arrays["topk_idx"].shape == (2, n, 2)
    assert snap.arrays["probs"].shape == (2, n, 4)
    assert np.allclose(snap.arrays["probs"].astype(np.float32).sum(-1), 1.0, atol=1e-2)
    h = r.histogram("router_probs/L0")
    assert h is not None and h[2].sum() == 4 * 16 * 4
    assert (tr.run_dir / "config.toml").read_text() == dumps(tr.config)
    assert list(tr.run_dir.glob("checkpoint-*.pt"))
    r.close()


def test_deterministic_on_cpu(tmp_path):
    ta, a = run_losses(tiny(moe__router="noisy_topk", moe__jitter=0.05), tmp_path / "a")
    tb, b = run_losses(tiny(moe__router="noisy_topk", moe__jitter=0.05), tmp_path / "b")
    ta.close()
    tb.close()
    assert a == b


def test_checkpoint_round_trip_continues_identically(tmp_path):
    cfg = tiny(moe__router="noisy_topk", train__steps=10)
    full, losses_full = run_losses(cfg, tmp_path / "full")
    full.close()
    half, _ = run_losses(cfg, tmp_path / "half", steps=5)
    ckpt = half.save_checkpoint()
    half.close("stopped")
    # checkpoints are plain tensors and containers: loadable without pickle code
    torch.load(ckpt, weights_only=True)
    resumed = Trainer(cfg, runs_dir=tmp_path / "resumed")
    resumed.load_checkpoint(ckpt)
    assert resumed.step_count == 5
    rest = [resumed.step().loss for _ in range(5)]
    resumed.close()
    assert rest == pytest.approx(losses_full[5:], rel=0, abs=1e-6)


@pytest.mark.parametrize("router", ["topk", "noisy_topk", "soft", "aux_free"])
def test_every_router_trains(tmp_path, router):
    over = dict(moe__router=router, train__steps=30, train__lr=1e-2, train__eval_every=30)
    if router == "aux_free":
        over["moe__aux_loss_coef"] = 0.0
    tr, losses = run_losses(tiny(**over), tmp_path)
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    if router == "aux_free":
        r = open_run(tr.run_dir)
        _, bias = r.tensor("moe/bias")
        assert bias.shape == (2, 4) and np.abs(bias).sum() > 0
        r.close()
    tr.close()


def test_dense_and_ensemble(tmp_path):
    tr, _ = run_losses(tiny(model__moe_layers="none", ensemble__members=2,
                            ensemble__method="bagging"), tmp_path)
    tr.close()
    r = open_run(tr.run_dir)
    val = r.scalars(["val/loss"])
    assert set(val.member) == {-1, 0, 1}
    assert not any(n.startswith("moe/") for n in r.scalar_names())
    r.close()


def test_capacity_drops_are_recorded(tmp_path):
    tr, _ = run_losses(tiny(moe__top_k=1, moe__capacity_factor=0.5, train__steps=3), tmp_path)
    tr.close()
    r = open_run(tr.run_dir)
    d = r.scalars(["moe/L0/dropped_frac"])
    # capacity 0.5 x fair share: at least half of the choices must be dropped
    assert (d.value >= 0.5 - 1e-6).all()
    _, dpe = r.tensor("moe/dropped_per_expert")
    _, tpe = r.tensor("moe/tokens_per_expert")
    assert np.allclose(dpe.sum(1) / tpe.sum(1), d[d.step == d.step.max()].value.iloc[0])
    r.close()


def test_failure_keeps_data_and_marks_failed(tmp_path):
    tr, _ = run_losses(tiny(train__steps=5), tmp_path, steps=3)
    tr.close("failed", error="Traceback: boom")
    r = open_run(tr.run_dir)
    assert r.status == "failed" and "boom" in (r.error or "")
    assert r.scalars(["train/loss"]).step.max() == 3
    r.close()


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "moe_studio", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_rejects_bad_config_with_actionable_message(tmp_path):
    p = _cli("train", "--set", "moe.top_k=9", "--set", "moe.n_experts=2", "--out", str(tmp_path),
             cwd=tmp_path)
    assert p.returncode == 2
    assert "moe.top_k (9) must be <= moe.n_experts (2)" in p.stderr
    p = _cli("train", "--set", "data.corpus=" + str(tmp_path / "missing.txt"), "--out",
             str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "missing.txt" in p.stderr
    assert not any(tmp_path.glob("*/run.sqlite"))


def test_cli_trains_from_a_config(tmp_path):
    cfg = tiny(train__steps=4, train__eval_every=2)
    (tmp_path / "c.toml").write_text(dumps(cfg))
    p = _cli("train", "c.toml", "--out", "out", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "finished: 4 steps" in p.stdout
    runs = list((tmp_path / "out").glob("*/run.sqlite"))
    assert len(runs) == 1


TINY_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.mark.skipif(not TINY_SHAKESPEARE.exists(), reason="../shared/data/tinyshakespeare.txt absent")
def test_tinyshakespeare_trains_from_a_toml_config(tmp_path):
    """The issue's acceptance case: a user corpus named in a TOML file trains, and the
    validation loss falls."""
    from moe_studio.config import load
    cfg = tiny(train__steps=40, train__eval_every=20, train__eval_batches=4, train__lr=3e-3,
               data__corpus=str(TINY_SHAKESPEARE), data__batch_size=8, data__context=32)
    (tmp_path / "shakespeare.toml").write_text(dumps(cfg))
    tr = Trainer(load(tmp_path / "shakespeare.toml"), tmp_path / "runs")
    while not tr.done:
        tr.step()
    tr.close("finished")
    with open_run(tr.run_dir) as r:
        assert r.meta.get("domain_names", ["tinyshakespeare"]) == ["tinyshakespeare"]
        val = r.scalars(["val/loss"]).sort_values("step")
    assert list(val["step"]) == [20, 40], val
    first = float(val["value"].iloc[0])
    assert first < math.log(256)          # it learnt something by the first evaluation
    assert float(val["value"].iloc[-1]) < first   # and kept learning
