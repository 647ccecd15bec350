"""The per-rank throughput of a distributed run (``rank/<r>/tokens_per_s``, recorded
by rank 0 for every rank) as series of the Training view's throughput plot, so a
straggler shows as the one low curve next to the run's total. One-process runs record
none, and the plot shows only the total."""
from __future__ import annotations

import re

MAX_RANKS = 256   # the series names the view listens for
_RANK = re.compile(r"^rank/(\d+)/tokens_per_s$")


def rank_series_specs() -> list[tuple[str, str, bool]]:
    """(scalar name, legend label, per-member?) of every rank's tokens/s."""
    return [(f"rank/{r}/tokens_per_s", f"rank {r}", False) for r in range(MAX_RANKS)]


def rank_of(name: str) -> int | None:
    """The rank a per-rank series belongs to; None for any other scalar."""
    m = _RANK.match(name)
    return int(m.group(1)) if m else None
