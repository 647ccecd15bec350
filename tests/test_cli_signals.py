"""``moe-studio train`` under real signals: SIGTERM or SIGINT stops it cleanly (status,
checkpoint, exit 128 + n); a second signal, or kill -9, ends it at once and the run
reads interrupted with at most the writer's commit interval of records lost."""
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


# Records lost per run (seconds between the kill and the newest stored record), printed
# at the end of a run of this file: the README's figure comes from them.
LOST: list[tuple[str, float]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_lost(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not LOST:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line("records lost: " + ", ".join(f"{k} {s:.2f} s" for k, s in LOST))


@pytest.mark.slow
@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGTERM),
                                     (signal.SIGINT, signal.SIGINT),   # Ctrl+C twice
                                     (signal.SIGTERM, signal.SIGTERM),
                                     (signal.SIGKILL,)],
                         ids=["INT+TERM", "INT+INT", "TERM+TERM", "KILL"])
def test_a_second_signal_or_kill_9_exits_at_once_and_the_run_reads_interrupted(signals, tmp_path):
    proc, run = start_training(tmp_path)
    said = ""
    for i, sig in enumerate(signals):
        if i and sig == signals[0]:
            # the kernel merges a signal into the same one still pending: the second
            # Ctrl+C is sent once the first was taken (and before its stop can finish)
            while "stopping" not in said:
                line = proc.stderr.readline()
                assert line, f"the first signal was not taken: {said!r}"
                said += line
        proc.send_signal(sig)
    t_kill = time.time()
    out, err = proc.communicate(timeout=30)
    err = said + err
    assert proc.returncode == (128 + signals[-1] if len(signals) > 1 else -signal.SIGKILL), \
        (proc.returncode, err)
    assert "Traceback" not in err
    if len(signals) > 1:
        assert "exiting now" in err
    with open_run(run) as r:
        assert r.status == "interrupted" and r.error is None
        steps = r.scalars()
        wall = steps["wall_time"].max()
        loss = steps[steps["name"] == "train/loss"]["step"].tolist()
    assert loss == list(range(loss[0], loss[0] + len(loss)))  # what was stored has no gap
    lost = t_kill - wall
    LOST.append(("+".join(signal.Signals(s).name[3:] for s in signals), lost))
    # the writer commits every 0.4 s: at most that plus a step and a commit is lost (the
    # bound leaves room for a loaded machine; the figures printed are the measure)
    assert lost < 1.0, lost
