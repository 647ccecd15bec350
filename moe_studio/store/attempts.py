"""Attempts of a run: a run continued from a checkpoint is written again from that step.

The store keeps every row of every attempt (nothing is deleted: a crashed attempt's
records stay inspectable with ``all_attempts=True``), and readers show the history that
led to the final model. When a writer begins a new attempt (:func:`begin_attempt`) it
records, in the run's meta key ``attempts``, the step it restarts from and the largest
row id of every table at that moment. A row is *superseded* when a later attempt began
after it was written (its id is at most that attempt's boundary) and restarted at a
step before the row's. Every reader query leaves superseded rows out, so every view,
live or not, shows one monotone history without a zig-zag back to the restart.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Sequence

TABLES = ("scalar_blocks", "tensors", "histograms", "snapshots", "events")
META_KEY = "attempts"


@dataclass(frozen=True)
class Attempt:
    """A continuation: it restarted at ``from_step`` (the checkpoint's step), after
    ``redo`` steps recorded by earlier attempts past that step; ``upto`` maps each table
    to its largest row id when the attempt began; ``started`` is epoch seconds."""
    from_step: int
    started: float
    upto: dict[str, int]
    redo: int = 0
    total_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"from_step": self.from_step, "started": self.started, "upto": dict(self.upto),
                "redo": self.redo, "total_steps": self.total_steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Attempt":
        return cls(int(d["from_step"]), float(d["started"]),
                   {str(k): int(v) for k, v in dict(d["upto"]).items()},
                   int(d.get("redo", 0)), d.get("total_steps"))


def parse_attempts(text: str | None) -> list[Attempt]:
    """The ``attempts`` meta value (JSON text, None when the run was never continued)."""
    if not text:
        return []
    return [Attempt.from_dict(d) for d in json.loads(text)]


def begin_attempt(con: sqlite3.Connection, from_step: int, *, redo: int = 0,
                  total_steps: int | None = None) -> Attempt:
    """Record a new attempt restarting at ``from_step`` (inside the caller's
    transaction). The ``latest`` rows past ``from_step`` go: they belong to the
    replaced history, and the new attempt writes them again as it gets there."""
    upto = {t: int(con.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0])
            for t in TABLES}
    att = Attempt(int(from_step), time.time(), upto, int(redo), total_steps)
    row = con.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    history = json.loads(row[0]) if row else []
    history.append(att.to_dict())
    con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value", (META_KEY, json.dumps(history)))
    con.execute("DELETE FROM latest WHERE step > ?", (int(from_step),))
    return att


def superseded_sql(attempts: Sequence[Attempt], table: str) -> tuple[str, tuple]:
    """``" AND NOT (...)"`` leaving out ``table``'s superseded rows, and its parameters
    (empty for a run that was never continued)."""
    if not attempts:
        return "", ()
    clause = " OR ".join("(id <= ? AND step > ?)" for _ in attempts)
    params: tuple = ()
    for a in attempts:
        params += (a.upto.get(table, 0), a.from_step)
    return f" AND NOT ({clause})", params


def eras(attempts: Sequence[Attempt], table: str, after_id: int,
         upto_id: int | None) -> list[tuple[int, int | None, int | None]]:
    """The id range ``(after_id, upto_id]`` of ``table`` cut where attempts began:
    ``[(lo, hi, max_step)]``, where rows with ``lo < id <= hi`` are kept only up to
    ``max_step`` (None: all kept). For tables whose rows cannot be filtered in SQL (a
    scalar block holds many steps)."""
    cuts = sorted({a.upto.get(table, 0) for a in attempts})
    out: list[tuple[int, int | None, int | None]] = []
    lo = after_id
    for cut in cuts + [None]:
        hi = cut if upto_id is None or (cut is not None and cut < upto_id) else upto_id
        if cut is not None and cut <= lo:
            continue
        later = [a.from_step for a in attempts if a.upto.get(table, 0) >= (hi if hi is not None else 1 << 62)]
        out.append((lo, hi, min(later) if later else None))
        if hi is None or hi == upto_id:
            break
        lo = hi
    return out
