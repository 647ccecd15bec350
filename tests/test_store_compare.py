"""store.compare: resumed-run clean-up, per-run series, group mean / band, config diff,
summary rows; each checked against an independent pandas computation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from moe_studio.config.schema import ExperimentConfig, to_dict
from moe_studio.config.toml_io import dumps
from moe_studio.store import RunWriter, open_run
from moe_studio.store import compare as C


def _long(rows) -> pd.DataFrame:
    """The store's long table from (step, member, name, value, wall) tuples."""
    df = pd.DataFrame(rows, columns=["step", "member", "name", "value", "wall_time"])
    df["name"] = df["name"].astype("category")
    return df.sort_values(["name", "member", "step"], kind="stable", ignore_index=True)


def test_latest_attempt_keeps_the_history_of_the_last_attempt():
    # attempt 1: steps 0..20 at wall 0..; restart from step 10: steps 10..30 later on
    a1 = [(s, 0, "train/loss", 100.0 + s, float(s)) for s in range(0, 21, 2)]
    a2 = [(s, 0, "train/loss", 200.0 + s, 1000.0 + s) for s in range(10, 31, 2)]
    other = [(s, -1, "lr", 0.1, float(s)) for s in range(0, 21, 2)]
    # a value written twice at one step in one attempt: the later one counts
    dup = [(8, 0, "val/loss", 5.0, 8.0), (8, 0, "val/loss", 4.0, 8.5)]
    out = C.latest_attempt(_long(a1 + a2 + other + dup))

    loss = out[out["name"] == "train/loss"]
    expected = pd.concat([pd.DataFrame(a1, columns=loss.columns).query("step < 10"),
                          pd.DataFrame(a2, columns=loss.columns)])
    np.testing.assert_array_equal(loss["step"], expected["step"])
    np.testing.assert_array_equal(loss["value"], expected["value"])
    assert (np.diff(loss["step"]) > 0).all()          # no zig-zag
    assert len(out[out["name"] == "lr"]) == len(other)  # untouched series stay whole
    val = out[out["name"] == "val/loss"]
    assert val["value"].tolist() == [4.0]


def test_latest_attempt_of_rows_read_poll_by_poll():
    """A followed run's table is its polls appended: a series comes in several blocks.
    The rows a resumed attempt wrote again must still be dropped (not kept, and later
    averaged with the new ones)."""
    a1 = [(s, 0, "train/loss", 100.0 + s, float(s)) for s in range(0, 21, 2)]
    a2 = [(s, 0, "train/loss", 200.0 + s, 1000.0 + s) for s in range(10, 31, 2)]
    lr = [(s, -1, "lr", 0.1, float(s)) for s in range(0, 31, 2)]
    polls = [_long(a1 + lr[:11]), _long(a2 + lr[11:])]       # each poll sorted by name
    appended = pd.concat(polls, ignore_index=True)
    full = C.latest_attempt(_long(a1 + a2 + lr))
    got = C.latest_attempt(appended)
    loss = got[got["name"] == "train/loss"].sort_values("step")
    ref = full[full["name"] == "train/loss"]
    np.testing.assert_array_equal(loss["step"], ref["step"])
    np.testing.assert_array_equal(loss["value"], ref["value"])
    assert len(got[got["name"] == "lr"]) == len(lr)


def test_latest_attempt_leaves_an_ordinary_run_alone():
    df = _long([(s, m, "train/loss", float(s + m), float(s)) for s in range(5) for m in (0, 1)])
    out = C.latest_attempt(df)
    pd.testing.assert_frame_equal(out, df)


def test_metric_series_prefers_run_wide_else_mean_over_members_and_layers():
    rows = []
    for s in (2, 4, 6):
        rows += [(s, 0, "val/loss", 1.0 * s, 10.0 + s), (s, 1, "val/loss", 3.0 * s, 10.0 + s),
                 (s, -1, "val/loss", 0.5 * s, 10.0 + s),
                 (s, 0, "train/loss", 1.0 * s, 10.0 + s), (s, 1, "train/loss", 2.0 * s, 11.0 + s)]
        for layer in range(3):
            rows.append((s, 0, f"moe/L{layer}/load_cv", 0.1 * layer + s, 10.0 + s))
    df = _long(rows)
    ref = pd.DataFrame(rows, columns=df.columns)

    val = C.metric_series(df, "val/loss")
    want = ref[(ref["name"] == "val/loss") & (ref["member"] == -1)]
    np.testing.assert_allclose(val["value"], want["value"])

    train = C.metric_series(df, "train/loss")
    g = ref[ref["name"] == "train/loss"].groupby("step")
    np.testing.assert_allclose(train["value"], g["value"].mean())
    np.testing.assert_allclose(train["wall_time"], g["wall_time"].max())

    cv = C.metric_series(C.by_name(df), "moe/L*/load_cv")   # the index gives the same
    g = ref[ref["name"].str.match(r"moe/L\d+/load_cv")].groupby("step")["value"].mean()
    np.testing.assert_allclose(cv["value"], g.to_numpy())
    assert C.metric_series(df, "nothing/here").empty


def test_group_band_matches_pandas_interpolation():
    rng = np.random.default_rng(0)
    curves = [(np.arange(0, 101, 2.0), rng.normal(size=51)),
              (np.arange(0, 81, 4.0), rng.normal(size=21)),
              (np.arange(10, 101, 5.0), rng.normal(size=19))]
    band = C.group_band(curves)

    # reference: every run on the union of the x values, linearly interpolated inside
    # its own range only, then row-wise statistics
    union = np.unique(np.concatenate([x for x, _ in curves]))
    cols = [pd.Series(y, index=x).reindex(union).interpolate(method="index",
                                                            limit_area="inside")
            for x, y in curves]
    table = pd.concat(cols, axis=1)
    np.testing.assert_allclose(band["x"], union)
    np.testing.assert_allclose(band["mean"], table.mean(axis=1))
    np.testing.assert_allclose(band["min"], table.min(axis=1))
    np.testing.assert_allclose(band["max"], table.max(axis=1))
    np.testing.assert_allclose(band["std"], table.std(axis=1, ddof=0))
    np.testing.assert_array_equal(band["n"], table.count(axis=1))
    lo, hi = C.band_edges(band, C.BAND_STD)
    np.testing.assert_allclose(hi - lo, 2 * table.std(axis=1, ddof=0))
    with pytest.raises(ValueError):
        C.band_edges(band, "iqr")


def test_group_band_caps_the_grid():
    x = np.arange(10_000.0)
    band = C.group_band([(x, x), (x + 0.5, x)], max_points=500)
    assert band["x"].size == 500 and band["x"][0] == 0 and band["x"][-1] == x[-1] + 0.5


def test_config_diff_and_grouping_against_json_normalize():
    cfgs = []
    for router, k, mode in (("topk", 2, "fp32"), ("topk", 1, "bf16"), ("soft", 2, "fp32")):
        c = ExperimentConfig(name=f"{router}-{k}")
        c.moe.router, c.moe.top_k, c.precision.mode = router, k, mode
        cfgs.append(to_dict(c))
    diff = C.config_diff(cfgs, ["a", "b", "c"])

    flat = pd.json_normalize(cfgs, sep=".")
    differs = [k for k in flat.columns if flat[k].astype(str).nunique() > 1 and k != "name"]
    assert sorted(diff.index) == sorted(differs) == ["moe.router", "moe.top_k", "precision.mode"]
    for key in diff.index:
        assert list(diff.loc[key]) == list(flat[key])
    assert list(diff.columns) == ["a", "b", "c"]

    groups = C.group_runs([C.flatten_config(c)["moe.router"] for c in cfgs])
    assert groups == [("topk", [0, 1]), ("soft", [2])]
    assert C.config_diff([cfgs[0], cfgs[0]]).empty


def test_x_axes():
    s = C.series_arrays(_long([(s, 0, "train/loss", 1.0, 100.0 + 2 * s) for s in (2, 4, 6)]),
                        "train/loss")
    tokens = (np.array([2, 4]), np.array([64.0, 128.0]))
    np.testing.assert_allclose(C.x_of(s, C.X_STEP), [2, 4, 6])
    np.testing.assert_allclose(C.x_of(s, C.X_TOKENS, tokens=tokens), [64, 128, 192])
    np.testing.assert_allclose(C.x_of(s, C.X_RELATIVE, run_start=104.0), [0, 4, 8])
    np.testing.assert_allclose(C.x_of(s, C.X_WALL, origin=100.0), [4, 8, 12])
    with pytest.raises(ValueError):
        C.x_of(s, "epochs")


def test_summary_row_against_the_store_records(tmp_path):
    cfg = ExperimentConfig(name="summary")
    w = RunWriter.create(tmp_path, name="summary", config=to_dict(cfg), config_toml=dumps(cfg),
                         meta={"params_total": 1234, "params_active": 567})
    rng = np.random.default_rng(1)
    for s in range(1, 41):
        w.add_scalars(s, {"tokens_per_s": 1000 + 100 * rng.normal()}, member=-1)
        for m in (0, 1):
            w.add_scalars(s, {"precision/skipped": float(s % 7 == 0 and m == 0)}, member=m)
            for layer in (0, 1):
                w.add_scalars(s, {f"moe/L{layer}/load_cv": rng.random(),
                                  f"moe/L{layer}/load_max_over_mean": 1 + rng.random(),
                                  f"moe/L{layer}/dropped_frac": 0.1 * rng.random()}, member=m)
        if s % 10 == 0:
            w.add_scalars(s, {"val/loss": 3.0 - 0.01 * s + rng.random(), "ens/gain": 0.01 * s},
                          member=-1)
            w.add_scalars(s, {"val/loss": 9.0}, member=0)   # members: not the ensemble's
    w.close("finished")
    with open_run(w.run_dir) as r:
        df, meta = r.scalars(), r.meta
    row = C.summary_row(C.latest_attempt(df), meta, run="summary", status="finished")

    def of(name, member=None):
        d = df[df["name"] == name]
        return d if member is None else d[d["member"] == member]
    val = of("val/loss", -1).sort_values("step")["value"]
    assert row["final_val_loss"] == pytest.approx(val.iloc[-1])
    assert row["best_val_loss"] == pytest.approx(val.min())
    assert row["tokens_per_s"] == pytest.approx(of("tokens_per_s")["value"].median())
    assert (row["params_total"], row["params_active"]) == (1234, 567)
    # an ensemble's members all count (every token passes through all of them)
    assert C.run_params({"params_total": 1234, "params_active": 567, "members": 4}) == (
        4 * 1234, 4 * 567)
    tot, act = C.run_params({})
    assert np.isnan(tot) and np.isnan(act)
    for key in ("load_cv", "load_max_over_mean", "dropped_frac"):
        d = df[df["name"].str.fullmatch(rf"moe/L\d+/{key}")]
        assert row[key] == pytest.approx(d[d["step"] == d["step"].max()]["value"].mean())
    assert row["ens_gain"] == pytest.approx(of("ens/gain")["value"].iloc[-1])
    assert row["skipped_steps"] == (of("precision/skipped")["value"] > 0).sum() == 5
    assert row["steps"] == 40

    path = tmp_path / "summary.csv"
    C.write_summary_csv([row], path)
    back = pd.read_csv(path)
    assert list(back.columns) == [h for _, h in C.SUMMARY_COLUMNS]
    assert back.loc[0, "Final val loss"] == pytest.approx(row["final_val_loss"])


def test_summary_row_of_an_empty_run_is_all_nan():
    row = C.summary_row(C.latest_attempt(_long([])), {})
    assert all(math.isnan(row[k]) for k, _ in C.SUMMARY_COLUMNS if k not in ("run", "status"))
