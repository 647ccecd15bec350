"""Ensemble: how much the members of an ensemble agree, and what combining them buys.

"Members & agreement" (the first ensemble run among the shown runs):

* validation loss over training of every member, of the ensemble (member -1: the mean
  of the members' probabilities on all validation tokens) and of every combination
  rule (``ens/{rule}/val_loss``, on the report half of the kept validation windows);
* the pairwise member x member matrix at the selected evaluation (``ens/agreement``,
  ``ens/pair_q``, ``ens/pair_js``, ...: the combo next to the step slider picks one);
* diversity over training: the Kuncheva & Whitaker oracle measures (disagreement, Q,
  correlation, double fault, kappas) and, in nats, the Jensen-Shannon divergence, the
  mutual information and the gain of the mean-probability ensemble;
* the rules at the selected evaluation: NLL, accuracy and gain over the mean member;
* the probe text (snapshot ``ensemble/probe``), each token shaded by the members'
  disagreement on what comes next (mutual information); hovering a token lists each
  member's top-1 prediction of the next token.

"Compare runs" (every shown run): validation loss against training tokens, the gain
over time of each ensemble, and one table row per run with its parameters (total and
per token), every rule's NLL, gain and diversity at its last evaluation: the MoE vs
ensemble comparison, or several ensembles side by side.

A single-model run gets a short explanation of how to train an ensemble instead.
Everything is read from the run store (records described in docs/CONTRACTS.md).
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QGridLayout, QHeaderView, QLabel,
                               QStackedWidget, QTableWidget, QTableWidgetItem, QTabWidget,
                               QVBoxLayout, QWidget)

from ..formats import fmt_count, fmt_fixed
from ...store import RunFileError, RunReader, open_run
from ...store import compare as C
from ..widgets.heatmap import HeatmapPlot
from .inspection_runs import NO_ENSEMBLE_HTML, is_inspection
from ..widgets.plots import CurvePlot
from ..widgets.routed_text import RoutedTextView
from ..run.follow_timer import error_text
from .dashboard import RunDashboard, SnapshotCache, move_step_markers
from ..theme import is_dark_palette, plot_colors

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

EMPTY_TEXT = (
    "<h3>No ensemble in this run</h3>"
    "<p>This run trains a single model, so there are no members to compare.</p>"
    "<p>To train an ensemble, in the <b>Experiment</b> panel open the <b>Ensemble</b> "
    "section and set <b>members</b> to 2 or more (<tt>ensemble.members</tt> in a config "
    "file; then pick a method: seeds, bagging, snapshot or boosting), or choose the preset "
    "<b>4-member bagging ensemble</b>. The "
    "sample runs <i>bagging-4</i> and <i>moe-vs-ensemble-dense</i> show what this view "
    "looks like.</p>"
    "<p>Check two or more runs in the <b>Runs</b> panel (an MoE run and an ensemble run, "
    "say) to compare them on the <b>Compare runs</b> tab.</p>")


# ---------------------------------------------------------------------------- helpers
def _members_of_config(cfg: Any) -> int:
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


def _blend(c: QColor, bg: QColor, a: float) -> QColor:
    return QColor.fromRgbF(a * c.redF() + (1 - a) * bg.redF(), a * c.greenF() + (1 - a) * bg.greenF(),
                           a * c.blueF() + (1 - a) * bg.blueF())


def _titled(title: QLabel, body: QWidget) -> QWidget:
    """``body`` with its title line above it."""
    w = QWidget()
    lay = QVBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(2)
    lay.addWidget(title)
    lay.addWidget(body, 1)
    return w


class _Table(QTableWidget):
    """A read-only table that sizes its columns to the contents."""

    def __init__(self, headers: list[str], parent: QWidget | None = None):
        super().__init__(0, len(headers), parent)
        self.setHorizontalHeaderLabels(headers)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)

    def set_rows(self, rows: list[list[str]], bold: set[tuple[int, int]] = frozenset(),
                 tips: dict[tuple[int, int], str] | None = None) -> None:
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = self.item(r, c)
                if item is None:
                    item = QTableWidgetItem()
                    self.setItem(r, c, item)
                item.setText(text)
                align = Qt.AlignmentFlag.AlignLeft if c == 0 else Qt.AlignmentFlag.AlignRight
                item.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
                f = item.font()
                f.setBold((r, c) in bold)
                item.setFont(f)
                item.setToolTip((tips or {}).get((r, c), ""))

    def cell_texts(self) -> list[list[str]]:
        return [[self.item(r, c).text() if self.item(r, c) else "" for c in range(self.columnCount())]
                for r in range(self.rowCount())]

    def headers(self) -> list[str]:
        return [self.horizontalHeaderItem(c).text() for c in range(self.columnCount())]


class _Run:
    """One shown run for the comparison: its reader and what the table and curves need."""

    def __init__(self, path: Path, reader: RunReader):
        self.path, self.reader = path, reader
        self.name = reader.name
        self.members = _members_of_config(reader.config)
        self.sc: dict = {}

    def load(self) -> None:
        r = self.reader
        names = ["val/loss", "tokens", "ens/gain", "ens/member/val_loss", "ens/disagreement",
                 "ens/js_divergence", "ens/mutual_info", "ens/kw_variance",
                 "ens/entropy_e"] + [f"ens/{x}/val_loss" for x in RULES]
        self.sc = scalar_table(r.scalars(names))

    def is_ensemble(self) -> bool:
        return self.members > 1

    def describe(self) -> tuple[str, str]:
        """(kind, method) for the table."""
        cfg = self.reader.config if isinstance(self.reader.config, dict) else {}
        ens = (self.reader.meta.get("ensemble") or {}) if isinstance(self.reader.meta, dict) else {}
        method = str(ens.get("method") or (cfg.get("ensemble") or {}).get("method") or "")
        model = cfg.get("model") or {}
        moe = cfg.get("moe") or {}
        if str(model.get("moe_layers", "all")) != "none":
            kind = f"MoE {moe.get('n_experts', '?')} experts, top-{moe.get('top_k', '?')}"
        else:
            kind = f"dense d_model {model.get('d_model', '?')}"
        if self.is_ensemble():
            kind = f"{self.members} × {kind}"
        return kind, (method if self.is_ensemble() else "—")

    def params(self) -> tuple[float, float]:
        """(total, active per token) of the whole run: an ensemble's members all count,
        and every token passes through all of them."""
        meta = self.reader.meta if isinstance(self.reader.meta, dict) else {}
        return C.run_params({**meta, "members": self.members})

    def loss_member(self) -> int:
        return -1 if self.is_ensemble() else 0

    def val_loss(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sc.get(("val/loss", self.loss_member()), (np.zeros(0, np.int64), np.zeros(0)))

    def tokens_at(self, steps: np.ndarray) -> np.ndarray:
        """Training tokens (per member) seen by each step."""
        tok = self.sc.get(("tokens", -1))
        if tok is not None and tok[0].size >= 2:
            return np.interp(steps, tok[0], tok[1])
        data = (self.reader.config or {}).get("data") or {}
        return steps * float(data.get("batch_size", 1)) * float(data.get("context", 1))

    def last_eval_step(self) -> int | None:
        s = self.sc.get(("ens/gain", -1))
        if s is not None and s[0].size:
            return int(s[0][-1])
        v = self.val_loss()
        return int(v[0][-1]) if v[0].size else None


# ---------------------------------------------------------------------------- dashboard
class EnsembleDashboard(RunDashboard):
    """Member and ensemble losses, pairwise agreement, diversity, rules, probe text, and
    the comparison of every shown run."""

    report_aspect = 0.64

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._all: list[Path] = []
        self._shown_before = 0
        self._runs: list[_Run] = []
        self._compare_errors: list[str] = []
        self._members = 1
        self._sc: dict = {}
        self._tensor_cache: dict[tuple[str, int], np.ndarray] = {}
        self._eval_steps = np.zeros(0, np.int64)
        self._probe: SnapshotCache | None = None
        self._version = 0
        self._drawn_curves: tuple | None = None
        self._drawn_compare: tuple | None = None
        self._compare_version = 0
        self._mi_scale = 1.0
        self._levels = np.zeros(0, np.int64)
        self._probe_snap = None
        self._pair_cmap = ""

        hide_layers = getattr(self.controls, "set_layer_selector_visible", None)
        if callable(hide_layers):
            hide_layers(False)
        else:
            self.controls.layer_combo.setVisible(False)
        self.pair_combo = QComboBox()
        self.pair_combo.setToolTip("The pairwise member × member measure the matrix shows")
        for name, title, _lv, _div in PAIR_VIEWS:
            self.pair_combo.addItem(title, name)
        self.pair_combo.currentIndexChanged.connect(lambda _i: self._draw())
        self.controls.add_widget(self.pair_combo)

        # -------- members & agreement
        self.losses = CurvePlot("Validation loss · solid: all tokens · dashed: rules, report half",
                                "step", "nats / token")
        self.losses.plot_item.setToolTip(
            "Solid: each member and the ensemble (mean of probabilities) on all validation "
            "tokens.\nDashed: each combination rule on the report half of the kept "
            "validation windows\n(the other half fits the loss-weighted and stacking rules). "
            "Majority vote starts hidden: click its legend entry.")
        self.pairs = HeatmapPlot("Top-1 agreement", "member", "member", annotate=True,
                                 value_label="")
        self.oracle = CurvePlot("Diversity of correctness (Kuncheva & Whitaker)", "step", "")
        self.oracle.plot_item.setToolTip(
            "Pair means over the members' right/wrong outcomes on the report tokens: higher "
            "disagreement,\nlower Q, ρ, κ and double fault mean more diverse members.")
        self.nats = CurvePlot("Divergence and gain (nats / token)", "step", "nats")
        self.nats.plot_item.setToolTip(
            "Jensen-Shannon: pair mean between members' predictive distributions.\n"
            "Mutual information: entropy of the mean minus the mean entropy (disagreement).\n"
            "Gain: mean member NLL minus the mean-of-probabilities ensemble NLL.")
        self.rules = _Table(["rule", "NLL", "accuracy", "gain"])
        self.rules.setToolTip("At the selected evaluation, on the report half of the kept "
                              "validation windows.\nNLL in nats/token; gain = mean member "
                              "NLL − rule NLL (positive: combining helps).")
        self.rules_title = QLabel("Rules")
        self.probe_title = QLabel("Probe text")
        self.probe_title.setTextFormat(Qt.TextFormat.RichText)
        self.probe_title.setWordWrap(True)
        self.probe = RoutedTextView()
        self.probe.setToolTip("")
        self._markers: list[pg.InfiniteLine] = []
        for plot in (self.losses, self.oracle, self.nats):
            m = pg.InfiniteLine(angle=90, movable=False)
            m.setZValue(900)
            m.hide()
            plot.plot_item.addItem(m, ignoreBounds=True)
            self._markers.append(m)

        right = _titled(self.rules_title, self.rules)
        probe_box = _titled(self.probe_title, self.probe)

        content = QWidget()
        grid = QGridLayout(content)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(6)
        grid.addWidget(self.losses, 0, 0, 1, 2)
        grid.addWidget(self.pairs, 0, 2)
        grid.addWidget(self.oracle, 1, 0)
        grid.addWidget(self.nats, 1, 1)
        grid.addWidget(right, 1, 2)
        grid.addWidget(probe_box, 2, 0, 1, 3)
        grid.setRowStretch(0, 5)
        grid.setRowStretch(1, 4)
        grid.setRowStretch(2, 3)
        for c in range(3):
            grid.setColumnStretch(c, 1)

        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setTextFormat(Qt.TextFormat.RichText)
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setMargin(40)
        self.members_page = QStackedWidget()
        self.members_page.addWidget(self.empty)
        self.members_page.addWidget(content)

        # -------- compare runs
        self.compare_losses = CurvePlot("Validation loss vs training tokens", "tokens (per member)",
                                        "nats / token")
        self.compare_gain = CurvePlot("Ensemble gain over time (nats / token)", "step", "nats")
        self.compare_table = _Table(self._compare_headers())
        self.compare_note = QLabel()
        self.compare_note.setWordWrap(True)
        self.compare_note.setTextFormat(Qt.TextFormat.RichText)
        compare = QWidget()
        cg = QGridLayout(compare)
        cg.setContentsMargins(0, 0, 0, 0)
        cg.setSpacing(6)
        cg.addWidget(self.compare_losses, 0, 0)
        cg.addWidget(self.compare_gain, 0, 1)
        cg.addWidget(self.compare_note, 1, 0, 1, 2)
        cg.addWidget(self.compare_table, 2, 0, 1, 2)
        cg.setRowStretch(0, 5)
        cg.setRowStretch(2, 2)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.members_page, "Members && agreement")
        self.tabs.addTab(compare, "Compare runs")
        self.tabs.currentChanged.connect(lambda _i: self._draw())
        self._layout.addWidget(self.tabs, 1)
        self._style_lines()

    # ------------------------------------------------------------------ runs
    def set_runs(self, paths) -> None:
        """Details of the first ensemble run among ``paths`` (else of the first run); every
        run of ``paths`` in the comparison."""
        self._close_compare()
        paths = [Path(p) for p in paths]
        self._all = paths
        main = None
        for p in paths:
            try:
                run = _Run(p, open_run(p))
            except (RunFileError, OSError) as exc:
                self._compare_errors.append(error_text(exc))
                continue
            self._runs.append(run)
            if main is None and run.is_ensemble():
                main = p
        if main is None and paths:
            main = paths[0]
        self._load_compare()
        # going from one run to several (or back) opens the page that suits; the same
        # number of runs again keeps the page the user chose
        compare = len(paths) > 1
        if compare != (self._shown_before > 1):
            self.tabs.blockSignals(True)
            self.tabs.setCurrentIndex(1 if compare else 0)
            self.tabs.blockSignals(False)
        self._shown_before = len(paths)
        super().set_runs([main] if main is not None else [])
        if self._reader is None:        # nothing to follow: the comparison still draws
            self._draw()

    def runs(self) -> list[Path]:
        return list(self._all)

    def set_report_mode(self, on: bool) -> None:
        """For ``moe-studio report``: one page (the comparison for several runs)."""
        self.tabs.tabBar().setVisible(not on)

    def _close_compare(self) -> None:
        for r in self._runs:
            r.reader.close()
        self._runs = []
        self._compare_errors = []

    def closeEvent(self, event) -> None:
        self._close_compare()
        super().closeEvent(event)

    def _load_compare(self) -> None:
        for r in self._runs:
            try:
                r.load()
            except Exception as exc:  # noqa: BLE001 - one broken run never sinks the view
                msg = f"{r.name}: {error_text(exc)}"
                if msg not in self._compare_errors:
                    self._compare_errors.append(msg)
        self._compare_version += 1

    # ------------------------------------------------------------------ data
    def is_ensemble(self) -> bool:
        return self._members > 1

    def report_empty_reason(self) -> str:
        """Why a report leaves this view out ("" when it has something to show)."""
        if self.is_ensemble() or any(r.is_ensemble() for r in self._runs):
            return ""
        return "none of these runs is an ensemble"

    def _reset(self) -> None:
        super()._reset()
        self._members = 1
        self._sc = {}
        self._tensor_cache = {}
        self._eval_steps = np.zeros(0, np.int64)
        self._probe = None
        self._probe_snap = None
        self._drawn_curves = None
        self._version += 1
        for plot in (self.losses, self.oracle, self.nats):
            plot.clear_series()
        self.rules.set_rows([])
        self._clear_pairs()

    def _load(self, reader: RunReader) -> None:
        self._members = self._members_of(reader)
        if not self.is_ensemble():
            self.controls.set_steps([])
            return
        self._sc = scalar_table(reader.scalars(self._scalar_names()))
        self._probe = SnapshotCache(reader, "ensemble/probe", member=-1, size=8)
        self._update_steps()

    def _scalar_names(self) -> list[str]:
        return (["val/loss", "val/acc", "ens/member/val_loss", "ens/member/val_acc"]
                + [f"ens/{r}/val_{k}" for r in RULES + EXTRA_RULES for k in ("loss", "acc")]
                + [n for n, _ in ORACLE + NATS])

    def run_rules(self) -> tuple[str, ...]:
        """The rules this run recorded: the five of every ensemble, and the headline rule
        ``ensemble.combine`` added (sum of logits, SAMME) when it did."""
        return RULES + tuple(r for r in EXTRA_RULES if (f"ens/{r}/val_loss", -1) in self._sc)

    def _ingest(self, upd) -> bool:
        changed = False
        if self.is_ensemble():
            df = upd.scalars
            if len(df):
                want = set(self._scalar_names())
                df = df[df["name"].astype(str).isin(want)]
                if len(df):
                    _merge(self._sc, scalar_table(df))
                    self._version += 1
                    changed = True
            if upd.new_tensor_steps:
                changed = True
            if upd.new_snapshots and self._probe is not None:
                self._probe.refresh_steps()
                changed = True
            if changed:
                self._update_steps()
        new_eval = len(upd.scalars) and (upd.scalars["name"].astype(str) == "val/loss").any()
        if new_eval and self._runs:      # the comparison moves on with each evaluation
            self._load_compare()
            changed = True
        return changed

    def _update_steps(self) -> None:
        steps = self._reader.tensor_steps("ens/agreement", member=-1) if self._reader else []
        if len(steps) == 0:      # no pairwise records yet (one member evaluated so far)
            sv = self._sc.get(("val/loss", -1))
            steps = sv[0] if sv is not None else []
        self._eval_steps = np.asarray(steps, np.int64)
        self.controls.set_steps(self._eval_steps)

    def pair_matrix(self, name: str, step: int | None) -> np.ndarray | None:
        """The [n_members, n_members] record ``name`` at ``step`` (exactly), or None."""
        if step is None or self._reader is None:
            return None
        key = (name, int(step))
        mat = self._tensor_cache.get(key)
        if mat is None:      # (a miss is not kept: a live run may write it a moment later)
            got = self._reader.tensor(name, step, member=-1)
            if got is not None and got[0] == step:
                mat = self._tensor_cache[key] = got[1]
        return mat

    def pair_view(self) -> str:
        return str(self.pair_combo.currentData())

    def set_pair_view(self, name: str) -> None:
        i = self.pair_combo.findData(name)
        if i < 0:
            raise ValueError(f"no pairwise view {name!r}")
        self.pair_combo.setCurrentIndex(i)

    # ------------------------------------------------------------------ drawing
    def _show(self) -> None:
        text = NO_ENSEMBLE_HTML if is_inspection(self._reader) else EMPTY_TEXT
        if self.empty.text() != text:
            self.empty.setText(text)
        self.members_page.setCurrentIndex(1 if self.is_ensemble() else 0)
        self.pair_combo.setEnabled(self.is_ensemble())
        if self.is_ensemble():
            step = self.step()
            key = self._version
            if key != self._drawn_curves:
                self._drawn_curves = key
                self._draw_curves()
            self._draw_pairs(step)
            self._draw_rules(step)
            self._draw_probe(step)
            self._set_markers(step)
        if self._drawn_compare != self._compare_version:
            self._drawn_compare = self._compare_version
            self._draw_compare()

    def _draw(self) -> None:
        super()._draw()
        if self._reader is None and self._drawn_compare != self._compare_version:
            self.members_page.setCurrentIndex(0)
            self._drawn_compare = self._compare_version
            self._draw_compare()

    def _move_markers(self, step: int | None) -> None:
        move_step_markers(self._markers, step)

    def _draw_curves(self) -> None:
        M = self._members
        for m in range(M):
            sv = self._sc.get(("val/loss", m))
            if sv is not None:
                # the members as one key: their curves differ little, four entries
                # for them would crowd the plot
                self.losses.set_series(f"m{m}", sv[0], sv[1], label=f"member {m}", color=m,
                                       symbol="o", smooth=False,
                                       legend_group=f"members 0–{M - 1}" if M > 1 else None)
        sv = self._sc.get(("val/loss", -1))
        if sv is not None:
            self.losses.set_series("ensemble", sv[0], sv[1], label="ensemble (mean prob.)",
                                   color="ensemble", symbol="o", smooth=False)
        for j, rule in enumerate(self.run_rules()):
            sv = self._sc.get((f"ens/{rule}/val_loss", -1))
            if sv is not None:
                new = f"rule:{rule}" not in self.losses.series_keys()
                self.losses.set_series(f"rule:{rule}", sv[0], sv[1], label=f"rule: {RULE_LABELS[rule]}",
                                       color=(M + j) % 10, dash=True, smooth=False)
                if new and rule == "vote":
                    # a vote puts ~all mass on the majority's byte: its NLL is several
                    # times the others' and would flatten them (the legend shows it)
                    self.losses.set_series_visible(f"rule:{rule}", False)
        for plot, names in ((self.oracle, ORACLE), (self.nats, NATS)):
            for j, (name, label) in enumerate(names):
                sv = self._sc.get((name, -1))
                if sv is not None:
                    plot.set_series(name, sv[0], sv[1], label=label, color=j, symbol="o",
                                    smooth=False)
        for plot in (self.losses, self.oracle, self.nats):
            plot.sync_range()
            plot.set_placeholder("" if plot.series_keys() else
                                 "No evaluation with two or more members yet")

    def _draw_pairs(self, step: int | None) -> None:
        name = self.pair_view()
        spec = next(v for v in PAIR_VIEWS if v[0] == name)
        mat = self.pair_matrix(name, step)
        if mat is None:
            self._clear_pairs()
            self._set_title_later(self.pairs, f"{spec[1]} · no record at this step")
            return
        # snapshot / boosting evaluate members 0..k (k: the member in training)
        labels = [f"m{m}" for m in range(mat.shape[0])]
        colors = plot_colors(is_dark_palette(self.palette()))
        cmap = colors["colormap_diverging" if spec[3] else "colormap"]
        if self._pair_cmap != cmap:
            self._pair_cmap = cmap
            self.pairs.set_colormap(cmap)
        self.pairs.set_matrix(mat, x_labels=labels, y_labels=labels, fixed_levels=spec[2])
        self._set_title_later(self.pairs, f"{spec[1]} · step {step:,}")

    def _clear_pairs(self) -> None:
        # one blank (NaN) cell: the heatmap cannot show an empty matrix
        self.pairs.set_matrix(np.full((1, 1), np.nan), x_labels=[""], y_labels=[""])

    def rules_rows(self, step: int | None) -> list[tuple[str, float, float, float]]:
        """``(label, NLL, accuracy, gain over mean member)`` per row of the rules table:
        every rule, then the mean and the best member, all on the report tokens."""
        sc = self._sc
        n = self._members
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

    def _draw_rules(self, step: int | None) -> None:
        rows = self.rules_rows(step)
        nll = np.array([r[1] for r in rows[:len(self.run_rules())]])
        bold = set()
        if np.isfinite(nll).any():
            best = int(np.nanargmin(nll))
            bold = {(best, c) for c in range(4)}
        self.rules.set_rows([[label, fmt_fixed(a), fmt_fixed(b), f"{c:+.4f}" if math.isfinite(c) else "—"]
                             for label, a, b, c in rows], bold=bold)
        self.rules_title.setText(f"Rules at step {step:,} (report tokens)" if step is not None
                                 else "Rules")

    # ------------------------------------------------------------------ probe
    def probe_shades(self) -> list[QColor]:
        """The background colour of each shade level (level 0 is never drawn)."""
        dark = is_dark_palette(self.palette())
        bg = QColor(plot_colors(dark)["background"])
        accent = QColor("#ff7f0e" if dark else "#d9480f")
        top = 0.75 if dark else 0.6
        return [_blend(accent, bg, top * lv / (MI_LEVELS - 1)) for lv in range(MI_LEVELS)]

    def probe_levels(self) -> np.ndarray:
        """Shade level per probe token as drawn (0 = unshaded)."""
        return self._levels

    def _draw_probe(self, step: int | None) -> None:
        snap = self._probe.get(step) if self._probe is not None else None
        self._probe_snap = snap
        if snap is None:
            self.probe.set_routing(np.zeros(0, np.uint8), np.zeros(0, np.int64), [])
            self.probe_title.setText("Probe text: no snapshot yet")
            self._levels = np.zeros(0, np.int64)
            return
        mi = snap.arrays["mutual_info"]
        self._levels, self._mi_scale = mi_levels(mi)
        colors = self.probe_shades()
        experts = np.where(self._levels > 0, self._levels, -1)
        self.probe.set_routing(snap.arrays["tokens"], experts, colors, self._probe_tooltip)
        chips = "".join(f'<span style="background:{c.name()}">&nbsp;&nbsp;&nbsp;</span>'
                        for c in colors[1:])
        chips = f"low {chips} ≥ {self._mi_scale:.3f} nats"
        self.probe_title.setText(
            f"<b>Probe text</b> at step {snap.step:,}: each character shaded by how much the "
            f"members disagree about the next one (mutual information) {chips} · hover a "
            f"character for every member's guess")

    def _probe_tooltip(self, i: int) -> str:
        snap = self._probe_snap
        if snap is None:
            return ""
        a = snap.arrays
        tok = a["tokens"]
        top1 = a["top1"]
        members = snap.meta.get("members") or list(range(top1.shape[0]))
        nxt = f"«{html.escape(byte_label(tok[i + 1]))}»" if i + 1 < len(tok) else "(end of text)"
        lines = [f"<b>token {i}</b> «{html.escape(byte_label(tok[i]))}» · actual next {nxt}"]
        for j, m in enumerate(members):
            guess = int(top1[j, i])
            mark = " ✓" if i + 1 < len(tok) and guess == int(tok[i + 1]) else ""
            lines.append(f"member {m}: «{html.escape(byte_label(guess))}»{mark}")
        lines.append(f"mutual information {float(a['mutual_info'][i]):.4f} nats · "
                     f"entropy of the mean {float(a['entropy_total'][i]):.3f} nats")
        return "<br>".join(lines)

    # ------------------------------------------------------------------ compare
    @staticmethod
    def _compare_headers() -> list[str]:
        return (["run", "model", "method", "members", "params\ntotal", "active\n/ token",
                 "val\nloss", "step"] + [f"{r}\nNLL" for r in RULES]
                + ["gain", "dis-\nagreement", "JS", "MI", "KW\nvariance", "entropy\nE"])

    def compare_rows(self) -> list[list[Any]]:
        """One row per shown run, the values of ``_compare_headers()`` (numbers as
        floats, NaN where a run has no such record)."""
        rows = []
        for r in self._runs:
            kind, method = r.describe()
            tot, act = r.params()
            step = r.last_eval_step()
            vs, vv = r.val_loss()
            val = float(vv[-1]) if vv.size else math.nan
            ens = [value_at(r.sc, f"ens/{x}/val_loss", -1, step) for x in RULES]
            div = [value_at(r.sc, n, -1, step) for n in
                   ("ens/gain", "ens/disagreement", "ens/js_divergence", "ens/mutual_info",
                    "ens/kw_variance", "ens/entropy_e")]
            rows.append([r.name, kind, method, r.members, tot, act, val,
                         step if step is not None else math.nan] + ens + div)
        return rows

    def _draw_compare(self) -> None:
        rows = self.compare_rows()
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
        self.compare_table.set_rows(texts, bold=bold)
        keep_l, keep_g = set(), set()
        for j, r in enumerate(self._runs):
            s, v = r.val_loss()
            if s.size:
                k = f"{j}:{r.name}"
                self.compare_losses.set_series(k, r.tokens_at(s), v, label=r.name, color=j,
                                               symbol="o", smooth=False)
                keep_l.add(k)
            g = r.sc.get(("ens/gain", -1))
            if g is not None and g[0].size:
                k = f"{j}:{r.name}"
                self.compare_gain.set_series(k, g[0], g[1], label=r.name, color=j, symbol="o",
                                             smooth=False)
                keep_g.add(k)
        for plot, keep in ((self.compare_losses, keep_l), (self.compare_gain, keep_g)):
            for k in plot.series_keys():
                if k not in keep:
                    plot.remove_series(k)
            plot.sync_range()
        self.compare_losses.set_placeholder("" if keep_l else "No validation loss recorded")
        self.compare_gain.set_placeholder("" if keep_g else
                                          "None of the shown runs is an ensemble")
        self.compare_note.setText(self._compare_text(rows))

    def _compare_text(self, rows: list[list[Any]]) -> str:
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
        if self._compare_errors:
            text += f" · <i>{html.escape(self._compare_errors[-1])}</i>"
        return text + (". Validation loss: ensembles use the mean of their members' "
                       "probabilities on all validation tokens; rule columns are on the "
                       "report half.")

    # ------------------------------------------------------------------ look
    def _style_lines(self) -> None:
        c = plot_colors(is_dark_palette(self.palette()))
        pen = pg.mkPen(QColor(c["foreground"]), width=1.2, style=Qt.PenStyle.DashLine)
        for m in self._markers:
            m.setPen(pen)

    def _palette_changed(self) -> None:
        self._style_lines()
        if self._loaded and self.is_ensemble():
            self._draw_probe(self.step())
            self._draw_pairs(self.step())

    def _status_extra(self) -> str:
        if not self._loaded:
            return ""
        if not self.is_ensemble():
            return "single model: no ensemble"
        meta = self._reader.meta if self._reader is not None else {}
        method = ((meta or {}).get("ensemble") or {}).get("method") or ""
        extra = f"{self._members} members" + (f", {method}" if method else "")
        if len(self._all) > 1:
            extra += f" · {len(self._all)} runs"
        return extra
