"""An ensemble spread over 2 gloo ranks (one or two members on each) trains and evaluates
as the same ensemble in one process: the stores of both hold the same series of every member,
the same ensemble validation (combined loss, every rule, agreement) and probes, and the
final checkpoint holds both members, as one process writes it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_studio.config import save
from moe_studio.engine.safe_load import load_weights_only
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run

from test_parallel import torchrun
from test_parallel_training import only_run
from tiny import tiny_config

STEPS = 6
# name: (ensemble.method, ensemble.members); 4 members: each rank trains two, batched
# into one wide model as one process batches its members
CASES = {"seeds": ("seeds", 2), "bagging": ("bagging", 2), "seeds4": ("seeds", 4)}
# what a clock measures, not what was trained
TIMING = {"tokens_per_s", "elapsed_s", "cost/flops_per_s"}


def config(name: str):
    method, members = CASES[name]
    return tiny_config(name=name, ensemble__members=members, ensemble__method=method,
                       train__steps=STEPS, train__eval_every=3, train__snapshot_every=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(spread over 2 ranks, one process) runs of each case."""
    tmp = tmp_path_factory.mktemp("members")
    paths = []
    for name in CASES:
        p = tmp / f"{name}.toml"
        save(config(name), p)
        paths.append(str(p))
    out = torchrun("train_check.py", str(tmp / "ranks"), *paths)
    assert all(f"trained {n} rank {r}" in out for n in CASES for r in (0, 1)), out
    ones = {}
    for name in CASES:
        t = Trainer(config(name), runs_dir=tmp / "one" / name)
        while not t.done:
            t.step()
        t.close("finished")
        ones[name] = t.run_dir
    return {n: (only_run(tmp / "ranks" / n), open_run(ones[n])) for n in CASES}


def by_name(run, member: int) -> dict[str, np.ndarray]:
    df = run.scalars(member=member)
    return {name: g.sort_values("step")[["step", "value"]].to_numpy()
            for name, g in df.groupby("name")}


@pytest.mark.parametrize("name", list(CASES))
def test_every_member_and_the_ensemble_read_as_one_process(runs, name):
    spread, one = runs[name]
    M = CASES[name][1]
    assert spread.status == "finished"
    meta = spread.meta
    assert (meta["world_size"], meta["parallel_members"]) == (2, 2)
    assert f"members {M} spread {M // 2} per rank" in meta["parallel_layout"]
    for member in [*range(M), -1]:
        got, want = by_name(spread, member), by_name(one, member)
        names = {n for n in want if n not in TIMING}
        assert names <= set(got), sorted(names - set(got))
        if member >= 0:
            assert any(n.startswith("moe/L") for n in names) and "train/loss" in names
        else:
            assert {"val/loss", "ens/disagreement", "ens/mutual_info", "ens/mean_prob/val_loss",
                    "ens/stacking/val_loss"} <= names
        for n in sorted(names):
            np.testing.assert_array_equal(got[n][:, 0], want[n][:, 0], err_msg=f"{n} steps")
            np.testing.assert_allclose(got[n][:, 1], want[n][:, 1], rtol=2e-4, atol=1e-5,
                                       err_msg=f"{n} member {member}")
    # the run's throughput is every rank's; each rank's is recorded too
    for r in (0, 1):
        assert (by_name(spread, -1)[f"rank/{r}/tokens_per_s"][:, 1] > 0).all()
    for name in one.tensor_names():
        for member in [*range(M), -1]:
            ws, wv = one.tensor_series(name, member=member)
            gs, gv = spread.tensor_series(name, member=member)
            np.testing.assert_array_equal(gs, ws, err_msg=name)
            if len(ws):
                # the stacking and loss-weighted rules' weights are fitted by an
                # optimizer on a flat optimum: 1e-6 in the inputs (one process batches
                # its members into one wide model) moves them by up to ~3e-4
                fitted = name.endswith(("/weights", "/temperature"))
                np.testing.assert_allclose(gv, wv, rtol=2e-4, atol=2e-3 if fitted else 1e-4,
                                           err_msg=name)
    for member in range(M):
        for step in one.snapshot_steps("routing/probe", member=member):
            a = spread.snapshot("routing/probe", step, member=member)
            b = one.snapshot("routing/probe", step, member=member)
            np.testing.assert_array_equal(a.arrays["topk_idx"], b.arrays["topk_idx"])
        _, _, hs = spread.histogram_series("router_probs/L0", member=member)
        _, _, ho = one.histogram_series("router_probs/L0", member=member)
        assert len(ho) and np.abs(hs - ho).sum() <= 2   # a probability may sit on a bin edge
    steps = one.snapshot_steps("ensemble/probe", member=-1)
    assert len(steps) and list(spread.snapshot_steps("ensemble/probe", member=-1)) == list(steps)
    for step in steps:
        a = spread.snapshot("ensemble/probe", step, member=-1).arrays
        b = one.snapshot("ensemble/probe", step, member=-1).arrays
        np.testing.assert_array_equal(a["top1"], b["top1"])
        np.testing.assert_allclose(a["mutual_info"], b["mutual_info"], atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_the_checkpoint_holds_every_member(runs, name):
    spread, one = runs[name]
    ckpt = f"checkpoint-{STEPS:07d}.pt"
    a = load_weights_only(spread.path / ckpt, map_location="cpu")
    b = load_weights_only(one.path / ckpt, map_location="cpu")
    assert len(a["models"]) == len(b["models"]) == CASES[name][1]
    assert a["samplers"] == b["samplers"]
    for ma, mb in zip(a["models"], b["models"]):
        assert ma.keys() == mb.keys()
        for k in ma:
            torch.testing.assert_close(ma[k], mb[k], rtol=1e-4, atol=1e-5, msg=k)
