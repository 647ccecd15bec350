"""Run-store budgets (``moe-studio bench store [--json]``).

1. Load 100,000 steps x 50 scalar series into a DataFrame: <= 1 s.
2. A follow poll that finds nothing new: <= 5 ms.
3. Writer cost per training step (40 scalars + 3 float32 [4, 8] tensors, committed at
   the cadence a 30 ms step gives, all on the calling thread; best of three repeats):
   <= 1 % of that 30 ms step. In a real run the commits happen on the writer's own
   thread, so the trainer's thread pays only ``writer_add_us_per_step``.

The large run is written through :class:`RunWriter` with a commit every 13 steps, as
a real run of 30 ms steps committing every 0.4 s would, so the database has the
same number of blocks a real run of that length has.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..store import RunWriter, open_run
from ..store.writer import COMMIT_INTERVAL_S

STEP_MS = 30.0  # a default-experiment CPU step is ~20-40 ms
STEPS_PER_COMMIT = max(1, round(COMMIT_INTERVAL_S * 1000 / STEP_MS))
BUDGET_LOAD_S = 1.0
BUDGET_POLL_MS = 5.0
BUDGET_WRITER_PCT = 1.0


def _series_names(n: int) -> list[str]:
    base = ["entropy", "top1_prob", "logit_absmean", "logit_absmax", "dropped_frac", "aux_loss",
            "z_loss", "load_cv", "load_max_over_mean"]
    names = ["train/loss", "train/aux_loss", "train/z_loss", "train/total_loss", "train/grad_norm"]
    layer = 0
    while len(names) < n:
        names += [f"moe/L{layer}/{b}" for b in base]
        layer += 1
    return names[:n]


def _write_large_run(runs_dir: Path, steps: int, series: int) -> Path:
    names = _series_names(series)
    rng = np.random.default_rng(0)
    table = rng.standard_normal((256, series)).tolist()
    t0 = time.time()
    # commit_interval very long: this bench commits at the chosen cadence itself
    w = RunWriter.create(runs_dir, name="bench-load", config={}, config_toml="", commit_interval=3600)
    for step in range(steps):
        w.add_scalars(step, dict(zip(names, table[step % 256])), member=0,
                      wall_time=t0 + step * STEP_MS / 1000)
        if (step + 1) % STEPS_PER_COMMIT == 0:
            w.flush()
    w.close("finished")
    return w.run_dir


def _writer_cost(runs_dir: Path, steps: int) -> tuple[float, float]:
    """(µs per step with commits at the 30 ms-step cadence, µs per step of add_* alone)."""
    host = {"lr": 1e-3, "tokens_per_s": 1e4, "tokens": 0.0, "elapsed_s": 0.0}
    member = dict(zip(_series_names(36), np.linspace(0, 1, 36).tolist()))  # 4 + 36 = 40 scalars
    arrays = [np.random.default_rng(i).random((4, 8), dtype=np.float32) for i in range(3)]
    tnames = ["moe/tokens_per_expert", "moe/dropped_per_expert", "moe/bias"]
    w = RunWriter.create(runs_dir, name="bench-writer", config={}, config_toml="", commit_interval=3600)
    add_time = 0.0
    t_all = time.perf_counter()
    for step in range(steps):
        t = time.perf_counter()
        w.add_scalars(step, host, member=-1)
        w.add_scalars(step, member, member=0)
        for name, a in zip(tnames, arrays):
            w.add_tensor(step, name, a, member=0)
        add_time += time.perf_counter() - t
        if (step + 1) % STEPS_PER_COMMIT == 0:
            w.flush()
    w.flush()
    total = time.perf_counter() - t_all
    w.close("finished")
    return total / steps * 1e6, add_time / steps * 1e6


def run(json_out: bool = True, quick: bool = False) -> dict:
    """Measure the three store budgets and return them as a flat JSON-ready dict
    (seconds ``*_s``, milliseconds ``*_ms``, microseconds ``*_us_*``, percent ``*_pct*``;
    ``*_ok`` against each budget). Without ``json_out`` also print a short summary.
    ``quick`` loads 5,000 steps instead of 100,000 and times 300 writer steps (tests)."""
    steps, series = (5_000, 50) if quick else (100_000, 50)
    writer_steps = 300 if quick else 3_000
    with tempfile.TemporaryDirectory(prefix="moe-studio-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        run_dir = _write_large_run(tmp, steps, series)
        write_s = time.perf_counter() - t

        loads = []
        with open_run(run_dir) as r:
            for _ in range(3):
                t = time.perf_counter()
                df = r.scalars()
                loads.append(time.perf_counter() - t)
                rows = len(df)
                del df  # one 5-million-row frame in memory at a time
            f = r.follower(from_start=False)
            polls = []
            for _ in range(200):
                t = time.perf_counter()
                f.poll()
                polls.append(time.perf_counter() - t)
        db_mb = (run_dir / "run.sqlite").stat().st_size / 2**20
        # best of three: the machine is shared, and the least-disturbed repeat is the
        # closest to the writer's own cost (the way timeit reports)
        us_step, add_us_step = min(_writer_cost(tmp, writer_steps) for _ in range(3))

    load_s = min(loads)  # best of three, as for the writer; the median is reported too
    poll_ms = statistics.median(polls) * 1e3
    pct = us_step / (STEP_MS * 1e3) * 100
    res = {
        "quick": quick,
        "load_steps": steps, "load_series": series, "load_rows": rows,
        "load_s": round(load_s, 4), "load_median_s": round(statistics.median(loads), 4),
        "load_first_s": round(loads[0], 4),
        "load_budget_s": BUDGET_LOAD_S, "load_ok": load_s <= BUDGET_LOAD_S,
        "db_mb": round(db_mb, 1), "write_large_run_s": round(write_s, 2),
        "poll_idle_ms": round(poll_ms, 4), "poll_idle_max_ms": round(max(polls) * 1e3, 3),
        "poll_budget_ms": BUDGET_POLL_MS, "poll_ok": poll_ms <= BUDGET_POLL_MS,
        "writer_scalars_per_step": 40, "writer_tensors_per_step": 3,
        "writer_steps_per_commit": STEPS_PER_COMMIT,
        "writer_us_per_step": round(us_step, 1), "writer_add_us_per_step": round(add_us_step, 1),
        "writer_step_ms": STEP_MS, "writer_pct_of_step": round(pct, 3),
        "writer_budget_pct": BUDGET_WRITER_PCT, "writer_ok": pct <= BUDGET_WRITER_PCT,
    }
    res["ok"] = bool(res["load_ok"] and res["poll_ok"] and res["writer_ok"])
    if not json_out:  # with json_out the caller (``moe-studio bench --json``) prints the dict
        print(f"load {rows:,} scalars ({steps:,} steps x {series}): {load_s:.3f} s "
              f"(budget {BUDGET_LOAD_S} s) {'ok' if res['load_ok'] else 'OVER'}")
        print(f"follow poll, nothing new: {poll_ms:.3f} ms (budget {BUDGET_POLL_MS} ms) "
              f"{'ok' if res['poll_ok'] else 'OVER'}")
        print(f"writer: {us_step:.0f} us/step = {pct:.2f} % of a {STEP_MS:.0f} ms step "
              f"(budget {BUDGET_WRITER_PCT} %) {'ok' if res['writer_ok'] else 'OVER'}")
    return res


if __name__ == "__main__":
    print(json.dumps(run(json_out=True), indent=2))
