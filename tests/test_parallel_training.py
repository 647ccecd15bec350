"""Data- and expert-parallel training on 2 gloo ranks equals one process training the
global batch: the stores of both read the same losses, loads and drops."""
from __future__ import annotations

import numpy as np
import pytest

from moe_studio.config import save
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run

from test_parallel import torchrun
from tiny import tiny_config

STEPS = 8
CONFIGS = {
    "dense": dict(model__moe_layers="none"),
    "moe_dp": dict(moe__capacity_factor=0.0),
    "moe_ep": dict(parallel__expert=2, moe__capacity_factor=1.0, moe__capacity_priority="token_order"),
    "auxfree_ep": dict(parallel__expert=2, moe__router="aux_free", moe__top_k=1),
}


def config(name: str, batch: int, **over):
    return tiny_config(name=name, train__steps=STEPS, data__batch_size=batch, train__eval_every=4,
                       train__snapshot_every=4, **over)


def one_process(tmp_path, name: str, over: dict):
    over = {k: v for k, v in over.items() if not k.startswith("parallel__")}
    t = Trainer(config(name, 8, **over), runs_dir=tmp_path / "one" / name)
    while not t.done:
        t.step()
    t.close("finished")
    return open_run(t.run_dir)


def series(run, name: str, member: int = 0):
    t = run.scalars([name], member=member)
    return t.set_index("step")["value"]


def only_run(folder):
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return open_run(runs[0])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    paths = []
    for name, over in CONFIGS.items():
        p = tmp / f"{name}.toml"
        save(config(name, 4, **over), p)
        paths.append(str(p))
    out = torchrun("train_check.py", str(tmp / "runs"), *paths)
    assert all(f"trained {n} rank {r}" in out for n in CONFIGS for r in (0, 1)), out
    return tmp / "runs"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_train_as_one_process(two_ranks, tmp_path, name):
    dist_run = only_run(two_ranks / name)
    ref = one_process(tmp_path, name, CONFIGS[name])
    assert dist_run.status == "finished"
    for col in ("train/loss", "train/aux_loss", "train/z_loss", "train/grad_norm", "val/loss"):
        x, y = series(dist_run, col), series(ref, col)
        assert list(x.index) == list(y.index), col
        np.testing.assert_allclose(x.values, y.values, rtol=2e-4, atol=1e-5, err_msg=col)
    if name != "dense":
        for tensor in ("moe/tokens_per_expert", "moe/dropped_per_expert"):
            _, tx = dist_run.tensor_series(tensor)
            _, ty = ref.tensor_series(tensor)
            np.testing.assert_array_equal(tx, ty, err_msg=tensor)
        if CONFIGS[name].get("moe__capacity_factor", 0) > 0:
            assert ref.tensor_series("moe/dropped_per_expert")[1].sum() > 0, "no drops to compare"
        for step in dist_run.snapshot_steps("routing/probe"):
            px, py = dist_run.snapshot("routing/probe", step), ref.snapshot("routing/probe", step)
            np.testing.assert_array_equal(px.arrays["topk_idx"], py.arrays["topk_idx"])
            np.testing.assert_allclose(px.arrays["probs"].astype(float),
                                       py.arrays["probs"].astype(float), atol=2e-3)
        h_steps, _, hx = dist_run.histogram_series("router_probs/L0")
        _, _, hy = ref.histogram_series("router_probs/L0")
        np.testing.assert_array_equal(hx, hy)
    meta = dist_run.meta
    assert meta["world_size"] == 2
    assert meta["parallel_expert"] == CONFIGS[name].get("parallel__expert", 1)
    for r in (0, 1):
        tps = series(dist_run, f"rank/{r}/tokens_per_s", member=-1)
        assert len(tps) == STEPS and (tps > 0).all()
    np.testing.assert_allclose(series(dist_run, "tokens", member=-1).values,
                               series(ref, "tokens", member=-1).values)
