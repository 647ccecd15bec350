"""``moe-studio bench ensemble``: the two ensemble budgets.

1. Step time: one optimizer step of the 4-member ``bagging_ensemble`` preset (members
   batched into one wide forward/backward, and the per-member loop for comparison)
   against the same preset with one member, all through the real Trainer (store writes
   and the precision monitor included, evaluation pushed past the end). Budget: the
   batched 4-member step costs <= 4x the single member's step.
2. Metrics time: every agreement metric (``agreement.ensemble_metrics``) on 4 members x
   64k validation tokens x V = 256. Budget: <= 200 ms. Measured through the fused native
   kernel on every core (what the trainer uses), on one thread, and through the torch
   pass, side by side. The combination rules (fit on one half, report on the other) are
   timed as well, without a budget.

Configurations run in interleaved rounds (A, B, C, A, B, C, ...) so a noisy, shared
machine slows all of them alike; medians are reported, with CPU time next to wall time
(on an oversubscribed machine wall time includes waiting for a core).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from ..config import presets
from ._common import load_average, timing_config


def _step_times(cfg, steps: int, runs_dir: str, batched: bool = True) -> tuple[float, float]:
    """Median wall and CPU seconds per Trainer.step() after 3 warm-up steps."""
    from ..engine.trainer import Trainer

    tr = Trainer(timing_config(cfg, steps + 3), runs_dir=runs_dir)
    tr.ensemble.batched = batched and tr.ensemble.wide is not None
    try:
        for _ in range(3):
            tr.step()
        wall, cpu = [], []
        for _ in range(steps):
            t0, c0 = time.perf_counter(), time.process_time()
            tr.step()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    finally:
        tr.close("stopped")
    return statistics.median(wall), statistics.median(cpu)


def _fake_logp(m: int, n: int, v: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Members that share a common signal and differ by noise, like a real ensemble."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, v, generator=g) * 2.0
    lp = torch.log_softmax(base[None] + torch.randn(m, n, v, generator=g), dim=-1)
    y = torch.distributions.Categorical(logits=base).sample()
    return lp.contiguous(), y


def run(json_out: bool = True, quick: bool = False, threads: int | None = 1) -> dict:
    """Both budgets. ``threads``: torch intra-op threads for the measurement (default 1:
    on a small shared machine a second OpenMP thread spin-waits for a busy core and makes
    the 4-member step 5-20x slower, which measures the machine, not the code; None keeps
    torch's default)."""
    from ..engine.agreement import ensemble_metrics
    from ..engine.combine import evaluate_rules

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _run(json_out, quick, ensemble_metrics, evaluate_rules)
    finally:
        torch.set_num_threads(threads_before)


def _run(json_out, quick, ensemble_metrics, evaluate_rules) -> dict:

    steps = 1 if quick else 10
    rounds = 1 if quick else 3
    n_tokens = 4096 if quick else 65536
    members = 4

    def preset(m: int):
        c = presets.bagging_ensemble()
        c.ensemble.members = m
        c.train.device = "cpu" if not torch.cuda.is_available() else "auto"
        return c

    times: dict[str, list[tuple[float, float]]] = {"single": [], "batched": [], "loop": []}
    with tempfile.TemporaryDirectory() as runs:
        for _ in range(rounds):
            times["single"].append(_step_times(preset(1), steps, runs))
            times["batched"].append(_step_times(preset(members), steps, runs, batched=True))
            times["loop"].append(_step_times(preset(members), steps, runs, batched=False))
    step_ms = {k: round(1000 * statistics.median(w for w, _ in v), 2) for k, v in times.items()}
    step_cpu_ms = {k: round(1000 * statistics.median(c for _, c in v), 2) for k, v in times.items()}

    lp, y = _fake_logp(members, n_tokens, 256)
    cores = os.cpu_count() or 1
    variants = {"native": dict(backend="native", threads=cores),
                "native_1_thread": dict(backend="native", threads=1),
                "torch": dict(backend="torch")}
    from ..engine import _native
    if not _native.available():
        variants = {"torch": dict(backend="torch")}
    for kw in variants.values():                      # warm-up (first-call overheads)
        ensemble_metrics(lp[:, :1024], y[:1024], **kw)
    m_wall: dict[str, list[float]] = {k: [] for k in variants}
    m_cpu: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(2 if quick else 5):                # interleaved rounds
        for name, kw in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            ensemble_metrics(lp, y, **kw)
            m_wall[name].append(time.perf_counter() - t0)
            m_cpu[name].append(time.process_time() - c0)
    t0 = time.perf_counter()
    evaluate_rules(lp, y)
    rules_ms = 1000 * (time.perf_counter() - t0)
    metrics_by = {k: round(1000 * statistics.median(v), 1) for k, v in m_wall.items()}
    metrics_cpu_by = {k: round(1000 * statistics.median(v), 1) for k, v in m_cpu.items()}
    best = "native" if "native" in variants else "torch"
    metrics_ms = metrics_by[best]

    ratio = step_ms["batched"] / step_ms["single"]
    out = {
        "benchmark": "ensemble",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg": load_average(),
        "preset": "bagging_ensemble", "members": members,
        "steps_per_round": steps, "rounds": rounds,
        "step_ms": step_ms, "step_cpu_ms": step_cpu_ms,
        "ensemble_vs_single": round(ratio, 3),
        "loop_vs_single": round(step_ms["loop"] / step_ms["single"], 3),
        "ensemble_vs_single_cpu": round(step_cpu_ms["batched"] / step_cpu_ms["single"], 3),
        "metrics_tokens": n_tokens, "metrics_vocab": 256,
        "metrics_backend": best, "metrics_threads": cores if best == "native" else 1,
        "native_library": _native.library_name(),
        "metrics_ms": round(metrics_ms, 1),
        "metrics_cpu_ms": metrics_cpu_by[best],
        "metrics_ms_by_backend": metrics_by, "metrics_cpu_ms_by_backend": metrics_cpu_by,
        "rules_ms": round(rules_ms, 1),
        "budgets": {"ensemble_vs_single <= 4.0": ratio <= 4.0,
                    "metrics_ms <= 200 (64k tokens)": metrics_ms <= 200.0 if not quick else None},
    }
    if not json_out:
        for k, v in out.items():
            print(f"{k}: {v}")
    return out
