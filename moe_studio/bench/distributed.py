"""``moe-studio bench distributed``: what torch.distributed costs and gives here.

- Data parallel: the same small MoE model trained by ``moe-studio train --nproc N`` at
  1 and 2 local ranks (gloo on the CPU, nccl where the ranks have GPUs); per-rank
  tokens/s is the median of each rank's recorded ``rank/<r>/tokens_per_s`` (one
  process: its ``tokens_per_s``), the run's tokens/s their sum.
- Expert parallel: forward + backward of one MoE layer spread over 2 ranks, and the
  share of it spent inside its two all-to-alls (each way).

On a machine with fewer cores than ranks x threads the ranks share cores, and the
figures say so (``cores``): two ranks on two cores cannot beat one process by much.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import load_average, timing_config


def _env() -> dict:
    # one thread per rank: the ranks are the parallelism
    return dict(os.environ, OMP_NUM_THREADS="1")


def _data_parallel(nproc: int, steps: int, quick: bool) -> dict:
    from ..config import ExperimentConfig, save
    from ..store import open_run

    cfg = ExperimentConfig(name=f"bench-dp{nproc}")
    cfg.data.context, cfg.data.batch_size = (32, 4) if quick else (64, 8)
    cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads = 2, (32 if quick else 128), 4
    cfg.model.d_ff = 4 * cfg.model.d_model
    cfg.moe.n_experts = 8
    cfg.train.device = "cpu"
    cfg.precision.headroom = False
    timing_config(cfg, steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        save(cfg, path)
        cmd = [sys.executable, "-m", "moe_studio", "train", str(path), "--quiet",
               "--nproc", str(nproc), "--out", str(Path(tmp) / "runs")]
        p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"{nproc} ranks failed: {(p.stderr or p.stdout)[-600:]}")
        run_dir = next(d for d in (Path(tmp) / "runs").iterdir() if d.is_dir())
        run = open_run(run_dir)
        try:
            def median(name: str) -> float:
                t = run.scalars([name], member=-1).sort_values("step")
                t = t[t.step > 2]   # past the first steps' warm-up
                return statistics.median(t["value"].tolist())

            if nproc == 1:
                per_rank = [median("tokens_per_s")]
            else:
                per_rank = [median(f"rank/{r}/tokens_per_s") for r in range(nproc)]
        finally:
            run.close()
    return {"ranks": nproc, "per_rank_tokens_per_s": [round(v, 1) for v in per_rank],
            "total_tokens_per_s": round(sum(per_rank), 1),
            "global_batch": cfg.data.batch_size * nproc, "steps": steps}


def _expert_parallel(quick: bool) -> dict:
    tokens, d, experts, rounds = (256, 32, 8, 5) if quick else (2048, 128, 8, 15)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "moe_studio.bench.distributed_worker", str(tokens), str(d), str(experts),
           str(rounds)]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"expert-parallel layer failed: {(p.stderr or p.stdout)[-600:]}")
    line = next(x for x in p.stdout.splitlines() if x.startswith("{"))
    return {"tokens_per_rank": tokens, "d_model": d, "n_experts": experts, "top_k": 2,
            **json.loads(line)}


def run(json_out: bool = False, quick: bool = False, steps: int | None = None) -> dict:
    import torch

    steps = steps or (5 if quick else 30)
    out = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpus": torch.cuda.device_count(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_before": load_average(),
        "data_parallel": [_data_parallel(n, steps, quick) for n in (1, 2)],
        "expert_parallel": _expert_parallel(quick),
        "load_after": load_average(),
    }
    one, two = out["data_parallel"]
    out["two_rank_speedup"] = round(two["total_tokens_per_s"] / one["total_tokens_per_s"], 2)
    if not json_out:
        for r in out["data_parallel"]:
            print(f"{r['ranks']} rank(s): per rank {r['per_rank_tokens_per_s']} tok/s, "
                  f"total {r['total_tokens_per_s']:,.0f} tok/s")
        ep = out["expert_parallel"]
        print(f"expert-parallel layer: {ep['layer_ms']} ms fwd+bwd, all-to-all "
              f"{100 * ep['all_to_all_share']:.0f}% of it")
    return out
