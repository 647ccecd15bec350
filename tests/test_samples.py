"""The recorded runs that ship in sample_runs/ open, are complete, and can be regenerated."""
import numpy as np
import pytest

from moe_studio import samples
from moe_studio.paths import sample_runs_dir
from moe_studio.store import list_runs, open_run

SHIPPED = sorted(p for p in sample_runs_dir().iterdir() if (p / "run.sqlite").exists()) \
    if sample_runs_dir().exists() else []


def test_samples_ship_and_fit_the_budget():
    names = {p.name for p in SHIPPED}
    assert {"dense-baseline", "moe-top2"} <= names
    total = sum(f.stat().st_size for p in SHIPPED for f in p.rglob("*") if f.is_file())
    assert total <= 25 * 2 ** 20, f"sample runs take {total / 2**20:.1f} MB (budget 25 MB)"
    # nothing but finished runs, and no stray files a crash could leave behind
    for p in SHIPPED:
        assert not list(p.glob("*-wal")) and not list(p.glob("*.tmp")), p


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_sample_opens_complete(path):
    r = open_run(path)
    try:
        assert r.status == "finished"
        steps = r.config["train"]["steps"]
        assert r.last_step() == steps
        val = r.scalars(["val/loss"])
        assert len(val) >= 5
        first, last = val.sort_values("step").value.iloc[[0, -1]]
        assert last < first - 0.3, "validation loss should fall clearly over a sample run"
        if r.config["model"]["moe_layers"] != "none":
            snap = r.snapshot("routing/probe")
            assert snap is not None and snap.step > steps - r.config["train"]["snapshot_every"]
            _, tpe = r.tensor("moe/tokens_per_expert")
            assert tpe.shape[1] == r.config["moe"]["n_experts"] and np.all(tpe >= 0)
    finally:
        r.close()


def test_runs_listing_includes_samples():
    infos = list_runs(sample_runs_dir())
    assert {i.run_id for i in infos} and all(i.error is None for i in infos)


def test_regenerate_a_sample_at_small_scale(tmp_path):
    dest = samples.generate("moe-top2", tmp_path, scale=0.01, log=lambda *_: None)
    assert dest == tmp_path / "moe-top2"
    r = open_run(dest)
    try:
        assert r.status == "finished" and r.last_step() == 15
        assert r.snapshot("routing/probe") is not None
    finally:
        r.close()
    assert (dest / "weights.safetensors").exists()
    assert not list(dest.glob("checkpoint-*.pt"))
    _assert_cost_records(dest)


def _assert_cost_records(path):
    """The run carries what Compare's cost columns read, and its training FLOPs are
    steps x tokens per step x the recorded FLOPs per token x the members trained."""
    from moe_studio.store.compare import by_name, summary_row
    r = open_run(path)
    try:
        meta, cfg = r.meta, r.config
        s = r.scalars(["cost/train_flops", "cost/flops_per_s", "val/loss", "elapsed_s"])
    finally:
        r.close()
    fl = meta["flops_per_token"]
    assert fl["train_active"] == 3 * fl["forward_active"] > 0
    assert {"params", "grads", "optimizer", "activations", "total"} <= set(meta["memory_footprint"])
    flops = s[s["name"] == "cost/train_flops"].sort_values("step")
    assert len(flops) >= 5 and flops["step"].iloc[-1] == cfg["train"]["steps"]
    members = cfg["ensemble"]["members"] if cfg["ensemble"]["method"] in ("seeds", "bagging") else 1
    per_step = cfg["data"]["batch_size"] * cfg["data"]["context"] * fl["train_active"] * members
    if cfg["ensemble"]["method"] != "boosting":   # (boosting adds the ensemble-so-far's forwards)
        assert np.allclose(flops["value"], per_step * flops["step"], rtol=1e-9, atol=0)
    assert (s[s["name"] == "cost/flops_per_s"]["value"] > 0).all()
    row = summary_row(by_name(s), meta)
    assert np.isfinite(row["train_flops"]) and np.isfinite(row["memory_total"])


# Not regenerated yet: with the current engine the fp16 pair no longer shows its story
# (regenerated on 2026-12-04 the float32-router run had a skipped step attributed to a
# router and both reached the same loss-scale floor, test_gui_precision's
# test_sample_pair_differs_in_overflow), so the pair predates the cost records.
WITHOUT_COSTS = ("fp16-overflow", "fp16-router-fp32")


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.name not in WITHOUT_COSTS],
                         ids=lambda p: p.name)
def test_every_sample_carries_the_cost_series(path):
    """Regenerated with the engine that records costs (issue 16), so Compare's
    quality-per-cost columns fill for the shipped samples."""
    _assert_cost_records(path)


def test_compare_fills_the_cost_columns_for_the_moe_vs_ensemble_pair():
    from moe_studio.store.compare import add_equal_cost, by_name, summary_row
    rows, tables = [], []
    for n in ("moe-vs-ensemble-moe", "moe-vs-ensemble-dense"):
        with open_run(sample_runs_dir() / n) as r:
            t = by_name(r.scalars())
            rows.append(summary_row(t, r.meta, run=n))
            tables.append(t)
    add_equal_cost(rows, tables)
    for row in rows:
        assert np.isfinite(row["val_at_equal_flops"]) and np.isfinite(row["val_at_equal_time"])


ENSEMBLE_SAMPLES = ("bagging-4", "moe-vs-ensemble-moe", "moe-vs-ensemble-dense")


def test_ensemble_samples_ship_small_with_a_visible_gain():
    names = {p.name for p in SHIPPED}
    assert set(ENSEMBLE_SAMPLES) <= names
    size = sum(f.stat().st_size for n in ENSEMBLE_SAMPLES
               for f in (sample_runs_dir() / n).rglob("*") if f.is_file())
    assert size <= 6 * 2 ** 20, f"ensemble samples take {size / 2**20:.1f} MB (budget 6 MB)"
    for name in ("bagging-4", "moe-vs-ensemble-dense"):
        r = open_run(sample_runs_dir() / name)
        try:
            assert r.config["ensemble"]["members"] == 4
            gain = r.scalars(["ens/gain"], member=-1)
            assert len(gain) >= 5 and gain.value.iloc[-1] > 0.005, name
            assert r.tensor("ens/agreement", member=-1)[1].shape == (4, 4)
            assert r.snapshot("ensemble/probe", member=-1) is not None
        finally:
            r.close()
    # the MoE vs ensemble pair: same schedule and batches, the same total parameters
    moe, dense = (open_run(sample_runs_dir() / n) for n in ENSEMBLE_SAMPLES[1:])
    try:
        same = lambda c: {k: v for k, v in c["train"].items() if k != "snapshot_every"}  # noqa: E731
        assert same(moe.config) == same(dense.config)     # (routing snapshots: MoE only)
        assert moe.config["data"] == dense.config["data"]
        total_moe = moe.meta["params_total"]
        total_dense = dense.meta["params_total"] * dense.config["ensemble"]["members"]
        assert abs(total_moe - total_dense) <= 0.01 * total_moe
    finally:
        moe.close()
        dense.close()
