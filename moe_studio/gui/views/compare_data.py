"""What a comparison of runs reads from the store, free of Qt: one ``ComparedRun`` per
run (its reader, follower and scalar rows of its latest attempt), the x of its curves on
each axis, and the grouping of runs by config keys.

The Compare view draws these, and the Ensemble view's "Compare runs" tab reads its runs
through the same ``ComparedRun``, so the two agree on what a run's validation loss,
tokens and parameters are (resumed runs: the history of their last attempt).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ...store import Follower, RunReader
from ...store import compare as C

KEY_JOIN = " + "   # a grouping by several config keys at once: "moe.top_k + moe.aux_loss_coef"
_LAYER = re.compile(r"^moe/L\d+/")


@dataclass
class ComparedRun:
    """One compared run: its store handles and every scalar row read so far."""

    index: int
    path: Path
    reader: RunReader
    follower: Follower
    name: str
    label: str
    status: str
    config: dict
    meta: dict
    raw: pd.DataFrame = field(default_factory=pd.DataFrame)   # every row read so far
    rows: dict = field(default_factory=dict)   # by_name index of latest_attempt(raw)
    series: dict = field(default_factory=dict)  # scalar name -> series_arrays (cache)
    _start: float | None = None                 # start() (cache)

    @classmethod
    def of(cls, index: int, path: Path, reader: RunReader, follower: Follower) -> "ComparedRun":
        name = reader.name or path.name
        return cls(index=index, path=path, reader=reader, follower=follower, name=name,
                   label=name, status=reader.status,
                   config=reader.config if isinstance(reader.config, dict) else {},
                   meta=dict(reader.meta or {}))

    def metric(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``store.compare.series_arrays`` of scalar ``name``: (step, value, wall) [S]."""
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = C.series_arrays(self.rows, name)
        return s

    def value_at(self, name: str, step: int | None) -> float:
        """``name`` recorded at exactly ``step`` (None: its last value), NaN if none."""
        s, v, _ = self.metric(name)
        if not s.size:
            return math.nan
        if step is None:
            return float(v[-1])
        i = np.flatnonzero(s == step)
        return float(v[i[-1]]) if i.size else math.nan

    def ingest(self, df: pd.DataFrame) -> None:
        self.raw = df if not len(self.raw) else pd.concat([self.raw, df], ignore_index=True)
        self.rows = C.by_name(C.latest_attempt(self.raw))
        self.series = {}
        self._start = None

    def apply(self, upd: Any) -> bool:
        """Take in a follower poll's update (status, scalars); True if anything changed."""
        changed = False
        if upd.status and upd.status != self.status:
            self.status, changed = upd.status, True
            self.reader.refresh()      # a run that ended may have added to its meta
            self.meta = dict(self.reader.meta or {})
        restarted = getattr(upd, "restarted", False)
        if restarted:   # continued from a checkpoint: the update is the whole history
            self.raw = pd.DataFrame()
        if restarted or len(upd.scalars):
            self.ingest(upd.scalars)
            changed = True
        return changed

    def start(self) -> float:
        """Wall time of the run's first record (NaN before any)."""
        if self._start is None:
            walls = [r[3][0] for r in self.rows.values() if r[3].size]
            self._start = float(np.nanmin(walls)) if walls else math.nan
        return self._start

    def close(self) -> None:
        self.reader.close()


def label_duplicates(runs: Sequence[ComparedRun]) -> None:
    """A re-run keeps its name: runs sharing one are told apart by their run id."""
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.label = f"{r.name} ({r.reader.run_id})"


def x_of(runs: Sequence[ComparedRun], r: ComparedRun, s: tuple[np.ndarray, ...],
         mode: str) -> np.ndarray:
    """The x of series ``s`` of run ``r`` on axis ``mode`` (wall time counts from the
    first start among ``runs``)."""
    if mode == C.X_TOKENS:
        return C.x_of(s, mode, tokens=r.metric("tokens"))
    if mode == C.X_FLOPS:
        return C.x_of(s, mode, flops=r.metric("cost/train_flops"))
    if mode == C.X_WALL:
        origin = np.nanmin([q.start() for q in runs] or [math.nan])
        return C.x_of(s, mode, origin=origin)
    return C.x_of(s, mode, run_start=r.start())


def groups(runs: Sequence[ComparedRun], key: str | None) -> list[tuple[str, list[int]]]:
    """``[(value, [run indices])]`` of the runs grouped by config ``key`` (several keys
    joined by ``KEY_JOIN``: one group per combination); [] without a key."""
    if key is None:
        return []
    keys = key.split(KEY_JOIN)
    configs = [C.flatten_config(r.config) for r in runs]
    if len(keys) == 1:
        return C.group_runs([c.get(key) for c in configs])
    return C.group_runs([", ".join(f"{k.rsplit('.', 1)[-1]}={C.value_text(c.get(k))}"
                                   for k in keys) for c in configs])


def group_label(key: str | None, value: str, n_runs: int) -> str:
    """A group's name in the legend: ``"top_k = 2  (3 runs)"``."""
    runs = f"({n_runs} run{'s' if n_runs != 1 else ''})"
    if KEY_JOIN in (key or ""):
        return f"{value}  {runs}"      # the value names its keys: "top_k=2, aux_loss_coef=0"
    return f"{(key or '').rsplit('.', 1)[-1]} = {value or '—'}  {runs}"


def group_choices(differing: Sequence[str]) -> list[tuple[str, str]]:
    """``[(text, key)]`` of the groupings offered for config keys ``differing``: each key,
    and every key but the seed at once (a sweep's grid points, each a group whose seeds
    make its band) when there are two or more."""
    out = [(k, k) for k in differing]
    combined = [k for k in differing if k != "train.seed"]
    if len(combined) >= 2:
        out.append((f"all {len(combined)} keys at once", KEY_JOIN.join(combined)))
    return out


def metric_names(runs: Sequence[ComparedRun]) -> list[str]:
    """Every scalar the runs recorded, per-layer names folded to ``moe/L*/...``."""
    names: set[str] = set()
    for r in runs:
        names.update(_LAYER.sub("moe/L*/", n) for n in r.rows)
    return sorted(names)
