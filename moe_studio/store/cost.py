"""What a recorded run cost, read back from its store: the figures a report prints.

Everything here is what the engine recorded, nothing is recomputed: FLOPs per token
(run meta ``flops_per_token``, from ``engine.flops.count_flops``), the training FLOPs
of the whole run (the last ``cost/train_flops``), the achieved FLOP/s (the median of
the per-step ``cost/flops_per_s``, as Compare takes the median tokens/s) and the
measured memory of one training step (run meta ``memory_footprint``: parameters,
gradients, optimizer state, activations, in bytes). A run recorded before these
existed has none of them (empty values).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

MEMORY_PARTS = ("params", "grads", "optimizer", "activations")


def run_costs(reader) -> dict[str, Any]:
    """The cost figures of the run open in ``reader`` (a ``RunReader``):
    ``flops_per_token`` (the meta dict or None), ``train_flops`` (FLOPs, NaN if not
    recorded), ``flops_per_s`` (median achieved FLOP/s, NaN), ``flops_per_s_steps``
    (how many steps the median is over) and ``memory`` (the meta dict or None)."""
    meta = reader.meta or {}
    df = reader.scalars(["cost/train_flops", "cost/flops_per_s"], member=-1)
    train = df[df["name"] == "cost/train_flops"].sort_values("step")["value"].to_numpy()
    fps = df[df["name"] == "cost/flops_per_s"]["value"].to_numpy()
    fps = fps[np.isfinite(fps)]
    fl = meta.get("flops_per_token")
    mem = meta.get("memory_footprint")
    return {"flops_per_token": fl if isinstance(fl, dict) else None,
            "train_flops": float(train[-1]) if train.size else math.nan,
            "flops_per_s": float(np.median(fps)) if fps.size else math.nan,
            "flops_per_s_steps": int(fps.size),
            "memory": mem if isinstance(mem, dict) else None}


def _flops(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def cost_text(costs: dict[str, Any]) -> str:
    """One line of ``run_costs``'s figures ("" when the run recorded none): FLOPs as
    whole numbers (two decimals for a fractional expert-choice count), FLOP and FLOP/s
    totals to 6 significant digits, memory in MiB to 3 decimals."""
    parts = []
    fl = costs.get("flops_per_token")
    if fl and isinstance(fl.get("train_active"), (int, float)):
        parts.append(f"train {_flops(fl['train_active'])} FLOP/token (forward "
                     f"{_flops(fl.get('forward_active', math.nan))} active, "
                     f"{_flops(fl.get('forward_total', math.nan))} total)")
    if math.isfinite(costs.get("train_flops", math.nan)):
        parts.append(f"trained {costs['train_flops']:.6g} FLOP")
    if math.isfinite(costs.get("flops_per_s", math.nan)):
        parts.append(f"achieved {costs['flops_per_s']:.6g} FLOP/s "
                     f"(median of {costs['flops_per_s_steps']} steps)")
    mem = costs.get("memory")
    if mem and all(isinstance(mem.get(k), (int, float)) for k in MEMORY_PARTS):
        total = mem.get("total", sum(mem[k] for k in MEMORY_PARTS))
        split = ", ".join(f"{k} {mem[k] / 2 ** 20:.3f}" for k in MEMORY_PARTS)
        parts.append(f"memory of one step {total / 2 ** 20:.3f} MiB: {split} MiB"
                     + (f" ({mem['precision']})" if mem.get("precision") else ""))
    return "cost: " + "  ·  ".join(parts) if parts else ""
