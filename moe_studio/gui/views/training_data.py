"""What the Training view shows, read from run stores: free of Qt, so it is tested
without a QApplication and the view only draws.

A ``RunTrack`` is one shown run: its reader and follower, and one append-only
``SeriesBuffer`` (step, value, wall time) per plotted scalar and member. ``ingest``
appends the rows of a poll to them; ``x_of`` / ``x_at_steps`` put them on the chosen
x axis (step, cumulative tokens, wall time); ``planned_end`` is where running runs will
stop on that axis; ``series_style`` names and colours a curve.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...store import Follower, RunReader
from ...store.runs import planned_steps
from .rank_series import rank_of, rank_series_specs

X_STEP, X_TOKENS, X_WALL = "step", "tokens", "wall"

# plot key -> (title, [(scalar name, short label, per-member?)])
PLOTS: dict[str, tuple[str, list[tuple[str, str, bool]]]] = {
    "loss": ("Loss (nats/token)", [("train/loss", "train", True), ("val/loss", "val", True)]),
    "aux": ("Load-balancing loss", [("train/aux_loss", "aux", True)]),
    "z": ("Router z-loss", [("train/z_loss", "z", True)]),
    "lr": ("Learning rate", [("lr", "lr", False)]),
    "tokens_per_s": ("Tokens per second", [("tokens_per_s", "tokens/s", False)]
                     + rank_series_specs()),
}
PLOT_OF = {name: key for key, (_, specs) in PLOTS.items() for name, _, _ in specs}
ROUTING_PLOTS = ("aux", "z")    # nothing to plot for a dense model
SPARSE = {"val/loss"}           # evaluated every eval_every steps: dashed, dots, unsmoothed
TOKENS = "tokens"               # run-wide cumulative tokens, the x of the Tokens axis
_NAME_SET = frozenset(PLOT_OF) | {TOKENS}


def series_key(run_index: int, name: str, member: int) -> str:
    """The CurvePlot series key of scalar ``name`` of ``member`` in the ``run_index``-th run."""
    return f"{run_index}|{name}|{member}"


class SeriesBuffer:
    """Append-only columns (step, value, wall time) with amortised O(1) growth."""

    __slots__ = ("step", "value", "wall", "n")

    def __init__(self) -> None:
        self.step = np.empty(64)
        self.value = np.empty(64)
        self.wall = np.empty(64)
        self.n = 0

    def extend(self, step: np.ndarray, value: np.ndarray, wall: np.ndarray) -> None:
        k = step.size
        if self.n + k > self.step.size:
            cap = max(2 * self.step.size, self.n + k)
            for name in ("step", "value", "wall"):
                grown = np.empty(cap)
                grown[:self.n] = getattr(self, name)[:self.n]
                setattr(self, name, grown)
        sl = slice(self.n, self.n + k)
        self.step[sl], self.value[sl], self.wall[sl] = step, value, wall
        out_of_order = self.n > 0 and k > 0 and step[0] < self.step[self.n - 1]
        self.n += k
        if out_of_order or (k > 1 and np.any(np.diff(step) < 0)):
            order = np.argsort(self.step[:self.n], kind="stable")
            for name in ("step", "value", "wall"):
                col = getattr(self, name)
                col[:self.n] = col[:self.n][order]

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.step[:self.n], self.value[:self.n], self.wall[:self.n]


@dataclass
class RunTrack:
    index: int
    path: Path
    reader: RunReader
    follower: Follower
    name: str
    label: str            # legend prefix in an overlay ("" for a single run)
    members: int
    total_steps: int | None
    status: str
    dense: bool = False   # no MoE layer: no router, no routing losses to plot
    moe_layers: int = 0   # its MoE layers: each adds about 1 to a balanced aux loss
    buffers: dict[tuple[str, int], SeriesBuffer] = field(default_factory=dict)
    t0: float = float("inf")  # wall time of the run's first record

    @classmethod
    def of(cls, index: int, path: Path, reader: RunReader, follower: Follower,
           moe_layers: int) -> "RunTrack":
        """The track of an opened run: its name, members and the steps it aims at
        (``store.runs.planned_steps``)."""
        cfg = reader.config if isinstance(reader.config, dict) else {}
        return cls(index=index, path=path, reader=reader, follower=follower,
                   name=reader.name or path.name, label="",
                   members=int((cfg.get("ensemble") or {}).get("members") or 1),
                   total_steps=planned_steps(cfg, reader.meta), status=reader.status,
                   dense=not moe_layers, moe_layers=moe_layers)

    def restart(self) -> set[tuple[str, int]]:
        """Forget the rows read so far: the run was continued from a checkpoint and the
        follower's update brings its whole history again. Returns the keys held."""
        held = set(self.buffers)
        self.buffers = {}
        self.t0 = float("inf")
        self.reader.refresh()
        self.total_steps = planned_steps(self.reader.config, self.reader.meta)
        return held

    def close(self) -> None:
        self.reader.close()

    def tokens_at(self, steps: np.ndarray) -> np.ndarray:
        """Cumulative tokens at ``steps``: the run-wide ``tokens`` record joined by step,
        interpolated between records, proportional to step outside them."""
        buf = self.buffers.get((TOKENS, -1))
        if buf is None or buf.n == 0:
            return np.full(steps.shape, np.nan)
        s, t, _ = buf.view()
        out = np.interp(steps, s, t)
        if s[0] > 0:
            lo = steps < s[0]
            out[lo] = steps[lo] * (t[0] / s[0])
        if s[-1] > 0:
            hi = steps > s[-1]
            out[hi] = steps[hi] * (t[-1] / s[-1])
        return out

    def last_step(self) -> int | None:
        steps = [b.step[b.n - 1] for b in self.buffers.values() if b.n]
        return int(max(steps)) if steps else None

    def last_value(self, name: str, member: int) -> float | None:
        buf = self.buffers.get((name, member))
        return float(buf.value[buf.n - 1]) if buf is not None and buf.n else None


def label_overlay(tracks: list[RunTrack]) -> None:
    """Legend prefixes of overlaid runs: the run name; two runs of one name (a re-run)
    stay apart by their run id. A single run needs none."""
    if len(tracks) < 2:
        return
    names = [t.name for t in tracks]
    for t in tracks:
        t.label = f"{t.name} ({t.reader.run_id})" if names.count(t.name) > 1 else t.name


def ingest(t: RunTrack, df: pd.DataFrame, x_mode: str) -> set[tuple[str, int]]:
    """Append the rows of ``df`` (a poll's scalars) this view plots to ``t``'s buffers;
    return the (name, member) keys whose series must be redrawn on the ``x_mode`` axis."""
    wall = (df["wall_time"].to_numpy(dtype=np.float64) if "wall_time" in df
            else np.full(len(df), np.nan))
    t0_moved = False
    if wall.size and np.isfinite(wall).any():
        first = float(np.nanmin(wall))
        if first < t.t0:
            t.t0, t0_moved = first, True
    # Plain numpy from here: a live frame brings a few dozen rows, for which pandas'
    # per-call overhead (groupby, frame construction) would cost more than the data.
    names = df["name"]
    if isinstance(names.dtype, pd.CategoricalDtype):
        codes = names.cat.codes.to_numpy()
        cats = names.cat.categories
    else:
        codes, cats = pd.factorize(names)
    wanted = np.array([i for i, c in enumerate(cats) if c in _NAME_SET], dtype=codes.dtype)
    changed: set[tuple[str, int]] = set()
    if wanted.size:
        keep = np.isin(codes, wanted)
        if keep.any():
            codes = codes[keep].astype(np.int64)
            member = df["member"].to_numpy(dtype=np.int64)[keep]
            step = df["step"].to_numpy(dtype=np.float64)[keep]
            value = df["value"].to_numpy(dtype=np.float64)[keep]
            wall = wall[keep]
            group = codes * 1024 + (member + 1)        # members are -1..15
            order = np.argsort(group, kind="stable")   # keeps each series' row order
            group = group[order]
            starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            ends = np.r_[starts[1:], group.size]
            for a, b in zip(starts.tolist(), ends.tolist()):
                rows = order[a:b]
                key = (str(cats[int(group[a] // 1024)]), int(group[a] % 1024) - 1)
                t.buffers.setdefault(key, SeriesBuffer()).extend(step[rows], value[rows],
                                                                 wall[rows])
                changed.add(key)
    # Every x changes when the axis it is measured on moves.
    if ((x_mode == X_TOKENS and (TOKENS, -1) in changed)
            or (x_mode == X_WALL and t0_moved)):
        changed |= set(t.buffers)
    changed.discard((TOKENS, -1))
    return changed


def x_of(t: RunTrack, buf: SeriesBuffer, x_mode: str) -> np.ndarray:
    """The x of a buffer's points on the ``x_mode`` axis (wall: seconds since the run's
    first record)."""
    step, _, wall = buf.view()
    if x_mode == X_TOKENS:
        return t.tokens_at(step)
    if x_mode == X_WALL:
        return wall - t.t0
    return step


def x_at_steps(t: RunTrack, steps: np.ndarray, x_mode: str) -> np.ndarray:
    """x of the ``x_mode`` axis at arbitrary steps (wall time interpolated between records)."""
    if x_mode == X_WALL:
        buf = max(t.buffers.values(), key=lambda b: b.n, default=None)
        if buf is None or buf.n == 0:
            return np.full(steps.shape, np.nan)
        s, _, wall = buf.view()
        return np.interp(steps, s, wall) - t.t0
    return t.tokens_at(steps) if x_mode == X_TOKENS else steps


def planned_end(tracks: list[RunTrack], x_mode: str) -> float | None:
    """The planned end of the running runs on the ``x_mode`` axis, or None (no running
    run with a plan, or wall time, which has no plan)."""
    if x_mode == X_WALL:
        return None
    ends = []
    for t in tracks:
        if t.status != "running" or not t.total_steps:
            continue
        last = float(max(t.total_steps, t.last_step() or 0))
        if x_mode == X_STEP:
            ends.append(last)
        else:
            end = t.tokens_at(np.array([last]))[0]
            if np.isfinite(end):
                ends.append(float(end))
    return max(ends) if ends else None


def series_style(t: RunTrack, name: str, member: int, overlay: bool):
    """Legend label and colour (a CurvePlot colour spec) of one series. The plot title
    names the metric, so labels name only what tells the curves of one plot apart:
    train / val (the loss plot), the member, the run (overlays)."""
    plot_key = PLOT_OF[name]
    specs = PLOTS[plot_key][1]
    short = next(s for n, s, _ in specs if n == name)
    rank = rank_of(name)
    if rank is not None:   # a distributed run's ranks: one colour (shade) each
        if overlay:
            return f"{t.label} · {short}", (t.index, rank + 1)
        return short, rank + 1
    specs = [sp for sp in specs if rank_of(sp[0]) is None]
    multi = t.members > 1
    if member < 0:
        who = "ensemble" if name in SPARSE and multi else ""
    else:
        who = f"m{member}" if multi else ""
    kind = short if len(specs) > 1 else ""
    text = " ".join(p for p in (kind, who) if p)
    if overlay:
        # One colour per run; its members (and the ensemble) as shades of it.
        if member < 0:
            shade = min(t.members, 4) if who == "ensemble" else 0
        else:
            shade = member if multi else 0
        return (f"{t.label} · {text}" if text else t.label), (t.index, shade)
    text = text or short
    if member < 0:
        return text, ("ensemble" if name in SPARSE and multi else 0)
    if multi:
        return text, member
    # One model: train and validation loss in two clearly different colours.
    return text, (1 if name in SPARSE else 0)
