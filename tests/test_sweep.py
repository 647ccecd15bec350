"""Sweeps: grid parsing and expansion, refusals of bad grids, the queue folder, and a
sweep whose process is killed mid-way continuing with --resume without redoing what
finished."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moe_studio.cli import main
from moe_studio.config import save
from moe_studio.store import open_run
from moe_studio.sweep.grid import GridError, expand, parse_grid
from moe_studio.sweep.queue import SweepQueue, cancel
from moe_studio.sweep.runner import create_sweep

from tiny import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_grid_expansion_is_the_product_in_order_with_typed_values():
    base = tiny_config(train__seed=5)
    axes = parse_grid(["moe.top_k=1,2", "moe.aux_loss_coef=0, 0.01", "precision.mode=fp32,bf16"],
                      base, seeds=2)
    assert [a.key for a in axes] == ["moe.top_k", "moe.aux_loss_coef", "precision.mode", "train.seed"]
    pts = expand(base, axes)
    assert len(pts) == 2 * 2 * 2 * 2
    # independent reference: nested loops, the first axis slowest
    want = [(k, a, m, s) for k in (1, 2) for a in (0.0, 0.01) for m in ("fp32", "bf16")
            for s in (5, 6)]
    got = [(p.config.moe.top_k, p.config.moe.aux_loss_coef, p.config.precision.mode,
            p.config.train.seed) for p in pts]
    assert got == want
    assert isinstance(pts[0].values["moe.top_k"], int)
    assert isinstance(pts[0].values["moe.aux_loss_coef"], float)
    assert pts[3].label() == "top_k=1 aux_loss_coef=0 mode=bf16 seed=6"
    assert base.moe.top_k == 2   # the base config is not changed


@pytest.mark.parametrize("args, seeds, message", [
    (["moe.topk=1,2"], 1, "unknown key 'moe.topk'"),
    (["mo.top_k=1"], 1, "unknown config section 'mo'"),
    (["moe.top_k"], 1, "expected section.key=v1,v2"),
    (["moe.top_k=1,,2"], 1, "empty value"),
    (["moe.top_k="], 1, "empty value"),
    (["moe.top_k=1,two"], 1, "whole number"),
    (["moe.top_k=1,1"], 1, "given twice"),
    (["moe.top_k=1", "moe.top_k=2"], 1, "given twice"),
    (["train.seed=1,2"], 2, "both set the seed"),
    (["moe.top_k=1"], 0, "--seeds must be at least 1"),
    ([], 1, "no --grid given"),
    (["name=a,b"], 1, "sweep a config key instead"),
    (["train.steps=" + ",".join(str(i) for i in range(1, 40)),
      "train.seed=" + ",".join(str(i) for i in range(40))], 1, "more than 1,000"),
])
def test_bad_grids_are_refused_with_one_clear_line(args, seeds, message):
    with pytest.raises(GridError, match=message.replace("(", r"\(")) as e:
        parse_grid(args, tiny_config(), seeds)
    assert "\n" not in str(e.value)


def test_a_grid_point_the_validation_refuses_is_named():
    base = tiny_config()   # 4 experts
    axes = parse_grid(["moe.top_k=2,8"], base)
    with pytest.raises(GridError, match=r"moe.top_k=8 is not a valid experiment: .*top_k"):
        expand(base, axes)


def test_cli_refusals_and_dry_run(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    save(tiny_config(), cfg)
    assert main(["sweep", str(cfg), "--grid", "moe.top_k=1,9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moe-studio sweep: ") and "moe.top_k=9" in err and len(err.splitlines()) == 1
    assert main(["sweep", str(cfg), "--grid", "moe.top_k=1,2", "--seeds", "2", "--dry-run",
                 "--json"]) == 0
    out = capsys.readouterr()
    assert [p["values"] for p in json.loads(out.out)] == [
        {"moe.top_k": 1, "train.seed": 0}, {"moe.top_k": 1, "train.seed": 1},
        {"moe.top_k": 2, "train.seed": 0}, {"moe.top_k": 2, "train.seed": 1}]
    assert "4 runs (dry run" in out.err
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path), "--grid", "moe.top_k=1"]) == 2
    assert "drop --grid" in capsys.readouterr().err
    assert not list(tmp_path.glob("runs"))   # nothing was made by a refusal


def test_queue_folder_cancel_and_status(tmp_path, capsys):
    base = tiny_config("q")
    axes = parse_grid(["moe.top_k=1,2"], base, seeds=2)
    q = create_sweep(base, [a.key for a in axes], expand(base, axes), tmp_path / "runs")
    assert q.dir.parent == tmp_path / "runs" and not (q.dir / "config.toml").exists()
    loaded = SweepQueue.load(q.dir)
    assert [e.state for e in loaded.entries] == ["pending"] * 4
    assert loaded.group_key() == "moe.top_k"
    assert (q.dir / loaded.entries[3].config_file).read_text().count("top_k = 2")
    cancel(q.dir, [1])
    assert [e.state for e in SweepQueue.load(q.dir).entries] == ["pending", "cancelled",
                                                                  "pending", "pending"]
    assert main(["sweep", "--cancel", str(q.dir)]) == 0
    capsys.readouterr()
    assert main(["sweep", "--status", str(q.dir), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["cancelled"] == 4 and st["cancel"] is True and st["running"] is False


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_a_sweep_killed_mid_way_continues_with_resume(tmp_path):
    cfg = tmp_path / "c.toml"
    save(tiny_config("kill", train__steps=150, train__eval_every=50, train__snapshot_every=50,
                     data__batch_size=2, model__n_layers=1), cfg)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "moe_studio", "sweep", str(cfg), "--grid", "moe.top_k=1,2",
           "--grid", "moe.aux_loss_coef=0.01", "--seeds", "1", "--out", str(runs)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        # wait until the first run has finished and the second has trained a few steps
        deadline = time.monotonic() + 240
        sweep_dir = None
        while time.monotonic() < deadline:
            found = list(runs.glob("sweep-*")) if runs.exists() else []
            if found:
                sweep_dir = found[0]
                q = SweepQueue.load(sweep_dir)
                e0, e1 = q.entries
                if e0.state == "done" and e1.state == "running" and e1.run:
                    with open_run(q.run_path(e1)) as r:
                        if r.last_step() >= 3:
                            break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        else:
            pytest.fail("the sweep did not get to its second run in time")
        proc.send_signal(signal.SIGKILL)    # a crash: no handler runs in the sweep process
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    q = SweepQueue.load(sweep_dir)
    assert [e.state for e in q.entries] == ["done", "running"]   # as the crash left it
    first, second = q.run_path(q.entries[0]), q.run_path(q.entries[1])
    first_bytes = (first / "run.sqlite").read_bytes()
    res = subprocess.run([sys.executable, "-m", "moe_studio", "sweep", "--resume", str(sweep_dir)],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""                     # progress is on stderr
    assert "1 of 2 runs already finished" in res.stderr
    q = SweepQueue.load(sweep_dir)
    assert [e.state for e in q.entries] == ["done", "done"]
    # the finished run was not redone; the interrupted one went on in its own folder
    assert (first / "run.sqlite").read_bytes() == first_bytes
    assert q.run_path(q.entries[1]) == second
    with open_run(second) as r:
        assert r.status == "finished" and r.last_step() == 150
        assert len(r.attempts()) == 1 and r.attempts()[0].from_step >= 1
        assert r.meta["sweep"]["index"] == 1 and r.meta["sweep"]["values"]["moe.top_k"] == 2
        steps = r.scalars(["train/loss"], member=0)["step"].tolist()
    assert steps == list(range(1, 151))
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith("sweep-")) == \
        sorted([first.name, second.name])          # no third run folder: nothing started over


def test_the_shipped_sample_sweep_opens_with_its_runs():
    from moe_studio.paths import sample_runs_dir
    d = sample_runs_dir() / "sweep-topk-aux"
    if not (d / "sweep.json").exists():
        pytest.skip("sample sweep not present")
    q = SweepQueue.load(d)
    assert q.keys == ["moe.top_k", "moe.aux_loss_coef"] and q.group_key() == "moe.top_k"
    assert [e.state for e in q.entries] == ["done"] * 4
    runs = q.run_paths()
    assert len(runs) == 4 and all(p.parent == sample_runs_dir() for p in runs)
    for e, p in zip(q.entries, runs):
        with open_run(p) as r:
            assert r.status == "finished" and r.meta["sweep"]["values"] == e.values
            assert r.config["moe"]["top_k"] == e.values["moe.top_k"]
    size = sum(f.stat().st_size for p in runs + [d] for f in p.rglob("*") if f.is_file())
    assert size < 3 * 2 ** 20, f"the sample sweep takes {size / 2**20:.1f} MB"


@pytest.mark.slow
def test_parallel_runs_that_many_at_a_time(tmp_path, capsys, monkeypatch):
    """``--parallel 2`` with three runs: the first two train at the same time, the third
    starts only when one of them has ended; all three finish, progress on stderr."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = tmp_path / "c.toml"
    save(tiny_config("par", train__steps=3, train__eval_every=3, train__snapshot_every=3,
                     data__batch_size=2, model__n_layers=1), cfg)
    runs = tmp_path / "runs"
    assert main(["sweep", str(cfg), "--grid", "moe.top_k=1,2,4", "--parallel", "2",
                 "--out", str(runs)]) == 0
    std = capsys.readouterr()
    assert std.out == "" and "2 at a time" in std.err
    (sweep_dir,) = runs.glob("sweep-*")
    q = SweepQueue.load(sweep_dir)
    assert q.parallel == 2 and [e.state for e in q.entries] == ["done"] * 3
    a, b, c = q.entries
    assert b.started < a.ended and a.started < b.ended        # the first two overlapped
    assert c.started >= min(a.ended, b.ended)                 # never three at once
    for e in q.entries:
        with open_run(q.run_path(e)) as r:
            assert r.status == "finished" and r.config["moe"]["top_k"] == e.values["moe.top_k"]


def test_runs_lists_a_sweep_folders_runs_by_path_or_sample_name(capsys, tmp_path):
    from moe_studio.paths import SWEEP_QUEUE_NAME, resolve_run_arg, sample_runs_dir
    from moe_studio.sweep.queue import QUEUE_NAME
    assert SWEEP_QUEUE_NAME == QUEUE_NAME      # paths repeats it to stay stdlib only
    d = sample_runs_dir() / "sweep-topk-aux"
    if not (d / "sweep.json").exists():
        pytest.skip("sample sweep not present")
    assert resolve_run_arg("sweep-topk-aux") == d
    want = [str(p) for p in SweepQueue.load(d).run_paths()]
    for arg in ("sweep-topk-aux", str(d)):
        assert main(["runs", arg, "--json"]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [r["path"] for r in rows] == want          # its runs, in grid order
    (tmp_path / "sweep.json").write_text("{")
    assert main(["runs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "sweep" in err and err.count("\n") == 1
