"""What the Ensemble view shows of one run, read from its store: free of Qt, so it is
tested without a QApplication and the view only draws.

``EnsembleData`` holds the member, ensemble and rule scalars of one run (a table keyed by
``(name, member)``), its pairwise matrices as asked for, and the rules table at a step.
The helpers below it (probe shading levels, byte labels) are pure functions.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ...store import RunReader

# engine.combine.RULES (not imported: it would pull torch into the GUI); a run's own list
# is in its meta["ensemble"]["rules"].
RULES = ("mean_prob", "mean_logit", "vote", "loss_weighted", "stacking")
# Headline rules a run records only when ensemble.combine chose them (engine.combine's
# HEADLINE_RULES beyond RULES): rows of the rules table where the run has them.
EXTRA_RULES = ("sum_logit", "samme")
RULE_LABELS = {"mean_prob": "mean of probabilities", "mean_logit": "mean of logits",
               "vote": "majority vote", "loss_weighted": "loss-weighted", "stacking": "stacking",
               "sum_logit": "sum of logits (gradient boosting)", "samme": "SAMME weighted vote"}

# (tensor name, title, fixed colour levels, diverging colour map)
PAIR_VIEWS = (
    ("ens/agreement", "Top-1 agreement", (0.0, 1.0), False),
    ("ens/pair_disagreement", "Disagreement (one right, one wrong)", (0.0, 1.0), False),
    ("ens/pair_double_fault", "Double fault (both wrong)", (0.0, 1.0), False),
    ("ens/pair_q", "Yule's Q statistic", (-1.0, 1.0), True),
    ("ens/pair_correlation", "Correlation ρ of correctness", (-1.0, 1.0), True),
    ("ens/pair_kappa", "Cohen's κ", (-1.0, 1.0), True),
    ("ens/pair_js", "Jensen-Shannon divergence (nats)", (0.0, math.log(2.0)), False),
)
ORACLE = (("ens/disagreement", "disagreement"), ("ens/q_statistic", "Q"),
          ("ens/correlation", "ρ"), ("ens/double_fault", "double fault"),
          ("ens/kappa_pairwise", "κ pairwise"), ("ens/kappa_interrater", "κ interrater"),
          ("ens/kw_variance", "KW variance"), ("ens/entropy_e", "entropy E"))
NATS = (("ens/js_divergence", "Jensen-Shannon"), ("ens/mutual_info", "mutual information"),
        ("ens/gain", "gain of the ensemble"))
MI_LEVELS = 8            # shades of the probe text (level 0: no background)
SCALARS = (["val/loss", "val/acc", "ens/member/val_loss", "ens/member/val_acc"]
           + [f"ens/{r}/val_{k}" for r in RULES + EXTRA_RULES for k in ("loss", "acc")]
           + [n for n, _ in ORACLE + NATS])


def members_of_config(cfg: Any) -> int:
    """``ensemble.members`` of a run's config (1 when it has none)."""
    cfg = cfg if isinstance(cfg, dict) else {}
    return int((cfg.get("ensemble") or {}).get("members") or 1)


def scalar_table(df: pd.DataFrame) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """``{(name, member): (steps int64, values float64)}`` of a scalar frame, by step."""
    out = {}
    if not len(df):
        return out
    for (name, member), g in df.groupby([df["name"].astype(str), df["member"]], sort=False):
        g = g.sort_values("step", kind="stable")
        out[(str(name), int(member))] = (g["step"].to_numpy(np.int64),
                                         g["value"].to_numpy(np.float64))
    return out


def _merge(table: dict, new: dict) -> None:
    for key, (s, v) in new.items():
        old = table.get(key)
        if old is not None:
            s, v = np.concatenate([old[0], s]), np.concatenate([old[1], v])
            o = np.argsort(s, kind="stable")
            s, v = s[o], v[o]
        table[key] = (s, v)


def value_at(table: dict, name: str, member: int, step: int | None) -> float:
    """The value recorded at exactly ``step`` (None: the last one), NaN if none."""
    sv = table.get((name, member))
    if sv is None or sv[0].size == 0:
        return math.nan
    if step is None:
        return float(sv[1][-1])
    i = np.flatnonzero(sv[0] == step)
    return float(sv[1][i[-1]]) if i.size else math.nan


def mi_levels(mi: np.ndarray, n_levels: int = MI_LEVELS) -> tuple[np.ndarray, float]:
    """Shade levels of the probe tokens: ``(levels int [N] in 0..n_levels-1, scale)``.
    The darkest level is reached at ``scale`` = the 99th percentile of ``mi`` (one
    outlier does not wash everything else out); level 0 is no shading."""
    mi = np.nan_to_num(np.asarray(mi, dtype=np.float64), nan=0.0)
    scale = float(np.percentile(mi, 99)) if mi.size else 0.0
    if scale <= 0:
        scale = float(mi.max()) if mi.size and mi.max() > 0 else 1.0
    lv = np.floor(np.clip(mi / scale, 0.0, 1.0) * n_levels).astype(np.int64)
    return np.minimum(lv, n_levels - 1), scale


def byte_label(b: int) -> str:
    """One byte token as readable text: printable ASCII as itself, else a name."""
    b = int(b)
    named = {32: "␣", 10: "↵", 9: "⇥"}
    if b in named:
        return named[b]
    if 33 <= b < 127:
        return chr(b)
    return f"\\x{b:02x}"


class EnsembleData:
    """The ensemble records of one run (see the module docstring). ``version`` grows
    with every change of the scalars, so a view redraws its curves only when new."""

    def __init__(self) -> None:
        self.version = 0
        self.reset()

    def reset(self) -> None:
        self.members = 1
        self.sc: dict = {}
        self._tensor_cache: dict[tuple[str, int], np.ndarray] = {}
        self.version += 1

    def is_ensemble(self) -> bool:
        return self.members > 1

    def load(self, reader: RunReader, members: int) -> None:
        """The scalars of ``reader`` (after ``reset``), for a run of ``members``."""
        self.members = members
        if self.is_ensemble():
            self.sc = scalar_table(reader.scalars(list(SCALARS)))
            self.version += 1

    def ingest(self, df: pd.DataFrame) -> bool:
        """Add the ensemble's rows of a follower poll's scalar frame; True if any."""
        if not self.is_ensemble() or not len(df):
            return False
        df = df[df["name"].astype(str).isin(set(SCALARS))]
        if not len(df):
            return False
        _merge(self.sc, scalar_table(df))
        self.version += 1
        return True

    def series(self, name: str, member: int = -1) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps, values) of ``name`` of ``member`` (-1: the ensemble), None if none."""
        return self.sc.get((name, member))

    def run_rules(self) -> tuple[str, ...]:
        """The rules this run recorded: the five of every ensemble, and the headline rule
        ``ensemble.combine`` added (sum of logits, SAMME) when it did."""
        return RULES + tuple(r for r in EXTRA_RULES if (f"ens/{r}/val_loss", -1) in self.sc)

    def eval_steps(self, reader: RunReader | None) -> np.ndarray:
        """The steps of the pairwise records; before any (one member evaluated so far),
        those of the ensemble's validation loss."""
        steps = reader.tensor_steps("ens/agreement", member=-1) if reader is not None else []
        if len(steps) == 0:
            sv = self.sc.get(("val/loss", -1))
            steps = sv[0] if sv is not None else []
        return np.asarray(steps, np.int64)

    def pair_matrix(self, reader: RunReader | None, name: str,
                    step: int | None) -> np.ndarray | None:
        """The [n_members, n_members] record ``name`` at ``step`` (exactly), or None."""
        if step is None or reader is None:
            return None
        key = (name, int(step))
        mat = self._tensor_cache.get(key)
        if mat is None:      # (a miss is not kept: a live run may write it a moment later)
            got = reader.tensor(name, step, member=-1)
            if got is not None and got[0] == step:
                mat = self._tensor_cache[key] = got[1]
        return mat

    def rules_rows(self, step: int | None) -> list[tuple[str, float, float, float]]:
        """``(label, NLL, accuracy, gain over mean member)`` per row of the rules table:
        every rule, then the mean and the best member, all on the report tokens."""
        sc = self.sc
        n = self.members
        m_loss = np.array([value_at(sc, "ens/member/val_loss", m, step) for m in range(n)])
        m_acc = np.array([value_at(sc, "ens/member/val_acc", m, step) for m in range(n)])
        ok = np.isfinite(m_loss)
        mean_loss = float(m_loss[ok].mean()) if ok.any() else math.nan
        mean_acc = float(m_acc[ok].mean()) if ok.any() else math.nan
        rows = []
        for rule in self.run_rules():
            nll = value_at(sc, f"ens/{rule}/val_loss", -1, step)
            acc = value_at(sc, f"ens/{rule}/val_acc", -1, step)
            rows.append((RULE_LABELS[rule], nll, acc, mean_loss - nll))
        rows.append(("mean member", mean_loss, mean_acc, 0.0 if ok.any() else math.nan))
        if ok.any():
            b = int(np.nanargmin(np.where(ok, m_loss, np.nan)))
            rows.append((f"best member (m{b})", float(m_loss[b]), float(m_acc[b]),
                         mean_loss - float(m_loss[b])))
        return rows
