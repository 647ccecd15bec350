"""Per-step MoE statistics on the device, and a buffer that keeps them there and brings
them to the host in batches (one transfer per flush, never a sync per step on CUDA).
The statistics over the host arrays (load CV, max/mean) are ``metrics.routing``'s."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Order of the per-block scalar statistics stacked by ``block_stat_vector``.
BLOCK_STATS = ("entropy", "top1_prob", "logit_absmean", "logit_absmax", "aux_loss", "z_loss")


def block_stat_vector(last) -> torch.Tensor:
    """Stack one MoE block's scalar statistics (``BLOCK_STATS`` order) into a [6] tensor
    on the block's device, without leaving the device."""
    return torch.stack([getattr(last, name).detach().float().reshape(()) for name in BLOCK_STATS])


@dataclass
class PendingStep:
    """Statistics of one member at one step, still on the device."""
    step: int
    member: int
    losses: torch.Tensor            # [5]: lm, aux, z, total, grad_norm
    block_stats: torch.Tensor | None  # [n_blocks, len(BLOCK_STATS)]
    tokens_per_expert: torch.Tensor | None  # [n_blocks, E]
    dropped_per_expert: torch.Tensor | None  # [n_blocks, E]
    bias: torch.Tensor | None = None  # [n_blocks, E] (aux_free router only)
    dropped_per_row: torch.Tensor | None = None  # [n_blocks, B] pairs dropped per sequence
    host: dict = field(default_factory=dict)  # values already on the host (lr, tokens/s, ...)


class StatsBuffer:
    """Collects ``PendingStep`` records and moves them to the host in one transfer."""

    def __init__(self) -> None:
        self.pending: list[PendingStep] = []

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, rec: PendingStep) -> None:
        self.pending.append(rec)

    def drain(self) -> list[dict]:
        """Host-side dicts for every pending record (numpy arrays), oldest first."""
        if not self.pending:
            return []
        recs, self.pending = self.pending, []
        # One flat device tensor per flush: a single device->host copy for the batch.
        parts: list[torch.Tensor] = []
        layout: list[list[tuple[str, tuple[int, ...], int]]] = []
        offset = 0
        for r in recs:
            entries = []
            for name in ("losses", "block_stats", "tokens_per_expert", "dropped_per_expert", "bias",
                         "dropped_per_row"):
                t = getattr(r, name)
                if t is None:
                    continue
                flat = t.detach().float().reshape(-1)
                parts.append(flat)
                entries.append((name, tuple(t.shape), offset))
                offset += flat.numel()
            layout.append(entries)
        host = torch.cat(parts).cpu().numpy() if parts else np.zeros(0, np.float32)
        out = []
        for r, entries in zip(recs, layout):
            d: dict = {"step": r.step, "member": r.member, **r.host}
            for name, shape, off in entries:
                n = int(np.prod(shape)) if shape else 1
                d[name] = host[off:off + n].reshape(shape)
            out.append(d)
        return out
