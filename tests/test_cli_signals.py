"""``moe-studio train`` under real signals: SIGTERM or SIGINT stops it cleanly (status,
checkpoint, exit 128 + n); a second signal exits at once and the run reads interrupted
with at most the writer's commit interval of records lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moe_studio.config import dumps
from moe_studio.store import list_runs, open_run

from tiny import tiny_config

ROOT = Path(__file__).resolve().parent.parent


def start_training(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    cfg = tiny_config(train__steps=100_000, train__eval_every=1000, train__snapshot_every=1000)
    (tmp_path / "c.toml").write_text(dumps(cfg))
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "moe_studio", "train", str(tmp_path / "c.toml"),
                             "--out", str(runs), "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        infos = list_runs(runs) if runs.exists() else []
        if infos and (infos[0].last_step or -1) >= 3:
            return proc, infos[0].path
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("training did not start within 120 s")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_cleanly_with_a_checkpoint(sig, tmp_path):
    proc, run = start_training(tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert "Traceback" not in err and f"{signal.Signals(sig).name}: stopping" in err
    assert "stopped:" in out
    with open_run(run) as r:
        assert r.status == "stopped" and r.error is None
        last = r.last_step()
    assert (run / f"checkpoint-{last:07d}.pt").exists() or list(run.glob("checkpoint-*.pt"))


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_the_run_reads_interrupted(tmp_path):
    proc, run = start_training(tmp_path)
    proc.send_signal(signal.SIGINT)
    t_kill = time.time()
    proc.send_signal(signal.SIGTERM)  # before the first stop can finish its step
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err)
    assert "Traceback" not in err and "exiting now" in err
    with open_run(run) as r:
        assert r.status == "interrupted"
        wall = r.scalars()["wall_time"].max()
    # records lost: at most the writer's commit interval (0.4 s) plus a step
    assert t_kill - wall < 1.0, t_kill - wall
