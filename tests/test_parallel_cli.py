"""``moe-studio train`` on several processes: the --nproc launcher, torchrun running the
same command unchanged, a consolidated checkpoint that resumes in one process, and a
rank killed mid-run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from moe_studio.config import dumps
from moe_studio.engine.probe import load_model, route_tokens
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run

from tiny import tiny_config

HERE = Path(__file__).resolve().parent


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(HERE.parent)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))


def only_run(folder: Path):
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0], open_run(runs[0])


def losses(run) -> dict[int, float]:
    t = run.scalars(["train/loss"], member=0)
    return dict(zip(t.step.tolist(), t.value.tolist()))


def test_nproc_trains_on_two_ranks_and_resumes_in_one_process(tmp_path):
    over = dict(train__steps=8, train__checkpoint_every=4, train__eval_every=4,
                train__snapshot_every=4, moe__capacity_factor=1.0,
                moe__capacity_priority="token_order")
    (tmp_path / "c.toml").write_text(dumps(tiny_config(name="ep", parallel__expert=2, **over)))
    p = subprocess.run([sys.executable, "-m", "moe_studio", "train", "c.toml", "--nproc", "2",
                        "--out", "out"], cwd=tmp_path, env=env(), capture_output=True, text=True,
                       timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("finished: 8 steps") == 1, p.stdout    # rank 0 speaks for both
    run_dir, run = only_run(tmp_path / "out")
    assert run.status == "finished"
    assert run.meta["world_size"] == 2 and run.meta["parallel_expert"] == 2
    assert run.config["parallel"]["data"] == "1"
    ckpt = run_dir / "checkpoint-0000004.pt"
    assert ckpt.exists()

    # The Routing view's loader, in one process: every expert is there, and the probe
    # routes as the run itself recorded it at its last step.
    model, _, loaded = load_model(run_dir)
    assert loaded.step == 8 and model.blocks[0].ffn.w1.shape[0] == 4
    snap = run.snapshot("routing/probe", 8)
    routed = route_tokens(model, snap.arrays["tokens"], 16)
    np.testing.assert_array_equal(routed["topk_idx"], snap.arrays["topk_idx"])

    # one process, the same global batch (4 x 2 ranks), all the experts
    one = tiny_config(name="one", data__batch_size=8, **over)
    ref = Trainer(one, runs_dir=tmp_path / "ref")
    while not ref.done:
        ref.step()
    ref.close("finished")
    resumed = Trainer(one, runs_dir=tmp_path / "resumed")
    resumed.load_checkpoint(ckpt)                 # every expert, optimizer moments included
    assert resumed.step_count == 4
    while not resumed.done:
        resumed.step()
    resumed.close("finished")
    want = losses(open_run(ref.run_dir))
    got_dist, got_resumed = losses(run), losses(open_run(resumed.run_dir))
    np.testing.assert_allclose([got_dist[s] for s in range(1, 9)], [want[s] for s in range(1, 9)],
                               rtol=2e-4)
    np.testing.assert_allclose([got_resumed[s] for s in range(5, 9)],
                               [want[s] for s in range(5, 9)], rtol=2e-4)


def test_a_killed_rank_ends_the_run_failed_naming_it(tmp_path):
    cfg = tiny_config(name="kill", train__steps=200, parallel__timeout_s=20.0)
    (tmp_path / "c.toml").write_text(dumps(cfg))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2", "-m", "moe_studio", "train", "c.toml",
                        "--out", "out"], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(env(), MOE_STUDIO_TEST_KILL_RANK="1:3"), timeout=120)
    took = time.monotonic() - t0
    assert p.returncode != 0
    assert took < 60, f"the surviving rank took {took:.0f} s to end"
    _, run = only_run(tmp_path / "out")
    assert run.status == "failed", (run.status, p.stderr[-2000:])
    assert "rank 1 said nothing" in run.error, run.error
    assert max(losses(run)) >= 3                  # what was recorded before is kept


def test_sigterm_to_the_launcher_stops_every_rank_after_one_step(tmp_path):
    cfg = tiny_config(name="stop", train__steps=100000, train__eval_every=100000,
                      train__snapshot_every=100000)
    (tmp_path / "c.toml").write_text(dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "moe_studio", "train", "c.toml", "--nproc", "2",
                             "--out", "out"], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:   # until the ranks have trained a few steps
            runs = list((tmp_path / "out").glob("*/run.sqlite"))
            if runs and len(losses(open_run(runs[0].parent))) >= 3:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir, run = only_run(tmp_path / "out")
    assert run.status == "stopped", (run.status, err[-2000:])
    step = max(losses(run))
    assert (run_dir / f"checkpoint-{step:07d}.pt").exists()   # both ranks stopped after it
    assert f"stopped: {step} steps" in out
