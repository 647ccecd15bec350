"""The app's Train on 2 local processes: the engine loop drives the ranks through torch's
launcher; pause holds every rank between steps (longer than a collective may wait),
resume continues, stop ends the run stopped with a checkpoint."""
from __future__ import annotations

import os
import threading
import time

from moe_studio.engine.loop import ThreadControl, train_loop
from moe_studio.engine.parallel.app_run import LaunchedRun
from moe_studio.store import open_run

from tiny import tiny_config


def test_pause_resume_and_stop_reach_both_ranks(tmp_path, monkeypatch):
    here = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(here), here]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = tiny_config(name="app", train__steps=100000, train__eval_every=100000,
                      train__snapshot_every=100000, parallel__processes=2,
                      parallel__timeout_s=5.0)
    control = ThreadControl()
    events: list[tuple] = []
    result: list[str] = []

    def emit(kind, *args):
        events.append((kind, args))

    worker = threading.Thread(target=lambda: result.append(
        train_loop(lambda: LaunchedRun(cfg, tmp_path), control, emit)))
    worker.start()
    try:
        def progress_step() -> int:
            steps = [a[0].step for k, a in events if k == "progress"]
            return max(steps) if steps else 0

        deadline = time.monotonic() + 120
        while progress_step() < 3 and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        ready = next(a[0] for k, a in events if k == "ready")
        assert ready["device"] == "2 local processes"
        control.pause()
        while ("state", ("paused",)) not in events and time.monotonic() < deadline:
            time.sleep(0.05)
        run = open_run(ready["run_dir"])
        time.sleep(1.0)                     # the ranks finish the step under way
        run.refresh()
        held = run.last_step()
        time.sleep(6.0)                     # longer than parallel.timeout_s
        run.refresh()
        assert run.last_step() == held, "a rank kept training while paused"
        assert run.status == "running"
        control.resume()
        while run.last_step() < held + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            run.refresh()
        assert run.last_step() >= held + 2, "the ranks did not resume"
        control.stop()
        worker.join(timeout=120)
    finally:
        control.stop()
        worker.join(timeout=120)
    assert result == ["stopped"], events[-3:]
    run.refresh()
    assert run.status == "stopped"
    step = run.last_step()
    assert (tmp_path / ready["run_id"] / f"checkpoint-{step:07d}.pt").exists()
    run.close()
