"""What the views read from any run, without Qt: its MoE blocks (``moe_blocks_of``) and
the snapshots a view scrubs through, decoded once (``SnapshotCache``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...store import RunFileError, RunReader


def expert_names(meta: Any, n: int) -> list[str]:
    """The views' names of a run's ``n`` experts: e0 ... e{n-1}, or the names its meta
    gives (``expert_names``: an inspected checkpoint whose router also chooses classes
    that are not experts, ZAYA1's "skip" or LongCat-Flash's zero-computation "id0" ...).
    Names that do not fit (another count, not text) are not used."""
    names = meta.get("expert_names") if isinstance(meta, dict) else None
    if isinstance(names, list) and len(names) == n and all(isinstance(x, str) and x for x in names):
        return list(names)
    return [f"e{e}" for e in range(n)]


def moe_blocks_of(reader: RunReader) -> list[int]:
    """The MoE block indices of a run: from its meta, else from what it recorded."""
    blocks = reader.meta.get("moe_blocks")
    if blocks:
        return [int(b) for b in blocks]
    found = set()
    for name in reader.histogram_names():
        if name.startswith("router_probs/L"):
            found.add(int(name.rsplit("L", 1)[1]))
    for name in reader.scalar_names():
        if name.startswith("moe/L") and name.count("/") == 2:
            found.add(int(name.split("/")[1][1:]))
    return sorted(found)


# The arrays of a routing probe snapshot that the Routing and Experts views read.
PROBE_ARRAYS = ("tokens", "domains", "probs", "topk_idx", "topk_weight")


class SnapshotCache:
    """Decoded snapshots of one series (``routing/probe`` of one member) by step; the
    ``size`` most recently used stay decoded, so scrubbing back and forth re-reads
    nothing."""

    def __init__(self, reader: RunReader, name: str = "routing/probe", member: int = 0,
                 size: int = 32, required: tuple[str, ...] = ()):
        from collections import OrderedDict

        self._reader, self.name, self.member, self._size = reader, name, member, size
        self.required = required  # arrays the view reads: a snapshot without one is damaged
        self._cache: "OrderedDict[int, Any]" = OrderedDict()
        self._steps = reader.snapshot_steps(name, member=member)

    def refresh_steps(self) -> np.ndarray:
        """Re-read the recorded steps (after a poll found new snapshots)."""
        self._steps = self._reader.snapshot_steps(self.name, member=self.member)
        return self._steps

    def steps(self) -> np.ndarray:
        return self._steps

    def nearest_step(self, step: int | None) -> int | None:
        if self._steps.size == 0:
            return None
        if step is None:
            return int(self._steps[-1])
        return int(self._steps[int(np.argmin(np.abs(self._steps - int(step))))])

    def get(self, step: int | None):
        """The snapshot at the recorded step nearest ``step`` (None: the latest), or None."""
        s = self.nearest_step(step)
        if s is None:
            return None
        snap = self._cache.get(s)
        if snap is None:
            snap = self._reader.snapshot(self.name, s, member=self.member)
            if snap is None:
                return None
            missing = [k for k in self.required if k not in snap.arrays]
            if missing:
                raise RunFileError(self._reader.db_path, f"the {self.name} snapshot at step {s:,} "
                                                         f"has no {', '.join(missing)} (damaged)")
            self._cache[s] = snap
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(s)
        return snap
