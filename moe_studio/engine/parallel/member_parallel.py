"""Member parallelism: the members of an ensemble spread over the ranks.

With ``ensemble.members = M`` on ``W`` ranks, rank ``r`` trains members
``[r * M/W, (r + 1) * M/W)`` (:meth:`Layout.member_ids`), each exactly as one process
would: its own seed, batch stream and bootstrap sample, the whole ``data.batch_size``
batch, no data or expert sharding. A contiguous block rather than every W-th member
because the ranks' blocks, gathered in rank order, are then the members in order: a
gather is the one-process stack of member outputs, with no reordering. Only methods
whose members are independent can spread (seeds, bagging); a snapshot or boosting
member starts from, or is weighted by, the members before it, so their members would
wait on each other (``config.validate.member_spread_problem`` refuses them).

Training needs no communication. What crosses the ranks:

- **records**: rank 0 writes the store. Another rank keeps its members' records in a
  :class:`RelayWriter` under their ensemble-wide ids and hands them to rank 0 at the end
  of every step (one ``gather_object``), which writes them: the store holds every
  member's series, as one process writes them. Records of the whole run (member -1,
  run metadata, events of the run such as checkpoints) are rank 0's alone.
- **evaluation**: the members' log-probabilities of each validation batch and of the
  probe text are all-gathered (:meth:`MemberSpread.gather`), so combination rules and
  agreement metrics see the whole ensemble, as in one process; rank 0 records them.
- **throughput**: each rank's tokens/s, as for data parallelism.
- **checkpoints**: every member's state gathered to rank 0, written in the one-process
  format (:func:`gathered_members`), so the run continues in one process or on another
  number of ranks.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..recorder import Recorder
from .layout import Layout
from .recording import collective_device, with_rank_throughput


class MemberSpread:
    """This rank's share of an ensemble spread over the world (see the module doc)."""

    def __init__(self, layout: Layout, rank: int):
        self.ids = layout.member_ids(rank)
        self.total = layout.members
        self.world = layout.world
        self.writes = rank == 0

    def gather(self, local: Tensor) -> Tensor:
        """``local`` [k, ...] (this rank's members' outputs) -> [M, ...], every
        member's in member order (collective: every rank calls it with equal shapes)."""
        local = local.contiguous()
        each = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(each, local)
        return torch.cat(each)


class RelayWriter:
    """The writer of a rank other than 0: keeps its members' records, numbered with
    their ensemble-wide ids (local member ``m`` is member ``first + m``), until
    :meth:`take`. Records of the whole run (member -1) and run metadata are dropped:
    rank 0 records those."""

    def __init__(self, run_dir: str | Path, run_id: str, first: int):
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.first = first
        self.failure: str | None = None
        self.closed = False
        self.failing = False
        self._kept: list[tuple[str, tuple, dict]] = []

    def _keep(self, name: str, args: tuple, member: int, **kw: Any) -> None:
        if member >= 0:
            self._kept.append((name, args, {"member": self.first + member, **kw}))

    def add_scalars(self, step: int, values: Mapping[str, float], member: int = 0,
                    wall_time: float | None = None) -> None:
        self._keep("add_scalars", (step, {k: float(v) for k, v in values.items()}), member,
                   wall_time=time.time() if wall_time is None else wall_time)

    def add_tensor(self, step: int, name: str, array: np.ndarray, member: int = 0) -> None:
        self._keep("add_tensor", (step, name, np.array(array)), member)

    def add_histogram(self, step: int, name: str, edges: np.ndarray, counts: np.ndarray,
                      member: int = 0) -> None:
        self._keep("add_histogram", (step, name, np.array(edges), np.array(counts)), member)

    def add_snapshot(self, step: int, name: str, arrays: Mapping[str, np.ndarray],
                     meta: Mapping[str, Any] | None = None, member: int = 0) -> None:
        self._keep("add_snapshot", (step, name, {k: np.array(a) for k, a in arrays.items()},
                                    dict(meta or {})), member)

    def add_event(self, step: int, kind: str, message: str, data: Mapping[str, Any] | None = None,
                  member: int = -1) -> None:
        self._keep("add_event", (step, kind, message, None if data is None else dict(data)), member)

    def set_meta(self, **kv: Any) -> None:
        return None

    def flush(self) -> None:
        return None

    def take(self) -> list[tuple[str, tuple, dict]]:
        kept, self._kept = self._kept, []
        return kept

    def close(self, status: str = "finished", error: str | None = None) -> None:
        self.closed = True


class MemberRecorder(Recorder):
    """The recorder of a rank of a member-parallel run: its members' records as one
    process makes them (nothing is combined: each member lives on one rank), relayed
    to rank 0 at the end of every step (:meth:`end_step`)."""

    def __init__(self, *args, spread: MemberSpread, **kwargs):
        super().__init__(*args, **kwargs)
        self.spread = spread
        self.rank = dist.get_rank()

    def event(self, step: int, kind: str, message: str, data: Mapping[str, Any] | None = None,
              member: int | None = None) -> None:
        if member is None and not self.spread.writes:
            return   # an event of the whole run: rank 0 records it
        super().event(step, kind, message, data, member=member)

    def scalars(self, step: int, values: Mapping[str, float], member: int = 0) -> None:
        if member == -1 and "tokens_per_s" in values:
            per = len(self.spread.ids)
            step_tokens = self.config.data.batch_size * self.config.data.context * per
            values = with_rank_throughput(values, collective_device(), self.spread.world, step_tokens)
            # every rank does the same work on its own members
            for k in ("cost/flops_per_s", "cost/train_flops"):
                if k in values:
                    values[k] = float(values[k]) * self.spread.world
        super().scalars(step, values, member=member)

    def end_step(self) -> None:
        """Hand the other ranks' records of the step to rank 0, which writes them
        (collective)."""
        mine = self.writer.take() if isinstance(self.writer, RelayWriter) else []
        box: list | None = [None] * self.spread.world if self.spread.writes else None
        dist.gather_object(mine, box, dst=0)
        if box is not None:
            for kept in box[1:]:
                for name, args, kw in kept:
                    getattr(self.writer, name)(*args, **kw)

    def close(self, status: str, error: str | None = None) -> None:
        if status != "failed":   # a failed rank would leave the others waiting here
            self.end_step()
        super().close(status, error=error)


def _on_cpu(obj: Any) -> Any:
    """``obj`` (nested dicts, lists, tuples of tensors and plain values) with every
    tensor copied to the CPU, for a ``gather_object`` that unpickles on rank 0."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def gathered_members(spread: MemberSpread, items: list) -> list | None:
    """Every rank's per-member ``items`` (this rank's members, in order), all members
    in order, on rank 0; None on the other ranks (collective)."""
    box: list | None = [None] * spread.world if spread.writes else None
    dist.gather_object(_on_cpu(items), box, dst=0)
    return None if box is None else [x for part in box for x in part]
