"""``moe-studio bench engine``: training throughput of the real Trainer (store writes
included) for the default dense and MoE configs, the cost of routing statistics, and a
minimal plain-PyTorch GPT training loop of the same size as the reference
(``bench/baseline.py`` says what it contains).

The precision headroom analysis is off here (``moe-studio bench precision`` measures its
cost on its own); routing statistics (at the presets' rate, ``train.stats_every`` = 10,
against the same model with them off) and store writes are on, as in every run.

All four trainers live side by side and take turns in short blocks of steps (plain,
dense, MoE with statistics, MoE without, plain, ...), so a noisy, shared machine slows
them alike; each budget is judged on the per-round ratios and their bootstrap
confidence interval (``_common.budget``), never on one pair of numbers.
"""
from __future__ import annotations

import statistics
import tempfile
import time

import torch

from ..config import presets
from ..engine import expert_kernels, native_moe
from ._common import budget, load_average, ratio_ci, timing_config
from .baseline import PlainLoop

DENSE_VS_PLAIN_MIN = 1.2     # dense trainer tokens/s over the plain loop's (issue goal)
MOE_VS_DENSE_MAX = 1.1       # MoE step over the dense step of equal active parameters
STATS_COST_MAX = 0.03        # routing statistics, as a share of the MoE step


def _configs() -> dict:
    dev = "cpu" if not torch.cuda.is_available() else "auto"

    def dense():
        c = presets.dense_baseline()
        c.precision.headroom = False
        c.train.device = dev
        return c

    def moe(stats: bool):
        c = presets.mixtral_top2()
        c.train.collect_stats = stats
        c.precision.headroom = False
        c.train.device = dev
        return c

    return {"dense": dense(), "moe_stats_on": moe(True), "moe_stats_off": moe(False)}


def run(json_out: bool = True, quick: bool = False) -> dict:
    from ..data import load_corpus
    from ..engine.trainer import Trainer

    block, rounds, warmup = (1, 3, 1) if quick else (5, 24, 5)
    total = warmup + block * rounds
    load_before = load_average()
    corpus = load_corpus("embedded", context=64)
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as runs:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        steppers: dict = {"plain_gpt": PlainLoop(corpus.train_tokens, batch=12, context=64,
                                                 steps=total, device=device)}
        trainers = {name: Trainer(timing_config(cfg, total), runs_dir=runs)
                    for name, cfg in _configs().items()}
        steppers.update(trainers)
        times = {name: [] for name in steppers}
        try:
            for s in steppers.values():
                for _ in range(warmup):
                    s.step()
            for _ in range(rounds):
                for name, s in steppers.items():
                    _sync()
                    t0 = time.perf_counter()
                    for _ in range(block):
                        s.step()
                    _sync()
                    times[name].append((time.perf_counter() - t0) / block)
        finally:
            for tr in trainers.values():
                tr.close("stopped")
    tokens = 12 * 64
    med = {k: statistics.median(v) for k, v in times.items()}
    dense_vs_plain = ratio_ci(times["plain_gpt"], times["dense"])   # tokens/s ratio
    moe_vs_dense = ratio_ci(times["moe_stats_on"], times["dense"])
    stats_cost = ratio_ci(times["moe_stats_on"], times["moe_stats_off"])
    out = {
        "benchmark": "engine",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps_per_block": block, "rounds": rounds,
        "load_avg_1m": [(la or [None])[0] for la in (load_before, load_average())],
        "expert_kernels_run": expert_kernels.kernels_run(),
        "native_routing": native_moe.report(),
        "step_ms": {k: round(1e3 * v, 2) for k, v in med.items()},
        "tokens_per_s": {k: round(tokens / v, 1) for k, v in med.items()},
        "dense_vs_plain_gpt": round(dense_vs_plain["median"], 3),
        "moe_step_over_dense": round(moe_vs_dense["median"], 3),
        "stats_cost_fraction": round(stats_cost["median"] - 1.0, 4),
        "budgets": {
            f"dense_vs_plain_gpt >= {DENSE_VS_PLAIN_MIN}": budget(dense_vs_plain, DENSE_VS_PLAIN_MIN,
                                                                  at_most=False, digits=3),
            f"moe_step_over_dense <= {MOE_VS_DENSE_MAX}": budget(moe_vs_dense, MOE_VS_DENSE_MAX,
                                                                 digits=3),
            f"stats_cost_fraction <= {STATS_COST_MAX}": budget(stats_cost, STATS_COST_MAX,
                                                               offset=-1.0),
        },
    }
    if not json_out:
        for k, v in out.items():
            print(f"{k}: {v}")
    return out


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
