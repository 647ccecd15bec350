"""Live follow: read only what is newer than what a view already has.

Every table's rows carry increasing ids (SQLite rowids; the writer only appends), so a
follower remembers the largest id it has seen per table. A poll is one small query for
the current maxima and the run row; only tables whose maximum moved are read, each
bounded above by the maximum just seen so a commit landing mid-poll is read whole on
the next poll, never half. In WAL mode this never blocks or is blocked by the writer.

A run continued from a checkpoint (:mod:`.attempts`) replaces what it had recorded past
that step: rows a follower has already handed out may no longer be part of the run's
history. A poll that sees a new attempt begin therefore starts the follower over and
hands out the whole history as the reader now reads it, marked ``restarted``: a view
drops what it holds for the run and takes the update as all there is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from . import frames
from .attempts import META_KEY as ATTEMPTS_KEY
from .reading import reading

if TYPE_CHECKING:
    from .reader import RunReader

_TABLES = ("scalar_blocks", "tensors", "histograms", "snapshots", "events")
# The attempts meta value only ever grows (one entry per continuation), so its length
# tells whether a new attempt began since the last poll.
_POLL_SQL = ("SELECT " + ", ".join(f"coalesce((SELECT max(id) FROM {t}), 0)" for t in _TABLES)
             + f", coalesce((SELECT length(value) FROM meta WHERE key = '{ATTEMPTS_KEY}'), 0)"
             + ", status, ended, error, heartbeat, pid, host FROM run WHERE id = 1")
_N = len(_TABLES)


@dataclass
class Update:
    """What one :meth:`Follower.poll` found.

    ``scalars``: new scalar rows (same columns and order as ``RunReader.scalars()``);
    ``new_tensor_steps`` / ``new_histograms`` / ``new_snapshots``: whether any such
    record was added (re-read what you show with the reader); ``new_events``: new event
    rows (as ``RunReader.events()``); ``status``: the run's status now;
    ``last_step``: the largest scalar step seen so far (-1 before the first);
    ``restarted``: the run was continued from a checkpoint since the previous poll, so
    rows handed out before may have been replaced: this update holds the whole history
    (every scalar and event the reader now reads) and replaces what the caller has.
    """
    scalars: pd.DataFrame
    new_tensor_steps: bool
    new_histograms: bool
    new_snapshots: bool
    new_events: pd.DataFrame
    status: str
    last_step: int
    restarted: bool = False

    @property
    def changed(self) -> bool:
        """True if any record was added (status changes are not counted)."""
        return bool(len(self.scalars) or self.new_tensor_steps or self.new_histograms
                    or self.new_snapshots or len(self.new_events))


class Follower:
    """A read position in one run; make it with ``RunReader.follower()``."""

    def __init__(self, reader: "RunReader", from_start: bool = True):
        self._reader = reader
        row = reader._one(_POLL_SQL)
        self._attempts = row[_N]    # the length of the attempts meta value read last
        if from_start:
            self._seen = (0,) * _N
            self.last_step = -1
        else:
            self._seen = tuple(row[:_N])
            self.last_step = reader.last_step()

    def poll(self) -> Update:
        """Everything added since the previous poll. Costs well under a millisecond
        when nothing is new."""
        with reading(self._reader.db_path):
            return self._poll()

    def _poll(self) -> Update:
        r = self._reader
        row = r._one(_POLL_SQL)
        now = row[:_N]
        r._set_run_row(row[_N + 1:])
        restarted = row[_N] != self._attempts and any(self._seen)
        self._attempts = row[_N]
        if restarted:   # a new attempt: hand out the whole history again
            self._seen, self.last_step = (0,) * _N, -1
        seen_s, seen_t, seen_h, seen_p, seen_e = self._seen
        now_s, now_t, now_h, now_p, now_e = now

        scalars = r._scalars_between(seen_s, now_s) if now_s > seen_s else frames.empty_scalars()
        events = frames.event_frame(r._event_rows(seen_e, now_e) if now_e > seen_e else [])
        if len(scalars):
            self.last_step = max(self.last_step, int(scalars["step"].max()))
        self._seen = now
        return Update(scalars=scalars, new_tensor_steps=now_t > seen_t, new_histograms=now_h > seen_h,
                      new_snapshots=now_p > seen_p, new_events=events, status=r._status_now(),
                      last_step=self.last_step, restarted=restarted)
