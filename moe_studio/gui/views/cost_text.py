"""What a run costs, as the Training view's status line says it: training FLOPs per
token, achieved FLOP/s and the measured memory of one step (from the run's meta,
written by the engine: ``flops_per_token``, ``memory_footprint``)."""
from __future__ import annotations

from typing import Any


def si(v: float, unit: str) -> str:
    """``v`` with an SI prefix: 1.23 G<unit>."""
    for p, f in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {p}{unit}"
    return f"{v:.3g} {unit}"


def cost_parts(meta: dict[str, Any] | None, tokens_per_s: float | None = None) -> list[str]:
    """Status-line parts: "<train FLOPs>/token", "<FLOP/s>" (from ``tokens_per_s``), and
    "<MiB> per step (<activations> act.)"; empty for runs recorded before these existed."""
    meta = meta or {}
    parts = []
    fl = meta.get("flops_per_token")
    train = fl.get("train_active") if isinstance(fl, dict) else None
    if isinstance(train, (int, float)):
        parts.append(f"{si(train, 'FLOP')}/token")
        if tokens_per_s:
            parts.append(si(train * tokens_per_s, "FLOP/s"))
    fp = meta.get("memory_footprint")
    if isinstance(fp, dict) and isinstance(fp.get("total"), (int, float)):
        parts.append(f"{fp['total'] / 2 ** 20:.1f} MiB/step "
                     f"({fp.get('activations', 0) / 2 ** 20:.1f} MiB activations)")
    return parts
