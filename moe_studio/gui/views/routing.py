"""Routing: where the router sends each token of the probe text.

From the ``routing/probe`` snapshots (or from text the user routes through the run's
model with ``engine.probe``):

* a token x expert heatmap of gate probabilities per layer, the characters on the axis
  (all layers: the layers stacked);
* the text, every character coloured by its token's top-1 expert (hover: every layer's
  top-k experts and weights);
* a domain x expert and a token-class x expert matrix: the share of each group's
  token-choices that goes to each expert (all k choices or top-1 only), coloured
  around the uniform share 1/E;
* clicking a cell lists the tokens behind it.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton,
                               QSizePolicy, QSplitter, QVBoxLayout, QWidget)

from ..formats import fmt_percent
from ...data.tokenizer import TOKEN_CLASSES, ByteTokenizer, token_classes
from ...metrics import routing as R
from ...store import RunReader
from ..widgets.heatmap import HeatmapPlot
from ..run.child_route import ChildRoute
from ..widgets.routed_text import (RoutedTextView, TokenListPanel, expert_colors, legend_html,
                          text_background, token_rows)
from .dashboard import DENSE_STATUS, RunDashboard
from .routing_custom import _PLACEHOLDER, SOURCE_CUSTOM, SOURCE_RECORDED, CustomRouteMixin
from .run_data import PROBE_ARRAYS, SnapshotCache, expert_names
from ..theme import diverging_colormap, is_dark_palette, plot_colors
from ..run.tasks import BackgroundTask

_TOKENIZER = ByteTokenizer()


class RoutingDashboard(CustomRouteMixin, RunDashboard):
    """Token x expert heatmap, routed text, domain / class x expert matrices, custom probe."""

    routes_tokens = True

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._snaps: SnapshotCache | None = None
        self._custom: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None
        self._cur: tuple[dict[str, np.ndarray], dict[str, Any], str] | None = None
        self._labels_key: bytes | None = None
        self._labels: list[str] = []
        self._window_set_for: bytes | None = None
        self._ckpt_key: tuple | None = None
        self._shares: dict[str, tuple[np.ndarray, list[int]]] = {}
        self.task = BackgroundTask(self, name="probe")
        self._router = ChildRoute()
        self._controller = None           # the app's TrainingController (live weights)
        self._pending_live: tuple[str, str, int] | None = None   # (path, text, member)
        self._live_file = ""
        self._reason_shown = False        # the probe note says why nothing can be routed

        self.count_combo = QComboBox()
        self.count_combo.addItem("All k choices", False)
        self.count_combo.addItem("Top-1 only", True)
        self.count_combo.setToolTip("What the share matrices count: every one of a token's k "
                                    "expert choices, or only its first choice")
        self.controls.add_widget(QLabel("Count"))
        self.controls.add_widget(self.count_combo)

        # -- the probe: recorded, or the user's text routed through the run's weights
        self.source_combo = QComboBox()
        self.source_combo.addItem("Recorded probe", SOURCE_RECORDED)
        self.source_combo.addItem("Custom text", SOURCE_CUSTOM)
        self.source_combo.model().item(1).setEnabled(False)
        self.source_combo.setToolTip("Show the probe recorded during training (at the "
                                     "selected step) or your own text routed below")
        self.probe_edit = QPlainTextEdit()
        self.probe_edit.setPlaceholderText(_PLACEHOLDER)
        self.probe_edit.setFixedHeight(self.fontMetrics().lineSpacing() * 2 + 14)
        self.probe_edit.setTabChangesFocus(True)
        self.probe_edit.installEventFilter(self)
        self.weights_combo = QComboBox()
        self.weights_combo.setToolTip("Which weights of the run route the text")
        self.weights_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.route_button = QPushButton("Route")
        self.route_button.setToolTip("Route the text through the chosen weights (in the "
                                     "background) and show it here")
        self.probe_note = QLabel()
        self.probe_note.setTextFormat(Qt.TextFormat.RichText)
        self.probe_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # The text box takes the width; the weights, the button and the note share a
        # column beside it (the box is two lines tall), so a note never squeezes the box.
        probe_row = QHBoxLayout()
        probe_row.setContentsMargins(6, 0, 6, 0)
        probe_row.setSpacing(8)
        probe_row.addWidget(QLabel("Probe"), 0, Qt.AlignmentFlag.AlignTop)
        probe_row.addWidget(self.source_combo, 0, Qt.AlignmentFlag.AlignTop)
        probe_row.addWidget(self.probe_edit, 1)
        side = QVBoxLayout()
        side.setSpacing(2)
        through = QHBoxLayout()
        through.setSpacing(8)
        through.addWidget(QLabel("Route through"))
        through.addWidget(self.weights_combo)
        through.addWidget(self.route_button)
        side.addLayout(through)
        side.addWidget(self.probe_note)
        probe_row.addLayout(side)
        self._layout.addLayout(probe_row)

        # -- views
        self.token_map = HeatmapPlot("Gate probability · token × expert", "", "expert",
                                     colormap=plot_colors(False)["colormap"], fixed_levels=(0.0, 1.0),
                                     value_label="gate probability", mono_x=True,
                                     value_format=lambda v: f"{v:.3f}")
        self.token_map.set_mouse_pan(True, False)
        self.text_view = RoutedTextView()
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        # No x caption: the title says "× expert" and the columns are labelled e0, e1, ...;
        # the line it took is the rows' (at 1280 x 800 a layer's rows had no room for
        # the layer's name).
        self.domain_map = HeatmapPlot("Domain × expert", "", "", annotate=True,
                                      colormap=self._diverging(), value_format=fmt_percent)
        self.class_map = HeatmapPlot("Token class × expert", "", "", annotate=True,
                                     colormap=self._diverging(), value_format=fmt_percent)
        self.tokens = TokenListPanel()

        text_box = QWidget()
        tl = QVBoxLayout(text_box)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(2)
        tl.addWidget(self.legend)
        tl.addWidget(self.text_view, 1)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.token_map)
        left.addWidget(text_box)
        left.setSizes([260, 300])
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.domain_map)
        right.addWidget(self.class_map)
        right.addWidget(self.tokens)
        # The token list is read a few lines at a time; the heatmaps need a line per row.
        right.setSizes([210, 250, 100])
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        main.setSizes([600, 420])
        self._layout.addWidget(main, 1)

        self.count_combo.currentIndexChanged.connect(lambda _i: self._draw())
        self.source_combo.currentIndexChanged.connect(lambda _i: self._draw())
        self.controls.slider.actionTriggered.connect(self._on_user_scrub)
        self.controls.slider.sliderPressed.connect(self._on_user_scrub)
        # clicked(bool) would arrive as the text: the slot takes no argument from it.
        self.route_button.clicked.connect(lambda _checked=False: self.route_custom())
        self.task.succeeded.connect(self._on_routed)
        self.task.failed.connect(self._on_route_failed)
        self.task.finished.connect(self._on_route_finished)
        self.token_map.cellClicked.connect(self._on_token_cell)
        self.domain_map.cellClicked.connect(self._on_domain_cell)
        self.class_map.cellClicked.connect(self._on_class_cell)
        self.token_map.set_hover_formatter(self._hover_token)
        self.domain_map.set_hover_formatter(lambda r, c, v: self._hover_group("domain", r, c, v))
        self.class_map.set_hover_formatter(lambda r, c, v: self._hover_group("class", r, c, v))
        self._update_route_button()

    def _diverging(self) -> str:
        return diverging_colormap(self.palette())

    # ------------------------------------------------------------------ data
    def _reset(self) -> None:
        super()._reset()
        self._snaps = None
        self._custom = None
        self._cur = None
        self._shares = {}
        self._ckpt_key = None
        self.source_combo.setCurrentIndex(0)
        self.source_combo.model().item(1).setEnabled(False)
        self.tokens.clear("Click a heatmap cell to list the tokens behind it")
        self.probe_note.setText("")
        self._reason_shown = False
        self._pending_live = None   # an answer for the run shown before is ignored

    def _load(self, reader: RunReader) -> None:
        self.controls.set_members(self._members_of(reader))
        self._snaps = SnapshotCache(reader, member=self.member(), required=PROBE_ARRAYS)
        snap = self._snaps.get(None)
        blocks = snap.meta.get("moe_blocks") if snap is not None else reader.meta.get("moe_blocks")
        self.controls.set_layers([int(b) for b in (blocks or [])])
        self.controls.set_steps(self._snaps.steps())
        self._refresh_checkpoints()

    def _ingest(self, upd) -> bool:
        changed = False
        if upd.new_snapshots and self._snaps is not None:
            before = self._snaps.steps().size
            self._snaps.refresh_steps()
            if before == 0:
                snap = self._snaps.get(None)
                if snap is not None:
                    self.controls.set_layers([int(b) for b in snap.meta.get("moe_blocks", [])])
            self.controls.set_steps(self._snaps.steps())
            changed = self.source() == SOURCE_RECORDED
        ev = upd.new_events
        if len(ev) and "kind" in ev and (ev["kind"] == "checkpoint").any():
            self._refresh_checkpoints()
        return changed

    # ------------------------------------------------------------------ what is shown
    def current(self) -> tuple[dict[str, np.ndarray], dict[str, Any], str] | None:
        """``(arrays, meta, description)`` of the probe shown, or None."""
        return self._cur

    def _pick(self) -> tuple[dict[str, np.ndarray], dict[str, Any], str] | None:
        if self.source() == SOURCE_CUSTOM and self._custom is not None:
            a, meta = self._custom
            return a, meta, f"custom text · {meta.get('source', '')}"
        if self._snaps is None:
            return None
        snap = self._snaps.get(self.step())
        if snap is None:
            return None
        return snap.arrays, snap.meta, f"probe at step {snap.step:,}"

    def rows(self) -> list[int]:
        """Indices into the snapshot's layer axis of the layers shown."""
        if self._cur is None:
            return []
        blocks = list(self._cur[1].get("moe_blocks", []))
        layer = self.layer()
        if layer is None or layer not in blocks:
            return list(range(len(blocks)))
        return [blocks.index(layer)]

    def top1(self) -> bool:
        return bool(self.count_combo.currentData())

    def share_matrices(self) -> dict[str, tuple[np.ndarray, list[int]]]:
        """``{"domain": (share [L, G, E], groups shown), "class": ...}`` of the probe shown
        (all layers; the groups that have tokens)."""
        return self._shares

    def _compute_shares(self) -> dict[str, tuple[np.ndarray, list[int]]]:
        if self._cur is None:
            return {}
        a, meta, _ = self._cur
        E = int(meta.get("n_experts") or a["probs"].shape[-1])
        names = list(meta.get("domain_names", []))
        dom = a["domains"].astype(np.int64)
        n_dom = max(len(names), int(dom.max()) + 1 if dom.size else 0)
        cls = token_classes(a["tokens"]).astype(np.int64)
        out = {}
        for key, groups, n in (("domain", dom, n_dom), ("class", cls, len(TOKEN_CLASSES))):
            share = R.share_matrix(groups, a["topk_idx"], n, E, top1=self.top1())
            present = [g for g in range(n) if np.any(groups == g)]
            out[key] = (share, present)
        return out

    def _show(self) -> None:
        self._cur = self._pick()
        if self._cur is None:
            return
        a, meta, what = self._cur
        blocks = list(meta.get("moe_blocks", []))
        rows = self.rows()
        if not rows:
            return
        E = int(meta.get("n_experts") or a["probs"].shape[-1])
        all_layers = len(rows) > 1
        where = "all layers" if all_layers else f"layer {blocks[rows[0]]}"
        tokens = a["tokens"]
        key = tokens.tobytes()
        if key != self._labels_key:
            self._labels_key = key
            self._labels = _TOKENIZER.token_labels(tokens)
        # token x expert
        probs = a["probs"][rows].astype(np.float32)                       # [L, N, E]
        mat = probs.transpose(0, 2, 1).reshape(len(rows) * E, tokens.size)
        enames = self._expert_names(E)
        ylab = [f"L{blocks[r]} {enames[e]}" if all_layers else enames[e] for r in rows for e in range(E)]
        self._set_title_later(self.token_map, f"Gate probability · {where} · {what}")
        self.token_map.set_matrix(mat, x_labels=self._labels, y_labels=ylab)
        self.token_map.set_separators(rows=[E * k for k in range(1, len(rows))])
        self.token_map.set_row_groups([(f"L{blocks[r]}", E) for r in rows] if all_layers else None,
                                      [n for _ in rows for n in enames])
        if self._window_set_for != key:
            self._window_set_for = key
            w = self.token_map.view_box.width() or 600
            self.token_map.set_view_columns(0, min(tokens.size, max(24, int(w / 12))))
        # text coloured by top-1 expert
        dark = is_dark_palette(self.palette())
        colors = expert_colors(E, dark)
        color_row = rows[-1]
        top1 = a["topk_idx"][color_row, :, 0].astype(np.int64)
        self.text_view.set_routing(tokens, top1, [text_background(c, dark) for c in colors],
                                   self._token_tooltip)
        self.legend.setText(f"Top-1 expert at layer {blocks[color_row]}"
                            + (" (the last; pick a layer above for another)" if all_layers else "")
                            + " · hover a character for every layer's choices<br>"
                            + legend_html(colors, dark, enames))
        # share matrices
        shares = self._shares = self._compute_shares()
        names = list(meta.get("domain_names", []))
        u = R.uniform_share(E)
        experts = enames
        for plot, kind, label_of in ((self.domain_map, "domain",
                                      lambda g: names[g] if g < len(names) else f"domain {g}"),
                                     (self.class_map, "class", lambda g: TOKEN_CLASSES[g])):
            share, present = shares[kind]
            m = np.concatenate([share[r][present] for r in rows], axis=0)
            ylab = [(f"L{blocks[r]} " if all_layers else "") + label_of(g) for r in rows for g in present]
            tv = R.group_total_variation(share[rows][:, present])
            tv_txt = (f" · total variation {np.nanmean(tv):.2f}" if np.isfinite(tv).any()
                      else "")
            title = "Domain × expert" if kind == "domain" else "Token class × expert"
            plot.set_annotate(True)      # drawn where the cells are big enough for it
            self._set_title_later(plot, f"{title}{'' if all_layers else f' · L{blocks[rows[0]]}'}{tv_txt}")
            plot.setToolTip("Share of each group's token-choices sent to each expert; the "
                            "colour scale is centred on the uniform share 1/E.\nTotal "
                            "variation: the mean total-variation distance between the groups' "
                            "rows (0 = routed alike, 1 = disjoint experts).")
            plot.set_matrix(m, x_labels=experts, y_labels=ylab, fixed_levels=(0.0, 2.0 * u))
            plot.set_bar_ticks([(0.0, "0%"), (u, f"{100 * u:.3g}%"), (2 * u, f"{200 * u:.3g}%")])
            plot.set_separators(rows=[len(present) * k for k in range(1, len(rows))])
            plot.set_row_groups([(f"L{blocks[r]}", len(present)) for r in rows]
                                if all_layers else None,
                                [label_of(g) for _ in rows for g in present])
        self._set_markers(self.step())

    def _status_extra(self) -> str:
        if self._cur is None:
            return DENSE_STATUS if self.is_dense_run() else "no probe snapshot yet"
        a, meta, what = self._cur
        E = int(meta.get("n_experts") or a["probs"].shape[-1])
        return f"{a['tokens'].size:,} tokens · {E} experts · uniform share {100 / E:.1f} %"

    # ------------------------------------------------------------------ hover / tooltip
    def _token_desc(self, i: int) -> str:
        a, meta, _ = self._cur
        names = list(meta.get("domain_names", []))
        d = int(a["domains"][i])
        dom = names[d] if d < len(names) else str(d)
        cls = TOKEN_CLASSES[int(token_classes(a["tokens"][i:i + 1])[0])]
        return f"token {i} «{html.escape(self._labels[i])}» · {html.escape(dom)} · {cls}"

    def _choices(self, r: int, i: int) -> str:
        a, meta, _ = self._cur
        idx, w = a["topk_idx"][r, i], a["topk_weight"][r, i].astype(np.float64)
        enames = self._expert_names(a["probs"].shape[-1])
        return ", ".join(f"{enames[int(e)] if 0 <= int(e) < len(enames) else f'e{int(e)}'} "
                         f"{float(x):.2f}" for e, x in zip(idx, w))

    def _expert_names(self, n: int) -> list[str]:
        """The run's names of its ``n`` experts (``run_data.expert_names``)."""
        return expert_names(self._reader.meta if self._reader is not None else {}, n)

    def _token_tooltip(self, i: int) -> str:
        if self._cur is None:
            return ""
        blocks = list(self._cur[1].get("moe_blocks", []))
        lines = [f"<b>{self._token_desc(i)}</b>"]
        for r, b in enumerate(blocks):
            lines.append(f"L{b}: {self._choices(r, i)}")
        return "<br>".join(lines)

    def _token_cell(self, row: int) -> tuple[int, int]:
        """(layer row, expert) of a token-map row."""
        E = self.token_map.matrix().shape[0] // max(1, len(self.rows()))
        return self.rows()[row // E], row % E

    def _hover_token(self, row: int, col: int, v: float) -> list[str]:
        r, e = self._token_cell(row)
        blocks = list(self._cur[1].get("moe_blocks", []))
        return [f"<b>{self._token_desc(col)}</b>",
                f"layer {blocks[r]} · expert {self._expert_names(self._cur[0]['probs'].shape[-1])[e]}: "
                f"p = {v:.3f}",
                f"top-k at L{blocks[r]}: {self._choices(r, col)}"]

    def _group_cell(self, plot: HeatmapPlot, row: int) -> tuple[int, int]:
        """(layer row, group) of a share-matrix row."""
        kind = "domain" if plot is self.domain_map else "class"
        present = self.share_matrices()[kind][1]
        return self.rows()[row // len(present)], present[row % len(present)]

    def _hover_group(self, kind: str, row: int, col: int, v: float) -> list[str]:
        plot = self.domain_map if kind == "domain" else self.class_map
        r, g = self._group_cell(plot, row)
        a, meta, _ = self._cur
        blocks = list(meta.get("moe_blocks", []))
        names = list(meta.get("domain_names", []))
        gname = (names[g] if g < len(names) else str(g)) if kind == "domain" else TOKEN_CLASSES[g]
        groups = a["domains"] if kind == "domain" else token_classes(a["tokens"])
        hits = R.tokens_in_cell(groups, a["topk_idx"][r], g, col, top1=self.top1())
        E = int(meta.get("n_experts") or a["probs"].shape[-1])
        what = "first choices" if self.top1() else "choices"
        return [f"<b>layer {blocks[r]} · {html.escape(gname)} → expert {col}</b>",
                f"{100 * v:.1f} % of its {what} (uniform {100 / E:.1f} %)",
                f"{hits.size} tokens · click to list them"]

    # ------------------------------------------------------------------ clicks
    def _on_token_cell(self, row: int, col: int) -> None:
        r, e = self._token_cell(row)
        a, meta, what = self._cur
        blocks = list(meta.get("moe_blocks", []))
        rows = [(col, f"L{b}: {self._choices(k, col)}", "") for k, b in enumerate(blocks)]
        self.tokens.show_tokens(f"<b>{self._token_desc(col)}</b><br>p(e{e}) = "
                                f"{float(a['probs'][r, col, e]):.3f} at layer {blocks[r]} · "
                                f"{html.escape(what)}", rows)
        self.text_view.select_token(col)

    def _on_domain_cell(self, row: int, col: int) -> None:
        self.list_cell("domain", row, col)

    def _on_class_cell(self, row: int, col: int) -> None:
        self.list_cell("class", row, col)

    def list_cell(self, kind: str, row: int, col: int) -> list[int]:
        """List the tokens behind cell (row, col) of the "domain" or "class" matrix: the
        tokens of that group whose choices (top-1 only, per the Count box) include
        expert ``col`` at that row's layer. Returns their indices."""
        plot = self.domain_map if kind == "domain" else self.class_map
        r, g = self._group_cell(plot, row)
        a, meta, what = self._cur
        blocks = list(meta.get("moe_blocks", []))
        groups = a["domains"] if kind == "domain" else token_classes(a["tokens"])
        idx = a["topk_idx"][r]
        hits = R.tokens_in_cell(groups, idx, g, col, top1=self.top1())
        n_group = int(np.sum(np.asarray(groups) == g))
        w = a["topk_weight"][r].astype(np.float64)

        def note(i: int) -> str:
            k = int(np.flatnonzero(idx[i] == col)[0])
            return f"choice {k + 1}, w {w[i, k]:.2f}"

        names = list(meta.get("domain_names", []))
        gname = (names[g] if g < len(names) else str(g)) if kind == "domain" else TOKEN_CLASSES[g]
        self.tokens.show_tokens(
            f"<b>{html.escape(gname)} → expert {col}</b> at layer {blocks[r]} · {html.escape(what)}: "
            f"{hits.size} of {n_group} {html.escape(gname)} tokens"
            + (" (top-1)" if self.top1() else ""), token_rows(a["tokens"], hits, note))
        return hits.tolist()

    # ------------------------------------------------------------------ lifetime / theme
    def _palette_changed(self) -> None:
        self.domain_map.set_colormap(self._diverging())
        self.class_map.set_colormap(self._diverging())
        if self._cur is not None:
            self._draw()

    def closeEvent(self, event) -> None:
        self._router.cancel()
        self.task.shutdown()
        super().closeEvent(event)


