"""``moe-studio bench precision``: what headroom analysis costs, and that it changes nothing.

1. Step time of the default MoE config with ``precision.headroom`` off and on (every
   linear layer, router and expert group, every 10 steps). Both trainers live side by
   side and run in interleaved rounds of 10 steps (off, on, off, on, ...), so a noisy,
   shared machine slows both alike and every "on" round holds exactly one measured
   step; the median round gives the time per step. Budget: overhead <= 10 % on the CPU,
   judged on the bootstrap interval of the per-round ratios (``_common.budget``).
2. The training-loss curve of the same seed with the analysis off and on (measuring
   every step, the strictest case) must be identical: the maximum absolute difference
   is reported and must be exactly 0.

``quick=True`` shrinks the model and the rounds so the whole run takes seconds (a smoke
test of the benchmark, not a measurement).
"""
from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import torch

from ..config import presets
from ..config.schema import ExperimentConfig
from ._common import budget, ratio_ci, timing_config

BUDGET = 0.10          # allowed extra step time with headroom on, as a fraction
EVERY = 10             # headroom cadence timed here (the config default)


def _config(quick: bool, headroom: bool, every: int, steps: int) -> ExperimentConfig:
    c = presets.default()
    c.name = f"bench-precision-{'on' if headroom else 'off'}"
    if quick:
        c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.d_ff = 2, 64, 2, 128
        c.moe.d_expert = 64
        c.data.context, c.data.batch_size = 32, 8
    c.precision.headroom = headroom
    c.precision.headroom_every = every
    return timing_config(c, steps)


def _time_steps(quick: bool, rounds: int, runs_dir: str) -> dict:
    from ..engine.trainer import Trainer

    warmup = 3
    total = warmup + rounds * EVERY
    trainers = {name: Trainer(_config(quick, name == "on", EVERY, total), runs_dir=runs_dir)
                for name in ("off", "on")}
    per_step: dict[str, list[float]] = {name: [] for name in trainers}
    try:
        for tr in trainers.values():
            for _ in range(warmup):
                tr.step()
        for _ in range(rounds):
            for name, tr in trainers.items():
                t0 = time.perf_counter()
                for _ in range(EVERY):
                    tr.step()
                per_step[name].append((time.perf_counter() - t0) / EVERY)
    finally:
        for tr in trainers.values():
            tr.close("stopped")
    return ({name: statistics.median(v) for name, v in per_step.items()}
            | {"device": str(trainers["off"].device),
               "overhead": ratio_ci(per_step["on"], per_step["off"])})


def _loss_curve(quick: bool, headroom: bool, steps: int, runs_dir: str) -> np.ndarray:
    from ..engine.trainer import Trainer
    from ..store import open_run

    tr = Trainer(_config(quick, headroom, 1, steps), runs_dir=runs_dir)
    try:
        for _ in range(steps):
            tr.step()
    finally:
        tr.close("stopped")
    # From the store: the recorded curve is what a user compares.
    with open_run(tr.run_dir) as r:
        df = r.scalars(["train/loss"], member=0).sort_values("step")
    return df["value"].to_numpy(dtype=np.float64)


def run(json_out: bool = True, quick: bool = False) -> dict:
    rounds = 2 if quick else 16
    loss_steps = 4 if quick else 30
    with tempfile.TemporaryDirectory() as runs:
        t = _time_steps(quick, rounds, runs)
        off = _loss_curve(quick, False, loss_steps, runs)
        on = _loss_curve(quick, True, loss_steps, runs)
    overhead_budget = budget(t["overhead"], BUDGET, offset=-1.0)
    overhead = overhead_budget["value"]
    same_len = off.shape == on.shape
    max_diff = float(np.max(np.abs(off - on))) if same_len and off.size else float("nan")
    out = {
        "benchmark": "precision",
        "device": t["device"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": quick,
        "model": "tiny (quick)" if quick else "default MoE (mixtral_top2)",
        "headroom_every": EVERY,
        "steps_per_round": EVERY,
        "rounds": rounds,
        "step_s_headroom_off": round(t["off"], 5),
        "step_s_headroom_on": round(t["on"], 5),
        "headroom_overhead": round(overhead, 4),
        "loss_curve": {"steps": loss_steps, "headroom_every": 1,
                       "max_abs_diff": max_diff,
                       "identical": bool(same_len and np.array_equal(off, on))},
        "headroom_overhead_ci95": overhead_budget["ci95"],
        "budgets": {f"headroom_overhead <= {BUDGET}": overhead_budget,
                    "loss curve identical": bool(same_len and np.array_equal(off, on))},
    }
    if not json_out:
        for k, v in out.items():
            print(f"{k}: {v}")
    return out
