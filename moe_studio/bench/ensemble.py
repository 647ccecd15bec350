"""``moe-studio bench ensemble``: the two ensemble budgets.

1. Step time: one optimizer step of the 4-member ``bagging_ensemble`` preset (members
   batched into one wide forward/backward, and the per-member loop for comparison)
   against the same preset with one member, all through the real Trainer (store writes
   and the precision monitor included, evaluation pushed past the end). Budget: the
   batched 4-member step costs <= 4x the single member's step, at torch's default
   thread count (what ``moe-studio train`` and the app use). Also measured on one
   thread, where the step is bound by arithmetic and batching saves only overheads.
   The three trainers live side by side and take turns step by step (single, batched,
   loop, single, ...), so a noisy, shared machine slows all three alike.
2. Metrics time: every agreement metric (``agreement.ensemble_metrics``) on 4 members x
   64k validation tokens x V = 256. Budget: <= 200 ms. Measured through the fused native
   kernel on every core (what the trainer uses), on one thread, and through the torch
   pass, side by side. The combination rules (fit on one half, report on the other) are
   timed as well, without a budget.

The metric backends run in interleaved rounds (A, B, C, A, B, C, ...) for the same
reason. Medians are reported, with CPU time next to wall time (on an oversubscribed
machine wall time includes waiting for a core).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from ..config import presets
from ._common import load_average, timing_config


def _interleaved_steps(configs: dict, steps: int, runs_dir: str) -> dict[str, tuple[float, float]]:
    """``configs``: name -> (config, batched). Median wall and CPU seconds per
    Trainer.step() of each, after 3 warm-up steps, the trainers taking turns step by step."""
    from ..engine.trainer import Trainer

    trainers = {}
    try:
        for name, (cfg, batched) in configs.items():
            tr = trainers[name] = Trainer(timing_config(cfg, steps + 3), runs_dir=runs_dir)
            tr.ensemble.batched = batched and tr.ensemble.wide is not None
        for _ in range(3):
            for tr in trainers.values():
                tr.step()
        wall: dict[str, list[float]] = {k: [] for k in trainers}
        cpu: dict[str, list[float]] = {k: [] for k in trainers}
        for _ in range(steps):
            for name, tr in trainers.items():
                t0, c0 = time.perf_counter(), time.process_time()
                tr.step()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    finally:
        for tr in trainers.values():
            tr.close("stopped")
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in trainers}


def _fake_logp(m: int, n: int, v: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Members that share a common signal and differ by noise, like a real ensemble."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, v, generator=g) * 2.0
    lp = torch.log_softmax(base[None] + torch.randn(m, n, v, generator=g), dim=-1)
    y = torch.distributions.Categorical(logits=base).sample()
    return lp.contiguous(), y


def run(json_out: bool = True, quick: bool = False) -> dict:
    """Both budgets. Step times at torch's default thread count (the budget) and on one
    thread; the metrics' torch pass on one thread (the native kernel picks its own)."""
    from ..engine.agreement import ensemble_metrics
    from ..engine.combine import evaluate_rules

    threads_before = torch.get_num_threads()
    try:
        return _run(json_out, quick, ensemble_metrics, evaluate_rules, threads_before)
    finally:
        torch.set_num_threads(threads_before)


def _step_figures(times: dict[str, tuple[float, float]]) -> dict:
    wall = {k: round(1000 * w, 2) for k, (w, _) in times.items()}
    cpu = {k: round(1000 * c, 2) for k, (_, c) in times.items()}
    return {"step_ms": wall, "step_cpu_ms": cpu,
            "ensemble_vs_single": round(wall["batched"] / wall["single"], 3),
            "loop_vs_single": round(wall["loop"] / wall["single"], 3),
            "ensemble_vs_single_cpu": round(cpu["batched"] / cpu["single"], 3)}


def _run(json_out, quick, ensemble_metrics, evaluate_rules, default_threads: int) -> dict:

    steps = 2 if quick else 30
    n_tokens = 4096 if quick else 65536
    members = 4

    def preset(m: int):
        c = presets.bagging_ensemble()
        c.ensemble.members = m
        c.train.device = "cpu" if not torch.cuda.is_available() else "auto"
        return c

    figures = {}
    with tempfile.TemporaryDirectory() as runs:
        for threads in dict.fromkeys((default_threads, 1)):
            torch.set_num_threads(threads)
            figures[threads] = _step_figures(_interleaved_steps(
                {"single": (preset(1), True), "batched": (preset(members), True),
                 "loop": (preset(members), False)}, steps, runs))
    torch.set_num_threads(1)

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

    main = figures[default_threads]
    ratio = main["ensemble_vs_single"]
    out = {
        "benchmark": "ensemble",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": default_threads,
        "load_avg": load_average(),
        "preset": "bagging_ensemble", "members": members,
        "steps": steps,
        **main,
        "one_thread": figures[1],
        "metrics_tokens": n_tokens, "metrics_vocab": 256,
        "metrics_backend": best, "metrics_threads": cores if best == "native" else 1,
        "native_library": _native.library_name(),
        "metrics_ms": round(metrics_ms, 1),
        "metrics_cpu_ms": metrics_cpu_by[best],
        "metrics_ms_by_backend": metrics_by, "metrics_cpu_ms_by_backend": metrics_cpu_by,
        "rules_ms": round(rules_ms, 1),
        "budgets": {f"ensemble_vs_single <= 4.0 ({default_threads} threads)": ratio <= 4.0,
                    "metrics_ms <= 200 (64k tokens)": metrics_ms <= 200.0 if not quick else None},
    }
    if not json_out:
        for k, v in out.items():
            print(f"{k}: {v}")
    return out
