"""The Ensemble view's "Compare runs" tab: every shown run's validation loss against
training tokens, the gain over time of each ensemble, and one table row per run with its
parameters (total and per token), every rule's NLL, gain and diversity at its last
evaluation: the MoE vs ensemble comparison, or several ensembles side by side.

The runs are read as the Compare view reads them (``compare_data.ComparedRun``: the
last attempt of a resumed run, the ensemble's record where there is one, tokens from the
run's ``tokens`` series), so a run's loss, tokens and parameters read the same in both
views; this tab adds only what is particular to ensembles (members, method, rules,
diversity). Overlays, grouping and config diffs of any runs are the Compare view's.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from ...store import compare as C
from ..formats import fmt_count, fmt_fixed
from ..run.polling import open_guarded, poll_guarded
from ..widgets.plots import CurvePlot
from ..widgets.text_table import TextTable
from .compare_data import ComparedRun, x_of
from .ensemble_data import RULES, members_of_config

DIVERSITY = ("ens/gain", "ens/disagreement", "ens/js_divergence", "ens/mutual_info",
             "ens/kw_variance", "ens/entropy_e")
HEADERS = (["run", "model", "method", "members", "params\ntotal", "active\n/ token",
            "val\nloss", "step"] + [f"{r}\nNLL" for r in RULES]
           + ["gain", "dis-\nagreement", "JS", "MI", "KW\nvariance", "entropy\nE"])


def members(run: ComparedRun) -> int:
    return members_of_config(run.config)


def describe(run: ComparedRun) -> tuple[str, str]:
    """(kind, method) of a run for the table: "3 × MoE 4 experts, top-2", "bagging"."""
    cfg, n = run.config, members(run)
    ens = run.meta.get("ensemble") or {}
    method = str(ens.get("method") or (cfg.get("ensemble") or {}).get("method") or "")
    model = cfg.get("model") or {}
    moe = cfg.get("moe") or {}
    if str(model.get("moe_layers", "all")) != "none":
        kind = f"MoE {moe.get('n_experts', '?')} experts, top-{moe.get('top_k', '?')}"
    else:
        kind = f"dense d_model {model.get('d_model', '?')}"
    if n > 1:
        kind = f"{n} × {kind}"
    return kind, (method if n > 1 else "—")


def tokens_at(run: ComparedRun, steps: np.ndarray) -> np.ndarray:
    """Training tokens (per member) seen by each step: from the run's ``tokens`` series as
    the Compare view's token axis reads it; batch x context per step without one."""
    if run.metric("tokens")[0].size >= 2:
        return x_of([run], run, (steps,), C.X_TOKENS)
    data = run.config.get("data") or {}
    return steps * float(data.get("batch_size", 1)) * float(data.get("context", 1))


def last_eval_step(run: ComparedRun) -> int | None:
    """The step of the run's last evaluation (of its ensemble gain, else of val/loss)."""
    for name in ("ens/gain", "val/loss"):
        s = run.metric(name)[0]
        if s.size:
            return int(s[-1])
    return None


class EnsembleComparePage(QWidget):
    """Loss vs tokens, gain over time, the table and a one-line summary of every run
    given to ``set_runs``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs: list[ComparedRun] = []
        self.errors: list[str] = []
        self.losses = CurvePlot("Validation loss vs training tokens", "tokens (per member)",
                                "nats / token")
        self.gain = CurvePlot("Ensemble gain over time (nats / token)", "step", "nats")
        self.table = TextTable(HEADERS)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        cg = QGridLayout(self)
        cg.setContentsMargins(0, 0, 0, 0)
        cg.setSpacing(6)
        cg.addWidget(self.losses, 0, 0)
        cg.addWidget(self.gain, 0, 1)
        cg.addWidget(self.note, 1, 0, 1, 2)
        cg.addWidget(self.table, 2, 0, 1, 2)
        cg.setRowStretch(0, 5)
        cg.setRowStretch(2, 2)

    # ------------------------------------------------------------------ runs
    def set_runs(self, paths) -> None:
        """Open and read the runs at ``paths`` (those that cannot be read join ``errors``)."""
        self.close_runs()
        for path in [Path(p) for p in paths]:
            opened = open_guarded(path, self.errors)
            if opened is not None:
                self.runs.append(ComparedRun.of(len(self.runs), path, *opened))
        self.refresh()

    def refresh(self) -> bool:
        """Read what the runs gained since; True if any did."""
        changed = False
        for r in self.runs:
            upd = poll_guarded(r.follower, self.errors)
            if upd is not None:
                changed = r.apply(upd) or changed
        return changed

    def close_runs(self) -> None:
        for r in self.runs:
            r.close()
        self.runs = []
        self.errors = []

    def first_ensemble(self) -> Path | None:
        return next((r.path for r in self.runs if members(r) > 1), None)

    def any_ensemble(self) -> bool:
        return self.first_ensemble() is not None

    # ------------------------------------------------------------------ rows
    def rows(self) -> list[list[Any]]:
        """One row per run, the values of ``HEADERS`` (numbers as floats, NaN where a run
        has no such record)."""
        rows = []
        for r in self.runs:
            kind, method = describe(r)
            n = members(r)
            tot, act = C.run_params({**r.meta, "members": n})
            step = last_eval_step(r)
            val = r.value_at("val/loss", None)
            ens = [r.value_at(f"ens/{x}/val_loss", step) for x in RULES]
            div = [r.value_at(name, step) for name in DIVERSITY]
            rows.append([r.name, kind, method, n, tot, act, val,
                         step if step is not None else math.nan] + ens + div)
        return rows

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        rows = self.rows()
        texts, bold = [], set()
        for row in rows:
            texts.append([str(row[0]), row[1], row[2], str(row[3]), fmt_count(row[4]),
                          fmt_count(row[5]), fmt_fixed(row[6]), fmt_count(row[7])]
                         + [fmt_fixed(v) for v in row[8:]])
        if len(rows) > 1:      # the best value of each loss column in bold
            for c in [6] + list(range(8, 8 + len(RULES))):
                col = np.array([row[c] for row in rows], np.float64)
                if np.isfinite(col).sum() > 1:
                    bold.add((int(np.nanargmin(col)), c))
        self.table.set_rows(texts, bold=bold)
        keep_l, keep_g = set(), set()
        for j, r in enumerate(self.runs):
            s, v, _ = r.metric("val/loss")
            k = f"{j}:{r.name}"
            if s.size:
                self.losses.set_series(k, tokens_at(r, s), v, label=r.name, color=j,
                                       symbol="o", smooth=False)
                keep_l.add(k)
            g = r.metric("ens/gain")
            if g[0].size:
                self.gain.set_series(k, g[0], g[1], label=r.name, color=j, symbol="o",
                                     smooth=False)
                keep_g.add(k)
        for plot, keep in ((self.losses, keep_l), (self.gain, keep_g)):
            for k in plot.series_keys():
                if k not in keep:
                    plot.remove_series(k)
            plot.sync_range()
        self.losses.set_placeholder("" if keep_l else "No validation loss recorded")
        self.gain.set_placeholder("" if keep_g else "None of the shown runs is an ensemble")
        self.note.setText(self._text(rows))

    def _text(self, rows: list[list[Any]]) -> str:
        if len(rows) < 2:
            return ("Check two or more runs in the runs list to compare them here: an MoE run "
                    "and an ensemble with the same parameters (the <i>moe-vs-ensemble</i> "
                    "samples), or several ensembles.")
        parts = []
        for row in rows:
            parts.append(f"<b>{html.escape(str(row[0]))}</b>: {html.escape(row[1])}, "
                         f"{fmt_count(row[4])} parameters, {fmt_count(row[5])} per token, "
                         f"val loss {fmt_fixed(row[6])}")
        text = " · ".join(parts)
        if self.errors:
            text += f" · <i>{html.escape(self.errors[-1])}</i>"
        return text + (". Validation loss: ensembles use the mean of their members' "
                       "probabilities on all validation tokens; rule columns are on the "
                       "report half.")
