"""Recording a run of several ranks into one store.

Every rank runs the same recording code at the same steps, because the numbers are
combined across ranks (collectives every rank must join); only rank 0 holds a real
:class:`~moe_studio.store.RunWriter`, the others a :class:`NullWriter`. What the store
gets is the run's global picture: losses averaged over the ranks' shards (equal
shards, so that is the loss of the global batch), tokens and drops per expert summed,
router histograms summed, precision headroom combined (max of maxima, min of minima,
counts summed), and per-rank throughput as ``rank/<r>/tokens_per_s`` and
``rank/<r>/step_time_s`` (stragglers show there). Routing probes and evaluations
need no combining: every rank routes the same text through the same weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist

from ..recorder import Recorder
from ..stats import BLOCK_STATS, PendingStep

_MAX_STATS = [i for i, name in enumerate(BLOCK_STATS) if name == "logit_absmax"]


class NullWriter:
    """The writer of a rank that does not write: takes every record, keeps none."""

    def __init__(self, run_dir: str | Path, run_id: str):
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.failure: str | None = None
        self.closed = False
        self.failing = False

    def _drop(self, *args: Any, **kwargs: Any) -> None:
        return None

    add_scalars = add_tensor = add_histogram = add_snapshot = add_event = set_meta = _drop
    flush = _drop

    def close(self, status: str = "finished", error: str | None = None) -> None:
        self.closed = True


class DistributedRecorder(Recorder):
    """A :class:`Recorder` whose records are combined across the ranks of the world."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.world = dist.get_world_size()
        for mon in self.monitors:
            if mon is not None:
                # The monitor hands its host records to its own write(); combining them
                # there keeps the monitor a one-process object.
                mon.collect = _combined(mon.collect, self._dev)

    @property
    def _dev(self) -> torch.device:
        return collective_device()

    def reduce(self, rec: PendingStep) -> PendingStep:
        losses = rec.losses.clone()
        dist.all_reduce(losses)
        losses[:4] /= self.world            # lm, aux, z, total: means of equal shards
        losses[4] = rec.losses[4]           # the grad norm is already the global one
        rec.losses = losses
        if rec.block_stats is not None:
            stats = rec.block_stats.clone()
            mx = stats[:, _MAX_STATS].clone()
            dist.all_reduce(stats)
            stats /= self.world
            dist.all_reduce(mx, op=dist.ReduceOp.MAX)
            stats[:, _MAX_STATS] = mx
            rec.block_stats = stats
            for name in ("tokens_per_expert", "dropped_per_expert"):
                t = getattr(rec, name).clone()
                dist.all_reduce(t)
                setattr(rec, name, t)
        if getattr(rec, "dropped_per_row", None) is not None:
            # [blocks, rows]: each rank's rows of the global batch, in rank order (the
            # order the one-process batch holds them in)
            mine = rec.dropped_per_row.contiguous()
            each = [torch.empty_like(mine) for _ in range(self.world)]
            dist.all_gather(each, mine)
            rec.dropped_per_row = torch.cat(each, dim=-1)
        return rec

    def scalars(self, step: int, values: Mapping[str, float], member: int = 0) -> None:
        if member == -1 and "tokens_per_s" in values:
            step_tokens = self.config.data.batch_size * self.config.data.context
            values = with_rank_throughput(values, self._dev, self.world, step_tokens)
            if "tokens" in values:
                values["tokens"] = float(values["tokens"]) * self.world
        super().scalars(step, values, member=member)

    def histogram(self, step: int, name: str, edges: np.ndarray, counts: np.ndarray,
                  member: int = 0) -> None:
        t = torch.as_tensor(np.asarray(counts, dtype=np.int64), device=self._dev)
        dist.all_reduce(t)
        super().histogram(step, name, edges, t.cpu().numpy(), member=member)


def collective_device() -> torch.device:
    """Where the tensors of a collective live: nccl combines only CUDA tensors, gloo
    CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


def with_rank_throughput(values: Mapping[str, float], device: torch.device, world: int,
                         step_tokens: int) -> dict[str, float]:
    """``values`` (a step's run-wide scalars, ``tokens_per_s`` this rank's) with every
    rank's ``rank/<r>/tokens_per_s`` and ``rank/<r>/step_time_s`` (each rank trains
    ``step_tokens`` tokens a step) and the run's ``tokens_per_s``: every rank's tokens
    at the pace of the slowest (collective)."""
    values = dict(values)
    mine = torch.tensor([float(values["tokens_per_s"])], dtype=torch.float64, device=device)
    each = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(each, mine)
    for r, t in enumerate(each):
        tps = float(t)
        values[f"rank/{r}/tokens_per_s"] = tps
        values[f"rank/{r}/step_time_s"] = step_tokens / max(tps, 1e-9)
    values["tokens_per_s"] = world * min(float(t) for t in each)
    return values


def _combined(collect, device: torch.device):
    """``collect`` whose headroom records are those of the whole world."""

    def run():
        records = collect()
        for r in records:
            r.absmax = _reduce(r.absmax, dist.ReduceOp.MAX, -np.inf, device)
            r.min_nonzero = _reduce(r.min_nonzero, dist.ReduceOp.MIN, np.inf, device)
            weight = r.counts[..., 0].astype(np.float64)[..., None, None]
            frac = np.nan_to_num(r.fractions.astype(np.float64)) * weight
            frac = _reduce(frac, dist.ReduceOp.SUM, 0.0, device)
            r.counts = _reduce(r.counts, dist.ReduceOp.SUM, 0, device)
            total = r.counts[..., 0].astype(np.float64)[..., None, None]
            with np.errstate(invalid="ignore", divide="ignore"):
                r.fractions = np.where(total > 0, frac / total, np.nan).astype(np.float32)
            r.exp_hist = _reduce(r.exp_hist, dist.ReduceOp.SUM, 0, device)
        return records

    return run


def _reduce(a: np.ndarray, op, empty, device: torch.device) -> np.ndarray:
    """``a`` combined over the world by ``op``; NaN (nothing measured) stands out of
    the way as ``empty`` and comes back as NaN where every rank had nothing."""
    a = np.asarray(a)
    floating = np.issubdtype(a.dtype, np.floating)
    x = np.where(np.isnan(a), empty, a) if floating else a
    t = torch.as_tensor(np.ascontiguousarray(x), device=device)
    dist.all_reduce(t, op=op)
    out = t.cpu().numpy().astype(a.dtype)
    if floating and np.isinf(empty):
        out = np.where(np.isinf(out) & (np.sign(out) == np.sign(empty)), np.nan, out)
    return out
