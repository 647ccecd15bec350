"""What the Experts view shows, read from a run store: free of Qt, so it is tested
without a QApplication and the view only draws.

``ExpertsData`` holds one member's expert-load records (``moe/tokens_per_expert``,
``moe/dropped_per_expert``, ``moe/bias``: one ``[n_blocks, E]`` tensor per recorded
step) and the balance series derived from them (load CV, max / mean, dropped %, dead
experts, load / uniform); ``load`` reads a run, ``ingest`` adds the steps a live run
wrote since. ``version`` grows with every change, so a view redraws only what is new.
"""
from __future__ import annotations

import numpy as np

from ...metrics import routing as R
from ...store import RunReader
from .run_data import expert_names

TENSORS = ("moe/tokens_per_expert", "moe/dropped_per_expert", "moe/bias")
DEFAULT_DEAD_WINDOW = 50
_REREAD_AFTER = 64    # more new steps than this: read the whole series again


class ExpertsData:
    """The expert-load records of one member of one run (see the module docstring)."""

    def __init__(self, dead_window: int = DEFAULT_DEAD_WINDOW) -> None:
        self.version = 0
        self.dead_window = int(dead_window)   # steps without tokens that make an expert dead
        self.reset()

    def reset(self) -> None:
        self.blocks: list[int] = []
        self.meta: dict = {}
        self.n_experts = 0
        self.router = ""
        self.dropless = False    # capacity_factor 0: no token is ever dropped
        self.steps = np.zeros(0, np.int64)
        self.t: dict[str, np.ndarray | None] = {}     # TENSORS -> [S, n_blocks, E] or None
        self.d: dict[str, np.ndarray] = {}            # derived (see ``derived``)
        self.version += 1

    # ------------------------------------------------------------------ reading
    def load(self, reader: RunReader, member: int, blocks: list[int]) -> None:
        """Everything ``reader`` holds for ``member`` in the MoE ``blocks`` (the caller
        finds them, also in a run that does not name them in its meta)."""
        self.blocks = list(blocks)
        self.meta = reader.meta if isinstance(reader.meta, dict) else {}
        moe = (reader.config if isinstance(reader.config, dict) else {}).get("moe") or {}
        self.n_experts = int(moe.get("n_experts") or 0)
        self.router = str(moe.get("router") or "")
        cap = moe.get("capacity_factor")
        self.dropless = cap is not None and float(cap) == 0.0 and bool(self.blocks)
        self.read_tensors(reader, member)

    def read_tensors(self, reader: RunReader, member: int) -> None:
        """The whole series; a companion tensor not recorded at every step of the first
        is left out (None) rather than shown against the wrong steps."""
        steps, tpe = reader.tensor_series(TENSORS[0], member=member)
        self.steps = steps
        self.t = {TENSORS[0]: tpe if steps.size else None}
        for name in TENSORS[1:]:
            s, arr = reader.tensor_series(name, member=member)
            self.t[name] = arr if s.size and np.array_equal(s, steps) else None
        if tpe.ndim == 3 and tpe.size:
            self.n_experts = tpe.shape[-1]
        self.recompute()

    def ingest(self, reader: RunReader, member: int) -> bool:
        """Read the steps written after the last one held (a poll found new tensor
        steps); True if there were any."""
        steps = reader.tensor_steps(TENSORS[0], member=member)
        new = steps[steps > (self.steps[-1] if self.steps.size else -1)]
        if new.size > _REREAD_AFTER or self.t.get(TENSORS[0]) is None:
            self.read_tensors(reader, member)
            return True
        for s in new.tolist():
            for name in TENSORS:
                got = reader.tensor(name, s, member=member)
                old = self.t.get(name)
                if got is None or got[0] != s:
                    if name != TENSORS[0]:
                        self.t[name] = None if old is None or old.shape[0] != self.steps.size else old
                    continue
                arr = got[1][None]
                if name == TENSORS[0]:
                    self.t[name] = np.concatenate([old, arr]) if old is not None else arr
                elif old is not None and old.shape[0] == self.steps.size:
                    self.t[name] = np.concatenate([old, arr])
                elif old is None and self.steps.size == 0:
                    self.t[name] = arr
            self.steps = np.append(self.steps, s)
        for name in TENSORS[1:]:
            a = self.t.get(name)
            if a is not None and a.shape[0] != self.steps.size:
                self.t[name] = None
        if new.size:
            self.recompute()
        return bool(new.size)

    def set_dead_window(self, steps: int) -> None:
        self.dead_window = int(steps)
        self.recompute()

    def recompute(self) -> None:
        tpe = self.t.get(TENSORS[0])
        d: dict[str, np.ndarray] = {}
        if tpe is not None and tpe.size:
            d["cv"] = R.load_cv(tpe)
            d["max_mean"] = R.max_over_mean(tpe)
            d["over_uniform"] = R.load_over_uniform(tpe)
            drop = self.t.get(TENSORS[1])
            d["dropped"] = 100.0 * R.dropped_fraction(drop, tpe) if drop is not None else np.zeros(tpe.shape[:2])
            d["dead_mask"] = R.dead_expert_mask(self.steps, tpe, self.dead_window)
            d["dead"] = d["dead_mask"].sum(-1)
        self.d = d
        self.version += 1

    # ------------------------------------------------------------------ queries
    def tokens(self) -> np.ndarray | None:
        """Tokens per expert ``[S, n_blocks, E]`` (all k choices), or None."""
        return self.t.get(TENSORS[0])

    def bias(self) -> np.ndarray | None:
        """The balancing router biases ``[S, n_blocks, E]``, or None (not recorded)."""
        return self.t.get(TENSORS[2])

    def derived(self, key: str) -> np.ndarray | None:
        """A balance series: "cv", "max_mean", "dropped" (%), "dead", "dead_mask",
        "over_uniform" ([S, n_blocks(, E)])."""
        return self.d.get(key)

    def step_index(self, step: int | None) -> int | None:
        """The index of the recorded step nearest ``step`` (None without records)."""
        if self.steps.size == 0 or step is None:
            return None
        return int(np.argmin(np.abs(self.steps - step)))

    def rows(self, layer: int | None) -> list[int]:
        """The block rows of ``layer``; every row when it is None."""
        return list(range(len(self.blocks))) if layer is None else [self.blocks.index(layer)]

    def at_step(self, idx: int, rows: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
        """At step index ``idx``: tokens ``[rows, E]``, the dead mask ``[rows, E]`` and the
        uniform load (mean tokens of a row / E)."""
        vals = self.tokens()[idx, rows]
        dead = self.d["dead_mask"][idx, rows]
        E = vals.shape[-1]
        return vals, dead, float(vals.sum(-1).mean() / E) if vals.size else 0.0

    def names(self, n: int) -> list[str]:
        """The names of the run's ``n`` experts (``run_data.expert_names``)."""
        return expert_names(self.meta, n)

    def over_time(self, layer: int | None) -> tuple[np.ndarray, list[str]]:
        """Load / uniform over the run, one row per (block row, expert) of ``layer``:
        ``(matrix [rows * E, S], row labels)``."""
        rows = self.rows(layer)
        ou = self.d["over_uniform"]
        E = ou.shape[-1]
        mat = np.concatenate([ou[:, r, :].T for r in rows], axis=0)
        names = self.names(E)
        labels = [names[e] if layer is not None else f"L{self.blocks[r]} {names[e]}"
                  for r in rows for e in range(E)]
        return mat, labels

    def bias_series(self, layer: int | None) -> list[tuple[str, int, np.ndarray]]:
        """``(name, colour index, values [S])`` of the bias plot: each expert's bias in
        one layer; the spread (max - min over experts) of each layer for all layers.
        Empty without bias records."""
        bias = self.bias()
        if bias is None:
            return []
        rows = self.rows(layer)
        if layer is not None:
            names = self.names(bias.shape[-1])
            return [(names[e], e, bias[:, rows[0], e].astype(np.float64))
                    for e in range(bias.shape[-1])]
        return [(f"L{self.blocks[r]}", r, (bias[:, r].max(-1) - bias[:, r].min(-1)).astype(np.float64))
                for r in rows]

    def cell_of_step_map(self, row: int, col: int, layer: int | None) -> tuple[int, int, int]:
        """``(block row, expert, step)`` of a cell of the ``over_time(layer)`` matrix."""
        E = self.n_experts or 1
        r = self.blocks.index(layer) if layer is not None else row // E
        return r, row % E, int(self.steps[col])


def probe_choices(arrays: dict, block_row: int, expert: int) -> dict[int, tuple[int, float]]:
    """The probe tokens a snapshot (``arrays``: ``topk_idx`` / ``topk_weight`` ``[n_blocks,
    n, k]``) routed to ``expert`` in block row ``block_row`` by any of their k choices:
    ``{token index: (choice 0..k-1, its gate weight)}``, in token order."""
    idx = arrays["topk_idx"][block_row]
    w = arrays["topk_weight"][block_row].astype(np.float64)
    out = {}
    for i in R.tokens_in_cell(None, idx, None, expert).tolist():
        k = int(np.flatnonzero(idx[i] == expert)[0])
        out[int(i)] = (k, float(w[i, k]))
    return out
