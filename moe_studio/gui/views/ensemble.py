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

"Compare runs" (every shown run, ``ensemble_compare``): validation loss against training
tokens, the gain over time of each ensemble, and one table row per run with its
parameters, every rule's NLL, gain and diversity at its last evaluation.

What is drawn is read by ``ensemble_data.EnsembleData`` (Qt-free).

A single-model run gets a short explanation of how to train an ensemble instead.
Everything is read from the run store (records described in docs/CONTRACTS.md).
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QGridLayout, QLabel, QStackedWidget, QTabWidget, QVBoxLayout, QWidget

from ...store import RunReader
from ..formats import fmt_fixed
from ..theme import is_dark_palette, plot_colors
from ..widgets.heatmap import HeatmapPlot
from ..widgets.plots import CurvePlot
from ..widgets.routed_text import RoutedTextView
from .dashboard import RunDashboard, move_step_markers
from .run_data import SnapshotCache
from ..widgets.text_table import TextTable
from .ensemble_compare import HEADERS as _COMPARE_HEADERS
from .ensemble_compare import EnsembleComparePage
from .ensemble_data import (EXTRA_RULES, MI_LEVELS, NATS, ORACLE, PAIR_VIEWS,  # noqa: F401 - re-exported
                            RULE_LABELS, RULES, EnsembleData, byte_label, mi_levels,
                            scalar_table, value_at)
from .inspection_runs import NO_ENSEMBLE_HTML, is_inspection

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


# ---------------------------------------------------------------------------- dashboard
class EnsembleDashboard(RunDashboard):
    """Member and ensemble losses, pairwise agreement, diversity, rules, probe text, and
    the comparison of every shown run."""

    report_aspect = 0.64

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._all: list[Path] = []
        self._shown_before = 0
        self.data = EnsembleData()     # what the members page draws, read without Qt
        self._eval_steps = np.zeros(0, np.int64)
        self._probe: SnapshotCache | None = None
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
        # (two decimals: four did not fit a cell of four members at 1280 x 800)
        self.pairs = HeatmapPlot("Top-1 agreement", "member", "member", annotate=True,
                                 value_label="", value_format=lambda v: f"{v:.2f}")
        self.oracle = CurvePlot("Diversity of correctness (Kuncheva & Whitaker)", "step", "")
        self.oracle.plot_item.setToolTip(
            "Pair means over the members' right/wrong outcomes on the report tokens: higher "
            "disagreement,\nlower Q, ρ, κ and double fault mean more diverse members.")
        self.nats = CurvePlot("Divergence and gain (nats / token)", "step", "nats")
        self.nats.plot_item.setToolTip(
            "Jensen-Shannon: pair mean between members' predictive distributions.\n"
            "Mutual information: entropy of the mean minus the mean entropy (disagreement).\n"
            "Gain: mean member NLL minus the mean-of-probabilities ensemble NLL.")
        self.rules = TextTable(["rule", "NLL", "accuracy", "gain"])
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

        # -------- compare runs (its own module)
        self.compare_page = EnsembleComparePage()
        self.compare_losses, self.compare_gain = self.compare_page.losses, self.compare_page.gain
        self.compare_table, self.compare_note = self.compare_page.table, self.compare_page.note

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.members_page, "Members && agreement")
        self.tabs.addTab(self.compare_page, "Compare runs")
        self.tabs.currentChanged.connect(lambda _i: self._draw())
        self._layout.addWidget(self.tabs, 1)
        self._style_lines()

    # ------------------------------------------------------------------ runs
    def set_runs(self, paths) -> None:
        """Details of the first ensemble run among ``paths`` (else of the first run); every
        run of ``paths`` in the comparison."""
        paths = [Path(p) for p in paths]
        self._all = paths
        self.compare_page.set_runs(paths)
        self._compare_version += 1
        main = self.compare_page.first_ensemble()
        if main is None and paths:
            main = paths[0]
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

    def closeEvent(self, event) -> None:
        self.compare_page.close_runs()
        super().closeEvent(event)

    # ------------------------------------------------------------------ data
    def is_ensemble(self) -> bool:
        return self.data.is_ensemble()

    def report_empty_reason(self) -> str:
        """Why a report leaves this view out ("" when it has something to show)."""
        if self.is_ensemble() or self.compare_page.any_ensemble():
            return ""
        return "none of these runs is an ensemble"

    def _reset(self) -> None:
        super()._reset()
        self.data.reset()
        self._eval_steps = np.zeros(0, np.int64)
        self._probe = None
        self._probe_snap = None
        self._drawn_curves = None
        for plot in (self.losses, self.oracle, self.nats):
            plot.clear_series()
        self.rules.set_rows([])
        self._clear_pairs()

    def _load(self, reader: RunReader) -> None:
        self.data.load(reader, self._members_of(reader))
        if not self.is_ensemble():
            self.controls.set_steps([])
            return
        self._probe = SnapshotCache(reader, "ensemble/probe", member=-1, size=8,
                                     required=("tokens", "mutual_info", "top1"))
        self._update_steps()

    def run_rules(self) -> tuple[str, ...]:
        """The rules this run recorded: the five of every ensemble, and the headline rule
        ``ensemble.combine`` added (sum of logits, SAMME) when it did."""
        return self.data.run_rules()

    def _ingest(self, upd) -> bool:
        changed = False
        if self.is_ensemble():
            changed = self.data.ingest(upd.scalars)
            if upd.new_tensor_steps:
                changed = True
            if upd.new_snapshots and self._probe is not None:
                self._probe.refresh_steps()
                changed = True
            if changed:
                self._update_steps()
        new_eval = len(upd.scalars) and (upd.scalars["name"].astype(str) == "val/loss").any()
        if new_eval and self.compare_page.runs:   # the comparison moves on with each evaluation
            self.compare_page.refresh()
            self._compare_version += 1
            changed = True
        return changed

    def _update_steps(self) -> None:
        self._eval_steps = self.data.eval_steps(self._reader)
        self.controls.set_steps(self._eval_steps)

    def pair_matrix(self, name: str, step: int | None) -> np.ndarray | None:
        """The [n_members, n_members] record ``name`` at ``step`` (exactly), or None."""
        return self.data.pair_matrix(self._reader, name, step)

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
            key = self.data.version
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
        M = self.data.members
        for m in range(M):
            sv = self.data.sc.get(("val/loss", m))
            if sv is not None:
                # the members as one key: their curves differ little, four entries
                # for them would crowd the plot
                self.losses.set_series(f"m{m}", sv[0], sv[1], label=f"member {m}", color=m,
                                       symbol="o", smooth=False,
                                       legend_group=f"members 0–{M - 1}" if M > 1 else None)
        sv = self.data.sc.get(("val/loss", -1))
        if sv is not None:
            self.losses.set_series("ensemble", sv[0], sv[1], label="ensemble (mean prob.)",
                                   color="ensemble", symbol="o", smooth=False)
        for j, rule in enumerate(self.run_rules()):
            sv = self.data.sc.get((f"ens/{rule}/val_loss", -1))
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
                sv = self.data.sc.get((name, -1))
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
        return self.data.rules_rows(step)

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
        return list(_COMPARE_HEADERS)

    def compare_rows(self) -> list[list[Any]]:
        """One row per shown run, the values of ``_compare_headers()`` (numbers as
        floats, NaN where a run has no such record)."""
        return self.compare_page.rows()

    def _draw_compare(self) -> None:
        self.compare_page.draw()

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
        extra = f"{self.data.members} members" + (f", {method}" if method else "")
        if len(self._all) > 1:
            extra += f" · {len(self._all)} runs"
        return extra
