"""What the Precision view shows, read from a run store: free of Qt, so it is tested
without a QApplication and the view only draws.

``PrecisionData`` holds one member's headroom records (the ``precision/*`` tensors and
the run meta describing them), its fp16 loss scale and skipped steps, and its
non-finite / back-off events; ``load`` reads a run, ``ingest`` adds what a follower's
poll brought. ``version`` grows with every change, so a view redraws only what is new.
"""
from __future__ import annotations

import numpy as np

from ...store import RunReader

TENSORS = ("precision/absmax", "precision/min_nonzero", "precision/counts",
           "precision/exp_hist", "precision/fractions")
SCALARS = ("precision/loss_scale", "precision/skipped")
EVENTS = ("nonfinite", "loss_scale_backoff")


class PrecisionData:
    """The precision records of one member of one run (see the module docstring)."""

    def __init__(self) -> None:
        self.version = 0
        self.reset()

    def reset(self) -> None:
        self.modules: list[str] = []
        self.kinds: list[str] = []
        self.formats: list[str] = []
        self.fmt_table: dict[str, dict] = {}
        self.edges = np.zeros(0, np.int64)
        self.steps = np.zeros(0, np.int64)
        self.t: dict[str, np.ndarray] = {}
        self.scale = (np.zeros(0, np.int64), np.zeros(0))
        self.skipped = np.zeros(0, np.int64)
        self.events: list[dict] = []
        self.mode, self.headroom_on = "fp32", False
        self.version += 1

    # ------------------------------------------------------------------ reading
    def load(self, reader: RunReader, member: int) -> None:
        """Everything ``reader`` holds for ``member`` (after ``reset``)."""
        cfg = reader.config if isinstance(reader.config, dict) else {}
        prec = cfg.get("precision") or {}
        self.mode = str(prec.get("mode") or "fp32")
        self.headroom_on = bool(prec.get("headroom"))
        self.read_meta(reader)
        self.read_tensors(reader, member)
        self.add_scalars(reader.scalars(list(SCALARS), member=member))
        ev = reader.events(EVENTS)
        self.add_events(ev[ev["member"] == member] if len(ev) else ev)

    def read_meta(self, reader: RunReader) -> bool:
        """The modules, kinds, formats and histogram edges of the records; False while a
        live run has not written them yet."""
        meta = reader.meta
        if not meta.get("precision_modules"):
            reader.refresh()          # a live run writes the meta with its first record
            meta = reader.meta
        mods = [str(s) for s in meta.get("precision_modules") or []]
        if not mods:
            return False
        self.modules = mods
        self.kinds = [str(k) for k in meta.get("precision_kinds") or []]
        self.formats = [str(f) for f in meta.get("precision_formats") or []]
        self.fmt_table = dict(meta.get("precision_format_table") or {})
        self.edges = np.asarray(meta.get("precision_log2_edges") or [], np.int64)
        return True

    def read_tensors(self, reader: RunReader, member: int) -> None:
        steps, first = reader.tensor_series(TENSORS[0], member=member)
        data = {TENSORS[0]: first}
        for name in TENSORS[1:]:
            s, arr = reader.tensor_series(name, member=member)
            if not np.array_equal(s, steps):   # a record still being written: the common steps
                common = np.intersect1d(s, steps)
                keep = np.isin(steps, common)
                steps = steps[keep]
                data = {k: v[keep] for k, v in data.items()}
                arr = arr[np.isin(s, common)]
            data[name] = arr
        self.steps = steps
        self.t = data if steps.size else {}
        self.version += 1

    def ingest(self, reader: RunReader, upd, member: int) -> tuple[bool, bool]:
        """Add what a follower's poll ``upd`` brought; ``(changed, new meta)``."""
        changed = new_meta = False
        if upd.new_tensor_steps:
            if not self.modules:
                new_meta = self.read_meta(reader)
            steps = reader.tensor_steps(TENSORS[0], member=member)
            last = self.steps[-1] if self.steps.size else -1
            new = steps[steps > last]
            if new.size > 64 or not self.t:
                self.read_tensors(reader, member)
                changed = True
            elif new.size:
                changed = self._append_steps(reader, new, member)
        df = upd.scalars
        if len(df):
            df = df[(df["member"] == member) & df["name"].astype(str).isin(SCALARS)]
            changed |= self.add_scalars(df)
        ev = upd.new_events
        if len(ev):
            ev = ev[(ev["member"] == member) & ev["kind"].isin(EVENTS)]
            changed |= self.add_events(ev)
        return changed, new_meta

    def _append_steps(self, reader: RunReader, new: np.ndarray, member: int) -> bool:
        got: dict[str, list] = {}
        for s in new.tolist():
            recs = [reader.tensor(name, s, member=member) for name in TENSORS]
            if any(g is None or g[0] != s for g in recs):
                break                 # not all written yet: the next poll
            for name, g in zip(TENSORS, recs):
                got.setdefault(name, []).append(g[1])
            self.steps = np.append(self.steps, s)
        if not got:
            return False
        for name, arrs in got.items():
            self.t[name] = np.concatenate([self.t[name], np.stack(arrs)])
        self.version += 1
        return True

    def add_scalars(self, df) -> bool:
        if not len(df):
            return False
        names = df["name"].astype(str)
        sc = df[names == SCALARS[0]].sort_values("step")
        sk = df[(names == SCALARS[1]) & (df["value"] > 0)]
        if len(sc):
            s = np.concatenate([self.scale[0], sc["step"].to_numpy(np.int64)])
            v = np.concatenate([self.scale[1], sc["value"].to_numpy(np.float64)])
            o = np.argsort(s, kind="stable")
            self.scale = (s[o], v[o])
        if len(sk):
            self.skipped = np.unique(np.concatenate([self.skipped,
                                                     sk["step"].to_numpy(np.int64)]))
        if len(sc) or len(sk):
            self.version += 1
            return True
        return False

    def add_events(self, ev) -> bool:
        if not len(ev):
            return False
        for row in ev.itertuples(index=False):
            data = row.data if isinstance(row.data, dict) else {}
            self.events.append({"step": int(row.step), "kind": str(row.kind),
                                "message": str(row.message), "data": data})
        self.version += 1
        return True

    # ------------------------------------------------------------------ queries
    def has_data(self) -> bool:
        return bool(self.t) or self.scale[0].size > 0 or bool(self.events)

    def step_index(self, step: int | None) -> int | None:
        """The index of the recorded step nearest ``step`` (None without records)."""
        if self.steps.size == 0 or step is None:
            return None
        return int(np.argmin(np.abs(self.steps - step)))

    def rows(self, module: str | None) -> list[int]:
        """The record rows of ``module``; of every module when it is None or unknown."""
        if module is None or module not in self.modules:
            return list(range(len(self.modules)))
        return [self.modules.index(module)]
