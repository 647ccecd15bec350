"""Run store: round trip of every record kind, status, follow, list, bad input, export, CLI, bench.

Multi-process cases (a second process writing, kill -9) are in test_store_process.py.
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moe_studio.store import (SCHEMA_VERSION, RunFileError, RunReader, RunWriter, list_runs,
                              new_run_id, open_run)
from moe_studio.store.cli import add_parsers, cmd_export, cmd_runs
from moe_studio.store.export import export_run
from moe_studio.store.liveness import HOST

CONFIG = {"name": "t", "moe": {"router": "topk", "n_experts": 4, "top_k": 2},
          "precision": {"mode": "fp16"}, "ensemble": {"members": 2}, "train": {"steps": 50}}
TOML = 'name = "t"\n\n[moe]\nrouter = "topk"\n'


def make(runs: Path, name: str = "t", **kw) -> RunWriter:
    return RunWriter.create(runs, name=name, config=CONFIG, config_toml=TOML, **kw)


def tree(root: Path) -> dict:
    """Every file under ``root`` with its size and mtime: to prove nothing was touched."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float64).view(np.int64)


# ---------------------------------------------------------------------- scalars
def test_scalars_round_trip_bit_exact_including_nonfinite(tmp_path):
    w = make(tmp_path)
    special = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308]
    written = []
    for step in range(12):
        for member in (-1, 0, 1):
            vals = {"train/loss": 3.0 - 0.1 * step + member,
                    "precision/weird": special[(step + member) % len(special)]}
            w.add_scalars(step, vals, member=member, wall_time=1000.0 + step)
            written += [(step, member, k, v, 1000.0 + step) for k, v in vals.items()]
        if step % 4 == 3:
            w.flush()  # several blocks
    w.close()

    df = open_run(w.run_dir).scalars()
    assert list(df.columns) == ["step", "member", "name", "value", "wall_time"]
    ref = pd.DataFrame(written, columns=df.columns)
    ref = ref.sort_values(["name", "member", "step"], kind="stable", ignore_index=True)
    assert df["step"].tolist() == ref["step"].tolist()
    assert df["member"].tolist() == ref["member"].tolist()
    assert df["name"].astype(str).tolist() == ref["name"].tolist()
    assert np.array_equal(bits(df["value"]), bits(ref["value"]))  # NaN, ±inf, -0.0 bit for bit
    assert np.array_equal(df["wall_time"].to_numpy(), ref["wall_time"].to_numpy())
    assert df["step"].dtype == np.int64 and df["value"].dtype == np.float64


def test_scalar_order_matches_reference_for_random_writes(tmp_path):
    """Random series, members and out-of-order steps over many commits: the result is
    the written rows sorted stably by (name, member, step)."""
    rng = np.random.default_rng(1)
    w = make(tmp_path)
    names = [f"s/{c}" for c in "dbca"]
    written = []
    for i in range(400):
        step = int(rng.integers(0, 60))
        member = int(rng.integers(-1, 3))
        vals = {n: float(rng.standard_normal()) for n in rng.choice(names, 2, replace=False)}
        w.add_scalars(step, vals, member=member, wall_time=float(i))
        written += [(step, member, k, v, float(i)) for k, v in vals.items()]
        if rng.random() < 0.1:
            w.flush()
    w.close()
    r = open_run(w.run_dir)
    ref = pd.DataFrame(written, columns=["step", "member", "name", "value", "wall_time"])
    order = np.lexsort((np.arange(len(ref)), ref["step"], ref["member"], ref["name"]))
    ref = ref.iloc[order].reset_index(drop=True)
    df = r.scalars()
    assert df["name"].astype(str).tolist() == ref["name"].tolist()
    assert df[["step", "member"]].to_numpy().tolist() == ref[["step", "member"]].to_numpy().tolist()
    assert df["wall_time"].tolist() == ref["wall_time"].tolist()  # ties keep write order
    assert np.array_equal(df["value"].to_numpy(), ref["value"].to_numpy())

    sub = r.scalars(names=["s/b", "nope"], member=1)
    want = ref[(ref["name"] == "s/b") & (ref["member"] == 1)]
    assert sub["value"].tolist() == want["value"].tolist()
    assert len(r.scalars(names=["nope"])) == 0
    assert r.scalar_names() == sorted(names)
    assert r.last_step() == int(ref["step"].max())


def test_latest_and_empty_run(tmp_path):
    w = make(tmp_path)
    w.flush()
    r = open_run(w.run_dir)
    assert r.last_step() == -1 and len(r.scalars()) == 0 and r.scalar_names() == []
    assert list(r.scalars().columns) == ["step", "member", "name", "value", "wall_time"]
    w.add_scalars(1, {"a": 1.0, "b": float("nan")})
    w.add_scalars(2, {"a": 2.0})
    w.flush()
    w.add_scalars(0, {"a": 9.0})  # an older step written later does not become "latest"
    w.close()
    lat = open_run(w.run_dir).latest()
    assert lat["name"].tolist() == ["a", "b"]
    assert lat["step"].tolist() == [2, 1] and lat["value"].iloc[0] == 2.0
    assert np.isnan(lat["value"].iloc[1])


# ---------------------------------------------------------------------- tensors, histograms, snapshots, events
@pytest.mark.parametrize("array", [
    np.arange(32, dtype=np.float32).reshape(4, 8),
    np.array([[1.5, np.nan], [np.inf, -0.0]], np.float16),
    np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    np.arange(200, dtype=np.uint8),
    np.array([True, False, True]),
    np.array(7, np.int64),                          # 0-d
    np.zeros((0, 3), np.float64),                   # empty
    np.arange(12, dtype=np.float64).reshape(3, 4).T,  # not contiguous
    np.arange(6, dtype=">i4"),                      # big-endian
    np.array([1 + 2j, -3j], np.complex64),
    np.linspace(0, 1, 5000),                        # large enough to be compressed
])
def test_tensor_round_trip_any_dtype_and_shape(tmp_path, array):
    w = make(tmp_path)
    w.add_tensor(3, "x", array, member=1)
    w.close()
    step, got = open_run(w.run_dir).tensor("x", member=1)
    assert step == 3 and got.shape == array.shape and got.dtype == array.dtype.newbyteorder("=")
    assert np.array_equal(got, array, equal_nan=array.dtype.kind == "f")
    assert got.flags.writeable


def test_tensor_nearest_step_series_and_copy_semantics(tmp_path):
    w = make(tmp_path)
    buf = np.zeros((2, 3), np.float32)
    for s in (0, 10, 20):
        buf[:] = s
        w.add_tensor(s, "moe/tokens_per_expert", buf)  # the writer must copy: buf is reused
    w.add_tensor(20, "moe/tokens_per_expert", np.full((2, 3), 21, np.float32))  # same step again
    w.add_tensor(5, "other", np.ones(4), member=0)
    w.add_tensor(5, "other", np.ones(5), member=1)
    w.close()
    r = open_run(w.run_dir)
    near = {q: r.tensor("moe/tokens_per_expert", q)[0] for q in (-5, 0, 4, 5, 6, 15, 100)}
    assert near == {-5: 0, 0: 0, 4: 0, 5: 0, 6: 10, 15: 10, 100: 20}  # ties go to the earlier step
    step, latest = r.tensor("moe/tokens_per_expert")
    assert step == 20 and latest[0, 0] == 21  # last written of a step wins
    assert r.tensor("moe/tokens_per_expert", 10)[1][1, 2] == 10
    assert r.tensor_steps("moe/tokens_per_expert").tolist() == [0, 10, 20]
    steps, stack = r.tensor_series("moe/tokens_per_expert")
    assert steps.tolist() == [0, 10, 20, 20] and stack.shape == (4, 2, 3)
    assert stack[:, 0, 0].tolist() == [0, 10, 20, 21]
    assert r.tensor("missing") is None and r.tensor("other", member=7) is None
    assert len(r.tensor_steps("missing")) == 0 and len(r.tensor_series("missing")[0]) == 0
    assert r.tensor_names() == ["moe/tokens_per_expert", "other"]
    w2 = make(tmp_path, "shape")
    w2.add_tensor(0, "x", np.ones(2))
    w2.add_tensor(1, "x", np.ones(3))
    w2.close()
    with pytest.raises(ValueError, match="changed shape"):
        open_run(w2.run_dir).tensor_series("x")


def test_tensor_rejects_non_numeric(tmp_path):
    w = make(tmp_path)
    with pytest.raises(TypeError):
        w.add_tensor(0, "s", np.array(["a", "b"]))
    with pytest.raises(TypeError):
        w.add_tensor(0, "o", np.array([{}, None], dtype=object))
    w.close()


def test_histogram_round_trip_and_series(tmp_path):
    w = make(tmp_path)
    edges = np.linspace(0.0, 1.0, 51)
    for s in range(3):
        w.add_histogram(s * 5, "router_probs/L0", edges, np.arange(50, dtype=np.int64) * s, member=1)
        w.add_histogram(s, "act", np.linspace(-s - 1, s + 1, 5), np.array([0.5, 1, 2, 3]) + s)
    with pytest.raises(ValueError, match="one edge more"):
        w.add_histogram(0, "bad", np.arange(3), np.arange(3))
    w.close()
    r = open_run(w.run_dir)
    step, e, c = r.histogram("router_probs/L0", 6, member=1)
    assert step == 5 and np.array_equal(e, edges) and c.dtype == np.int64 and c[3] == 3
    steps, e, counts = r.histogram_series("router_probs/L0", member=1)
    assert steps.tolist() == [0, 5, 10] and e.shape == (51,) and counts.shape == (3, 50)
    steps, e, counts = r.histogram_series("act")
    assert e.shape == (3, 5) and e[2, 0] == -3 and counts[1].tolist() == [1.5, 2, 3, 4]
    assert r.histogram("act", member=3) is None
    assert r.histogram_names() == ["act", "router_probs/L0"]


def test_snapshot_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"tokens": rng.integers(0, 256, 64).astype(np.uint8),
              "domains": np.repeat(np.arange(2, dtype=np.uint8), 32),
              "topk_idx": rng.integers(0, 8, (4, 64, 2)).astype(np.int16),
              "topk_weight": rng.random((4, 64, 2)).astype(np.float16),
              "probs": rng.random((4, 64, 8)).astype(np.float16)}
    meta = {"domain_names": ["prose", "python"], "moe_blocks": [0, 1, 2, 3], "top_k": 2, "n_experts": 8}
    w = make(tmp_path)
    w.add_snapshot(50, "routing/probe", arrays, meta, member=0)
    w.add_snapshot(100, "routing/probe", {k: v[..., :1] if v.ndim > 1 else v for k, v in arrays.items()},
                   meta, member=0)
    w.close()
    r = open_run(w.run_dir)
    snap = r.snapshot("routing/probe", 60)
    assert snap.step == 50 and snap.meta == meta and list(snap.arrays) == list(arrays)
    for k, a in arrays.items():
        assert snap.arrays[k].dtype == a.dtype and np.array_equal(snap.arrays[k], a)
    assert r.snapshot("routing/probe").step == 100
    assert r.snapshot_steps("routing/probe").tolist() == [50, 100]
    assert r.snapshot("routing/probe", member=1) is None
    assert r.snapshot_names() == ["routing/probe"]


def test_events_and_meta_round_trip(tmp_path):
    w = make(tmp_path, meta={"torch": "2.9", "device": "cpu"})
    w.add_event(3, "nonfinite", "non-finite train/loss at step 3", {"names": ["train/loss"], "v": float("inf")})
    w.add_event(4, "loss_scale_backoff", "scale 65536 -> 32768", member=0)
    w.add_event(9, "checkpoint", "saved checkpoint-9.pt", {"path": "x"})
    w.set_meta(params_total=123, device="cpu:0")
    w.close()
    r = open_run(w.run_dir)
    ev = r.events()
    assert list(ev.columns) == ["step", "member", "kind", "message", "data", "wall_time"]
    assert ev["kind"].tolist() == ["nonfinite", "loss_scale_backoff", "checkpoint"]
    assert ev["member"].tolist() == [-1, 0, -1]
    assert ev["data"][0] == {"names": ["train/loss"], "v": float("inf")} and ev["data"][1] == {}
    assert r.events(kinds=["checkpoint"])["step"].tolist() == [9]
    assert len(r.events(kinds=[])) == 0
    assert r.meta["torch"] == "2.9" and r.meta["device"] == "cpu:0" and r.meta["params_total"] == 123
    assert r.meta["python"] and r.meta["host"] == HOST
    with pytest.raises(TypeError):
        w2 = make(tmp_path, "m")
        w2.set_meta(bad=object())
    w2.close()


# ---------------------------------------------------------------------- run folder, status
def test_create_layout_ids_and_config(tmp_path):
    t0 = time.time()
    a, b = make(tmp_path / "runs", "My Run: v1!"), make(tmp_path / "runs", "My Run: v1!")
    assert re.fullmatch(r"\d{8}-\d{6}-my-run-v1(-\d+)?", a.run_id)
    # a long name keeps its end, where a sweep's runs differ
    from moe_studio.store.writer import slugify
    long = [slugify(f"sweep-topk-aux top_k=2 aux_loss_coef={v}") for v in ("0", "0.01", "0.015")]
    assert long[1] == "sweep-topk-au-top_k-2-aux_loss_coef-0.01" and long[0].endswith("coef-0")
    assert len(set(long)) == 3 and all(len(x) <= 40 for x in long)
    assert slugify("x" * 60) == "x" * 13 + "-" + "x" * 26 and slugify("?!") == "run"
    assert a.run_id != b.run_id and a.run_dir.parent == b.run_dir.parent == tmp_path / "runs"
    assert (a.run_dir / "config.toml").read_text() == TOML
    assert not list(a.run_dir.glob("*.tmp"))
    a.close()
    b.close()
    r = open_run(a.run_dir / "run.sqlite")  # the database file works as well as the folder
    assert r.path == a.run_dir and r.run_id == a.run_id and r.name == "My Run: v1!"
    assert r.config == CONFIG and r.config_toml == TOML
    assert t0 - 1 <= r.started <= r.ended <= time.time() + 1 and r.error is None
    assert new_run_id("", when=0).endswith("-run")


def test_status_transitions(tmp_path):
    w = make(tmp_path)
    r = open_run(w.run_dir)
    assert r.status == "running" and r.ended is None
    w.close("stopped")
    assert r.status == "stopped" and r.ended is not None  # a live reader sees the change
    w.close("failed")  # idempotent: the first close wins
    assert open_run(w.run_dir).status == "stopped"
    with pytest.raises(RuntimeError, match="closed"):
        w.add_scalars(1, {"a": 1.0})
    x = make(tmp_path, "x")
    with pytest.raises(ValueError):
        x.close("interrupted")  # computed by readers, never stored
    x.close()

    w = make(tmp_path, "f")
    w.close("failed", error="Traceback ...\nValueError: boom")
    r = open_run(w.run_dir)
    assert r.status == "failed" and r.error.endswith("boom")

    with pytest.raises(ZeroDivisionError):
        with make(tmp_path, "ctx") as w:
            w.add_scalars(0, {"a": 1.0})
            1 / 0  # noqa: B018 - the error the writer's context must record
    r = open_run(w.run_dir)
    assert r.status == "failed" and "ZeroDivisionError" in r.error and len(r.scalars()) == 1
    with pytest.raises(KeyboardInterrupt):
        with make(tmp_path, "ki") as w:
            raise KeyboardInterrupt
    assert open_run(w.run_dir).status == "stopped"
    with make(tmp_path, "ok") as w:
        pass
    assert open_run(w.run_dir).status == "finished"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _set_run(db: Path, **cols) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE run SET " + ", ".join(f"{k} = ?" for k in cols), tuple(cols.values()))
    con.commit()
    con.close()


def test_running_without_writer_reads_interrupted(tmp_path):
    w = make(tmp_path)
    w.close()
    db = w.run_dir / "run.sqlite"
    now = time.time()
    _set_run(db, status="running", ended=None, heartbeat=now, pid=_dead_pid(), host=HOST)
    assert open_run(w.run_dir).status == "interrupted"       # same host, process gone
    _set_run(db, heartbeat=now - 60, pid=1, host="elsewhere")
    assert open_run(w.run_dir).status == "interrupted"       # heartbeat stale
    _set_run(db, heartbeat=time.time(), pid=_dead_pid(), host="elsewhere")
    assert open_run(w.run_dir).status == "running"           # other host, fresh heartbeat
    import os
    _set_run(db, heartbeat=time.time(), pid=os.getpid(), host=HOST)
    assert open_run(w.run_dir).status == "running"


def test_background_commit_and_heartbeat_without_flush(tmp_path):
    w = make(tmp_path)
    r = open_run(w.run_dir)
    hb0 = r.heartbeat
    w.add_scalars(0, {"a": 1.0})
    w.add_event(0, "note", "n")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(r.scalars()) == 0:
        time.sleep(0.05)
    assert len(r.scalars()) == 1 and len(r.events()) == 1  # committed with no flush()
    time.sleep(1.3)  # idle: the writer still heartbeats about once a second
    r.refresh()
    assert r.heartbeat > hb0 + 0.5
    w.close()
    assert not w._thread.is_alive()


def test_reopen_continues_a_run_and_an_immutable_reader_notices(tmp_path):
    w = make(tmp_path)
    w.add_scalars(0, {"a": 0.0})
    w.close("stopped")
    r = open_run(w.run_dir)  # no WAL: opened immutable
    assert r._immutable and r.status == "stopped"
    w2 = RunWriter.reopen(w.run_dir)
    assert w2.run_id == w.run_id
    w2.add_scalars(1, {"a": 1.0})
    w2.flush()
    assert r.status == "running" and r.scalars()["step"].tolist() == [0, 1]  # reopened via the WAL
    assert not r._immutable
    w2.close()
    assert r.status == "finished" and r.ended is not None
    r.close()


# ---------------------------------------------------------------------- follow (same process)
def test_follower_reads_only_new_rows(tmp_path):
    w = make(tmp_path)
    w.add_scalars(0, {"a": 0.0, "b": 0.5})
    w.flush()
    r = open_run(w.run_dir)
    f = r.follower()
    u = f.poll()
    assert len(u.scalars) == 2 and u.status == "running" and u.last_step == 0 and u.changed
    u = f.poll()
    assert not u.changed and len(u.scalars) == 0 and len(u.new_events) == 0
    assert list(u.scalars.columns) == ["step", "member", "name", "value", "wall_time"]
    w.add_scalars(1, {"a": 1.0})
    w.add_tensor(1, "t", np.ones(3))
    w.add_event(1, "note", "x")
    w.flush()
    u = f.poll()
    assert u.scalars["step"].tolist() == [1] and u.new_tensor_steps and not u.new_snapshots
    assert u.new_events["message"].tolist() == ["x"] and not u.new_histograms
    late = r.follower(from_start=False)
    assert not late.poll().changed and late.last_step == 1
    w.add_snapshot(2, "s", {"x": np.ones(2)})
    w.add_histogram(2, "h", np.arange(3.0), np.ones(2))
    w.close()
    u = f.poll()
    assert u.new_snapshots and u.new_histograms and u.status == "finished"
    assert late.poll().new_snapshots


# ---------------------------------------------------------------------- list_runs
def test_list_runs(tmp_path):
    runs = tmp_path / "runs"
    a = make(runs, "alpha")
    for s in range(5):
        for m in (0, 1):
            a.add_scalars(s, {"train/loss": 2.0 + m - 0.1 * s}, member=m)
    a.add_scalars(4, {"val/loss": 1.5}, member=-1)
    a.add_scalars(4, {"val/loss": 9.0}, member=0)
    a.close()
    b = make(runs, "beta")  # still running (this process is alive)
    (runs / "zz-broken").mkdir()
    (runs / "zz-broken" / "run.sqlite").write_text("hello")
    (runs / "not-a-run").mkdir()
    (runs / ".hidden").mkdir()
    (runs / ".hidden" / "run.sqlite").write_text("x")
    infos = list_runs(runs)
    assert [i.path.name for i in infos] == ["zz-broken", b.run_id, a.run_id]
    bad, live, done = infos
    assert bad.status == "unreadable" and "zz-broken" in bad.error and "not an SQLite" in bad.error
    assert live.status == "running" and live.last_step == -1 and live.train_loss is None
    assert done.status == "finished" and done.last_step == 4 and done.error is None
    assert done.train_loss == pytest.approx((1.6 + 2.6) / 2)  # mean over members
    assert done.val_loss == 1.5                               # the run-wide (ensemble) value
    assert done.key_config == {"router": "topk", "n_experts": 4, "top_k": 2, "precision": "fp16",
                               "members": 2, "moe_layers": None}
    b.close()
    with pytest.raises(RunFileError, match="runs folder not found"):
        list_runs(tmp_path / "nowhere")


# ---------------------------------------------------------------------- bad input
def _good_run(runs: Path) -> RunWriter:
    w = make(runs, "good")
    for s in range(300):
        w.add_scalars(s, {f"x{i}": float(i) for i in range(20)})
        w.add_tensor(s, "t", np.random.default_rng(s).random((8, 8)))
    w.close()
    return w


def _bad_missing(runs):
    return runs / "gone"


def _bad_no_db(runs):
    d = runs / "no-db"
    d.mkdir()
    (d / "config.toml").write_text(TOML)
    return d


def _bad_text(runs):
    d = runs / "text"
    d.mkdir()
    (d / "run.sqlite").write_text("this is not a database\n" * 20)
    return d


def _bad_empty(runs):
    d = runs / "empty"
    d.mkdir()
    (d / "run.sqlite").write_bytes(b"")
    return d


def _bad_truncated(runs):
    w = _good_run(runs)
    db = w.run_dir / "run.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    return w.run_dir


def _bad_newer(runs):
    w = _good_run(runs)
    con = sqlite3.connect(w.run_dir / "run.sqlite")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()  # last connection: checkpoints the WAL into the file and removes it
    return w.run_dir


def _bad_corrupted(runs):
    w = _good_run(runs)
    db = w.run_dir / "run.sqlite"
    data = bytearray(db.read_bytes())
    data[100:4000] = b"\xa5" * 3900  # the schema page after its header
    db.write_bytes(bytes(data))
    return w.run_dir


def _bad_foreign(runs):
    d = runs / "foreign"
    d.mkdir()
    con = sqlite3.connect(d / "run.sqlite")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    return d


BAD = {"missing folder": (_bad_missing, "run folder not found"),
       "folder without run.sqlite": (_bad_no_db, "not found"),
       "not SQLite": (_bad_text, "not an SQLite database"),
       "empty file": (_bad_empty, "empty file"),
       "truncated": (_bad_truncated, "truncated"),
       "newer schema": (_bad_newer, "newer MoE Studio"),
       "corrupted": (_bad_corrupted, "corrupted"),
       "foreign SQLite": (_bad_foreign, "not a MoE Studio run")}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_and_touches_nothing(tmp_path, case, capsys):
    make_bad, phrase = BAD[case]
    runs = tmp_path / "runs"
    other = _good_run(runs)  # a healthy neighbour that must stay as it is
    bad = make_bad(runs)
    before = tree(tmp_path)

    with pytest.raises(RunFileError) as e:
        RunReader(bad)
    msg = str(e.value)
    assert "\n" not in msg and phrase in msg, msg
    assert str(bad) in msg  # names the folder or its run.sqlite

    infos = {i.path.name: i for i in list_runs(runs)}
    assert infos[other.run_id].status == "finished" and infos[other.run_id].error is None
    if bad.exists():
        assert infos[bad.name].status == "unreadable" and "\n" not in infos[bad.name].error

    parser = _parser()
    capsys.readouterr()
    rc = cmd_export(parser.parse_args(["export", str(bad), "--out", str(tmp_path / "exp")]))
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and phrase in err
    assert not (tmp_path / "exp").exists()
    rc = cmd_runs(parser.parse_args(["runs", str(runs)]))
    assert rc == (1 if bad.exists() else 0)

    assert tree(tmp_path) == before  # nothing created, changed or removed


# ---------------------------------------------------------------------- export and CLI
def _rich_run(runs: Path) -> RunWriter:
    w = make(runs, "rich")
    for s in range(6):
        for m in (0, 1):
            w.add_scalars(s, {"train/loss": 2 - 0.1 * s + m, "odd": float("nan") if s == 2 else float("inf")},
                          member=m)
            w.add_tensor(s, "moe/tokens_per_expert", np.arange(8, dtype=np.float32).reshape(2, 4) * s, member=m)
        w.add_scalars(s, {"lr": 1e-3 * s}, member=-1)
    w.add_tensor(2, "zero_d", np.array(4.5))
    w.add_histogram(3, "router_probs/L0", np.linspace(0, 1, 5), np.array([1, 0, 2, 7]))
    w.add_snapshot(4, "routing/probe", {"tokens": np.arange(5, dtype=np.uint8),
                                        "probs": np.full((2, 5, 3), 0.25, np.float16)}, {"top_k": 2})
    w.add_event(5, "note", "hello, world", {"k": [1, 2]})
    w.close()
    return w


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_matches_reader(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    w = _rich_run(tmp_path / "runs")
    out = tmp_path / "out"
    files = export_run(w.run_dir, fmt, out)
    assert sorted(p.name for p in files) == sorted(
        [f"{n}.{fmt}" for n in ("scalars", "tensors", "histograms", "snapshots", "snapshot_meta",
                                "events")] + ["run.json"])
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    r = open_run(w.run_dir)

    sc, ref = read(out / f"scalars.{fmt}"), r.scalars()
    assert sc["name"].astype(str).tolist() == ref["name"].astype(str).tolist()
    assert sc["step"].tolist() == ref["step"].tolist() and sc["member"].tolist() == ref["member"].tolist()
    assert np.array_equal(sc["value"].to_numpy(float), ref["value"].to_numpy(), equal_nan=True)
    assert np.allclose(sc["wall_time"], ref["wall_time"], rtol=0, atol=1e-6)

    t = read(out / f"tensors.{fmt}")
    for name in ("moe/tokens_per_expert",):
        for m in (0, 1):
            steps, stack = r.tensor_series(name, member=m)
            rows = t[(t["name"] == name) & (t["member"] == m)]
            rebuilt = np.zeros_like(stack)
            k = np.searchsorted(steps, rows["step"].to_numpy())
            rebuilt[k, rows["i0"].astype(int), rows["i1"].astype(int)] = rows["value"]
            assert np.array_equal(rebuilt, stack) and len(rows) == stack.size
    z = t[t["name"] == "zero_d"]
    assert z["value"].tolist() == [4.5] and z[["i0", "i1"]].isna().all(axis=None)

    h = read(out / f"histograms.{fmt}")
    assert h["count"].tolist() == [1, 0, 2, 7] and h["left"].tolist() == [0, 0.25, 0.5, 0.75]

    sn = read(out / f"snapshots.{fmt}")
    snap = r.snapshot("routing/probe")
    probs = sn[sn["array"] == "probs"]
    assert len(probs) == snap.arrays["probs"].size and (probs["value"] == 0.25).all()
    tok = sn[sn["array"] == "tokens"].sort_values("i0")
    assert tok["value"].tolist() == snap.arrays["tokens"].tolist()
    assert json.loads(read(out / f"snapshot_meta.{fmt}")["meta"][0]) == {"top_k": 2}

    ev = read(out / f"events.{fmt}")
    assert ev["message"].tolist() == ["hello, world"] and json.loads(ev["data"][0]) == {"k": [1, 2]}
    info = json.loads((out / "run.json").read_text())
    assert info["run_id"] == w.run_id and info["status"] == "finished" and info["config"] == CONFIG


def _parser():
    import argparse
    ap = argparse.ArgumentParser()
    add_parsers(ap.add_subparsers(dest="command"))
    return ap


def test_cli_runs_and_export(tmp_path, capsys):
    w = _rich_run(tmp_path / "runs")
    p = _parser()
    args = p.parse_args(["runs", str(tmp_path / "runs")])
    assert args.func is cmd_runs and cmd_runs(args) == 0
    out = capsys.readouterr().out
    assert w.run_id in out and "finished" in out and "topk" in out and "fp16" in out
    assert cmd_runs(p.parse_args(["runs", str(tmp_path / "runs"), "--json"])) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["run_id"] == w.run_id and row["last_step"] == 5 and row["n_experts"] == 4
    args = p.parse_args(["export", str(w.run_dir), "--format", "csv", "--out", str(tmp_path / "e")])
    assert args.func is cmd_export and cmd_export(args) == 0
    assert (tmp_path / "e" / "scalars.csv").exists()
    assert cmd_runs(p.parse_args(["runs", str(tmp_path / "nowhere")])) == 1
    assert "runs folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------- bench
def test_bench_quick_returns_its_keys():
    from moe_studio.bench.store import run
    res = run(json_out=True, quick=True)
    for k in ("load_s", "load_rows", "load_ok", "poll_idle_ms", "poll_ok", "writer_us_per_step",
              "writer_pct_of_step", "writer_ok", "ok"):
        assert k in res, k
    assert res["load_rows"] == res["load_steps"] * res["load_series"]
    json.dumps(res)
