"""Run store across processes: follow a run another process is writing, survive kill -9,
and keep the store free of torch and Qt."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import moe_studio
from moe_studio.store import open_run

pytestmark = pytest.mark.skipif(os.name != "posix", reason="kill -9 and pid checks are POSIX")

REPO = Path(moe_studio.__file__).resolve().parent.parent

# The child prints "RUN <folder>" once, "FLUSHED <step>" after each flush() returned (so
# every record up to that step is committed), and "DONE" after close().
CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from moe_studio.store import RunWriter

    runs, mode, steps, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    w = RunWriter.create(runs, name="child-" + mode, config={"train": {"steps": steps}},
                         config_toml="")
    print("RUN", w.run_dir, flush=True)
    for s in range(steps):
        w.add_scalars(s, {"train/loss": 1.0 / (s + 1), "odd": float("nan") if s % 2 else float("inf")})
        w.add_scalars(s, {"lr": s * 1e-4}, member=-1)
        w.add_tensor(s, "t", np.full((2, 3), s, np.float32))
        if s % 5 == 4:
            w.add_event(s, "note", f"step {s}", {"s": s})
        if mode == "kill" and s % 3 == 2:
            w.flush()
            print("FLUSHED", s, flush=True)
        time.sleep(pause)
    if mode == "kill":
        time.sleep(60)  # wait here to be killed
    w.close("finished")
    print("DONE", flush=True)
""")


def start_child(tmp_path: Path, mode: str, steps: int, pause: float) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), mode, str(steps),
                             str(pause)], stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().split(maxsplit=1)
    assert line and line[0] == "RUN", line
    return proc, Path(line[1].strip())


def expected_loss(steps) -> np.ndarray:
    return 1.0 / (np.asarray(steps) + 1)


def test_follow_while_another_process_writes(tmp_path):
    n = 60  # ~1.8 s of writing: about four background commits (every 0.4 s)
    proc, run_dir = start_child(tmp_path, "follow", steps=n, pause=0.03)
    try:
        r = open_run(run_dir)
        f = r.follower()
        parts, events, statuses, growing_polls = [], [], [], 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            u = f.poll()
            statuses.append(u.status)
            if len(u.scalars):
                parts.append(u.scalars)
                growing_polls += u.status == "running"
            if len(u.new_events):
                events.append(u.new_events)
            if u.status != "running":
                break
            time.sleep(0.05)
        assert proc.wait(timeout=30) == 0 and proc.stdout.read().strip() == "DONE"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    assert statuses[0] == "running" and statuses[-1] == "finished"
    assert growing_polls >= 2  # rows arrived over several polls while the child was writing
    got = pd.concat(parts, ignore_index=True)
    got["name"] = got["name"].astype(str)
    got = got.sort_values(["name", "member", "step"], ignore_index=True)
    full = r.scalars()
    full["name"] = full["name"].astype(str)
    pd.testing.assert_frame_equal(got, full)  # polls added up to exactly the whole run
    loss = full[full["name"] == "train/loss"]
    assert loss["step"].tolist() == list(range(n))
    assert np.array_equal(loss["value"].to_numpy(), expected_loss(range(n)))
    assert pd.concat(events)["step"].tolist() == list(range(4, n, 5))
    assert r.tensor_steps("t").tolist() == list(range(n))
    r.close()


def test_kill_9_keeps_every_committed_record_and_reads_interrupted(tmp_path):
    proc, run_dir = start_child(tmp_path, "kill", steps=10_000, pause=0.005)
    try:
        flushed = -1
        while flushed < 30:
            line = proc.stdout.readline()
            assert line.startswith("FLUSHED"), line
            flushed = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    r = open_run(run_dir)
    assert r.status == "interrupted" and r.ended is None
    df = r.scalars()
    loss = df[df["name"] == "train/loss"]
    n = len(loss)
    assert n >= flushed + 1  # everything flushed (maybe a little more) is there ...
    assert loss["step"].tolist() == list(range(n))  # ... with no gap
    assert np.array_equal(loss["value"].to_numpy(), expected_loss(range(n)))
    odd = df[df["name"] == "odd"]["value"].to_numpy()[: flushed + 1]
    assert np.isnan(odd[1::2]).all() and np.isinf(odd[0::2]).all()
    lr = df[(df["name"] == "lr") & (df["member"] == -1)]
    assert lr["step"].tolist()[: flushed + 1] == list(range(flushed + 1))
    steps = r.tensor_steps("t")
    assert steps.tolist()[: flushed + 1] == list(range(flushed + 1))
    assert r.tensor("t", 17)[1][1, 2] == 17
    assert r.events()["step"].tolist()[: (flushed + 1) // 5] == [4 + 5 * i for i in range((flushed + 1) // 5)]
    r.close()

    from moe_studio.store import list_runs
    (info,) = list_runs(tmp_path / "runs")
    assert info.status == "interrupted" and info.last_step >= flushed and info.error is None


def test_store_imports_neither_torch_nor_qt():
    code = ("import sys; import moe_studio.store, moe_studio.store.export, moe_studio.store.cli, "
            "moe_studio.bench.store; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'pyqtgraph')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
