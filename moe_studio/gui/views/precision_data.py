"""What the Precision view shows, read from a run store: free of Qt, so it is tested
without a QApplication and the view only draws.

``PrecisionData`` holds one member's headroom records (the ``precision/*`` tensors and
the run meta describing them), its fp16 loss scale and skipped steps, and its
non-finite / back-off events; ``load`` reads a run, ``ingest`` adds what a follower's
poll brought. ``version`` grows with every change, so a view redraws only what is new.
Its queries give what the plots draw: the curves of a module, the exponent histogram
and the edge table at a step, the skipped steps on the loss-scale curve, the hover notes.
"""
from __future__ import annotations

import math
import re

import numpy as np

from ...metrics import precision as P
from ...store import RunReader
from ..formats import fmt_pow2
from .inspection_runs import is_inspection

TENSORS = ("precision/absmax", "precision/min_nonzero", "precision/counts",
           "precision/exp_hist", "precision/fractions")
SCALARS = ("precision/loss_scale", "precision/skipped")
EVENTS = ("nonfinite", "loss_scale_backoff")
KIND_LABELS = {"act": "activations", "grad": "gradients", "weight": "weights"}
FORMAT_LABELS = {"fp16": "fp16", "bf16": "bf16", "fp8_e4m3": "fp8 e4m3", "fp8_e5m2": "fp8 e5m2"}


# A numbered transformer block inside a module name: ours (``blocks.3.``) and those of
# Hugging Face checkpoints (``model.layers.3.``, ``transformer.h.3.``,
# ``encoder.block.3.``), with what comes before it.
_BLOCK = re.compile(r"^(?P<pre>(?:[\w]+\.)*?)(?:blocks|layers|block|h)\.(?P<n>\d+)\.(?P<rest>.+)$")
_PLAIN_PREFIXES = ("", "model.", "transformer.", "model.decoder.", "model.language_model.")


def _block_of(name: str) -> tuple[str, str] | None:
    """(group name, rest) of a module inside a numbered block, or None:
    ``model.layers.3.self_attn.q_proj`` -> (``b3``, ``self_attn.q_proj``); an
    encoder-decoder keeps its side: ``encoder.block.1.layer.0`` -> (``encoder.b1``, ...)."""
    m = _BLOCK.match(name)
    if m is None:
        return None
    pre = m["pre"]
    group = f"b{m['n']}" if pre in _PLAIN_PREFIXES else f"{pre.removeprefix('model.')}b{m['n']}"
    return group, m["rest"]


def short_name(name: str) -> str:
    """``blocks.3.ffn.router`` -> ``b3.ffn.router``, ``model.layers.3.mlp.gate`` ->
    ``b3.mlp.gate``: module names fit the axes."""
    got = _block_of(name)
    return name if got is None else f"{got[0]}.{got[1]}"


def block_groups(modules: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """Rows of one transformer block grouped under ``b3`` with short labels
    (``attn.qkv``), the embeddings under ``emb``, other modules (the head) standing
    alone: with many layers the group names stay readable when not every module's name
    fits (two embedding rows side by side left one of them unnamed)."""
    groups: list[tuple[str, int]] = []
    inner: list[str] = []
    for n in modules:
        short = short_name(n)
        got = _block_of(n)
        name, rest = got if got is not None else ("", "")
        inner.append(rest if name else short)
        if not name and (short.endswith("_emb") or short.endswith("embed_tokens")):
            name = "emb"
        if groups and groups[-1][0] == name and name:
            groups[-1] = (name, groups[-1][1] + 1)
        else:
            groups.append((name, 1))
    return groups, inner


def power_of_two_ticks(scale: np.ndarray) -> list[tuple[float, str]]:
    """Log10 tick positions and "2^k" labels for loss scales (powers of two), about
    eight of them over the span of ``scale`` ([] without a positive value)."""
    pos = scale[np.isfinite(scale) & (scale > 0)]
    if not pos.size:
        return []
    lo, hi = math.floor(math.log2(pos.min())) - 1, math.ceil(math.log2(pos.max())) + 1
    every = max(1, math.ceil((hi - lo) / 8))
    return [(k * math.log10(2.0), f"2^{k}") for k in range(lo, hi + 1) if k % every == 0]


def zone_of(e: int, fmt: dict) -> str:
    """What becomes of magnitudes in the bin [2^e, 2^(e+1)) in format ``fmt``."""
    r = P.format_log2_range(fmt)
    if e >= r["max"]:
        return "overflows"
    if e + 1 > r["max"]:
        return "normal up to the max, beyond it overflows"
    if e >= r["min_normal"]:
        return "normal"
    if e >= r["min_subnormal"] - 1:
        return "subnormal (fewer significant bits)"
    return "flushed to zero"


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
        self.inspection = False
        self.version += 1

    # ------------------------------------------------------------------ reading
    def load(self, reader: RunReader, member: int) -> None:
        """Everything ``reader`` holds for ``member`` (after ``reset``)."""
        cfg = reader.config if isinstance(reader.config, dict) else {}
        prec = cfg.get("precision") or {}
        self.mode = str(prec.get("mode") or "fp32")
        self.headroom_on = bool(prec.get("headroom"))
        self.inspection = is_inspection(reader)
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

    def fmt(self, name: str | None) -> tuple[int, dict] | None:
        """(index in the records, format table entry) of format ``name``, or None."""
        if name is None or name not in self.formats or name not in self.fmt_table:
            return None
        return self.formats.index(name), self.fmt_table[name]

    def nonfinite(self) -> list[dict]:
        return [e for e in self.events if e["kind"] == "nonfinite"]

    def skipped_marks(self) -> tuple[np.ndarray, np.ndarray]:
        """(step, scale) of each skipped step on the loss-scale curve: the scale in force
        when the step failed (before the backoff)."""
        steps, scale = self.scale
        if not (self.skipped.size and steps.size):
            return np.zeros(0), np.zeros(0)
        i = np.clip(np.searchsorted(steps, self.skipped) - 1, 0, steps.size - 1)
        before = np.where(steps[i] < self.skipped, scale[i], scale[i] * 2.0)
        return self.skipped.astype(np.float64), before

    def skip_notes(self, x: float, tolerance: float) -> list[str]:
        """Lines on the skipped steps within ``tolerance`` steps of ``x``: the backoff and
        what overflowed, as the engine recorded it (three at most, then a count)."""
        if not self.skipped.size:
            return []
        near = self.skipped[np.abs(self.skipped - x) <= tolerance]
        backoffs = {e["step"]: e["data"] for e in self.events if e["kind"] == "loss_scale_backoff"}
        out = []
        for step in near[:3].tolist():
            d = backoffs.get(int(step), {})
            line = f"skipped step {step:,}"
            if "from" in d and "to" in d:
                line += f": scale {fmt_pow2(d['from'])} → {fmt_pow2(d['to'])}"
            if d.get("module"):
                line += (f", inf/NaN {d.get('kind', 'value')} nearest the loss in "
                         f"{short_name(str(d['module']))}")
            out.append(line)
        if near.size > 3:
            out.append(f"… and {near.size - 3} more skipped steps here")
        return out

    def histogram(self, idx: int, k: int, fmt: dict) -> tuple[np.ndarray, int, int]:
        """The exponent histogram at record ``idx`` of kind index ``k``: (log10 of the
        share of each module's elements per bin [n_modules, stop - first], NaN for none;
        first, stop), the bins around the data and ``fmt``'s range."""
        hist = self.t[TENSORS[3]][idx, :, k]            # [n, B]
        counts = self.t[TENSORS[2]][idx, :, k]          # [n, 3]
        first, stop = P.bin_window(hist, self.edges, fmt)
        shares = P.histogram_shares(hist[:, first:stop], counts)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(shares > 0, np.log10(shares), np.nan)
        return m, first, stop

    def edge_rows(self, idx: int, fmt: tuple[int, dict], module: str | None) -> list[dict]:
        """``metrics.precision.edge_table`` at record ``idx`` (of ``module`` only, unless
        None)."""
        t = self.t
        rows = P.edge_table(self.modules, self.kinds, t[TENSORS[0]][idx], t[TENSORS[1]][idx],
                            t[TENSORS[2]][idx], t[TENSORS[4]][idx], fmt[0], fmt[1])
        return rows if module is None else [r for r in rows if r["module"] == module]

    def bin_count(self, idx: int, row: int, k: int, b: int) -> tuple[int, int]:
        """(elements in bin ``b``, elements in all) of module row ``row``, kind ``k``."""
        return (int(self.t[TENSORS[3]][idx, row, k, b]),
                int(self.t[TENSORS[2]][idx, row, k, 0]))
