"""Routing your own text through a run's model, for the Routing view: the weights to use
(a checkpoint, the latest, or the weights the engine training the run holds now), the
text box (Enter routes), and a short-lived engine process that routes it
(``run/child_route.py``), so the window never imports torch.

``CustomRouteMixin`` is part of ``RoutingDashboard``, which builds the widgets it uses:
``probe_edit``, ``route_button``, ``weights_combo``, ``source_combo``, ``probe_note``,
the background ``task`` and ``_router``; and keeps ``_path``, ``_run_status``,
``_controller``, ``_ckpt_key``, ``_pending_live``, ``_live_file``, ``_reason_shown`` and
``_custom`` (the last routed text), drawn by its ``_draw``.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt

from ...paths import sample_runs_dir
from ..theme import is_dark_palette

SOURCE_RECORDED, SOURCE_CUSTOM = "recorded", "custom"
LIVE = "live"   # the weights combo's entry for the weights the engine holds right now
_PLACEHOLDER = ("Type or paste text to route through the model (Enter routes, Shift+Enter "
                "starts a new line)")


class CustomRouteMixin:
    """Routing typed text through the shown run's weights (see the module doc)."""

    def set_training_controller(self, controller) -> None:
        """The app's training controller: while it trains the run shown, its live weights
        can route text (no checkpoint needed)."""
        self._controller = controller
        controller.started.connect(lambda _d: self._refresh_checkpoints())
        controller.finished.connect(lambda _s: self._refresh_checkpoints())
        controller.weightsReady.connect(self._on_live_weights)

    def _training_this_run(self) -> bool:
        c = self._controller
        if c is None or not c.busy or not c.run_dir or self._path is None:
            return False
        try:
            return Path(c.run_dir).resolve() == Path(self._path).resolve().parent \
                or Path(c.run_dir).resolve() == Path(self._path).resolve()
        except OSError:
            return False

    def _refresh_checkpoints(self) -> None:
        from ...engine.probe import weight_sources

        cks = weight_sources(self._path) if self._path is not None else []
        # an inspection's weights are fixed: its pretrained folder, even while it runs
        pretrained = bool(cks) and cks[0].kind == "pretrained"
        live = self._training_this_run() and not pretrained
        key = (live,) + tuple((str(c.path), c.step) for c in cks)
        if key == self._ckpt_key:
            return
        self._ckpt_key = key
        keep = self.weights_combo.currentText()
        self.weights_combo.clear()
        if live:
            self.weights_combo.addItem("Live weights (training now)", LIVE)
        if cks and not pretrained:
            self.weights_combo.addItem("Latest weights", None)
        for c in reversed(cks):
            self.weights_combo.addItem(c.label, c)
        if self.weights_combo.count():
            i = self.weights_combo.findText(keep)
            self.weights_combo.setCurrentIndex(max(i, 0))
        else:
            self.weights_combo.addItem("no weights saved", None)
        self._update_route_button()
        # Why nothing can be routed goes where the text would be typed: the one place
        # wide enough for a sentence at any window size.
        reason = self._no_weights_reason()
        self.probe_edit.setPlaceholderText(reason or _PLACEHOLDER)
        self.probe_edit.setReadOnly(bool(reason))
        if reason or self._reason_shown:
            if not self._busy_routing():
                self._note("No weights to route through" if reason else "", tip=reason)
            self._reason_shown = bool(reason)

    def _has_weights(self) -> bool:
        return bool(self._ckpt_key and (self._ckpt_key[0] or len(self._ckpt_key) > 1))

    def _no_weights_reason(self) -> str:
        """Why custom text cannot be routed through this run, in words ("" when it can)."""
        if self._has_weights() or self._path is None:
            return ""
        try:
            sample = Path(self._path).resolve().parent == sample_runs_dir().resolve()
        except OSError:
            sample = False
        from ...engine.probe import is_pretrained_run
        if is_pretrained_run(self._path):   # listed no weights: its folder has gone
            return ("The model folder this inspection routed is no longer there: put it "
                    "back to route your own text.")
        if sample:
            return ("This sample ships without weights. To route your own text, open the "
                    "moe-top2 sample (it has them) or train this preset.")
        if self._run_status == "running":
            return ("No weights yet: this run saves them at its checkpoints "
                    "(train.checkpoint_every) and when it ends.")
        return "This run has no saved weights: only its recorded probe can be shown."

    def _busy_routing(self) -> bool:
        return self.task.busy or self._pending_live is not None

    def _update_route_button(self) -> None:
        has = self._has_weights()
        self.route_button.setEnabled(has and not self._busy_routing())
        self.weights_combo.setEnabled(has)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        # Enter in the probe box routes; Shift+Enter is a new line.
        if (obj is self.probe_edit and event.type() == QEvent.Type.KeyPress
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
                and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            if self.route_button.isEnabled():
                self.route_custom()
            return True
        return super().eventFilter(obj, event)

    # ------------------------------------------------------------------ custom probe
    def source(self) -> str:
        return self.source_combo.currentData()

    def set_source(self, source: str) -> None:
        self.source_combo.setCurrentIndex(self.source_combo.findData(source))

    def route_custom(self, text: str | None = None, checkpoint: Any = "combo") -> bool:
        """Route ``text`` (default: the text box) through ``checkpoint`` (default: the
        weights chosen in the combo box; :data:`LIVE`: the weights the engine training
        this run holds now) in a short-lived engine process; the result is shown as the
        custom probe. False if nothing was started (no run, empty text, busy)."""
        if self._path is None or self._busy_routing():
            return False
        if not isinstance(text, str):
            text = self.probe_edit.toPlainText()
        if not text.strip():
            self._note("Type or paste some text to route first.", error=True)
            return False
        ck = self.weights_combo.currentData() if checkpoint == "combo" else checkpoint
        if ck == LIVE:
            path = self._controller.request_weights() if self._training_this_run() else None
            if path is None:
                self._note("The run is no longer training: choose saved weights.", error=True)
                self._refresh_checkpoints()
                return False
            self._pending_live = (path, text, self.member())
            self._note("Asking the engine for its current weights…")
        else:
            self._note("Routing…")
            self._start_route(text, getattr(ck, "path", ck), self.member())
        self._update_route_button()
        return True

    def _start_route(self, text: str, checkpoint, member: int, label: str = "") -> None:
        def work():
            arrays, meta = self._router.route(self._path, text, checkpoint, member)
            if label:
                meta["source"] = label
            return arrays, meta
        self.task.start(work)

    def _on_live_weights(self, path: str, step: int, error: str) -> None:
        pending, self._pending_live = self._pending_live, None
        if pending is None or pending[0] != path:
            if pending is not None:
                self._pending_live = pending
            return
        if error or step < 0:
            self._note(f"No live weights: {error}", error=True)
            self._update_route_button()
            return
        _, text, member = pending
        self._live_file = path
        self._note(f"Routing through the live weights of step {step:,}…")
        self._start_route(text, path, member, label=f"live weights @ step {step:,}")
        self._update_route_button()

    def _on_routed(self, result) -> None:
        arrays, meta = result
        self._custom = (arrays, meta)
        self.source_combo.model().item(1).setEnabled(True)
        n = arrays["tokens"].size
        self._note(f"{n:,} tokens through {html.escape(str(meta.get('source', 'the model')))}")
        if self.source() == SOURCE_CUSTOM:
            self._draw()
        else:
            self.set_source(SOURCE_CUSTOM)

    def _on_route_failed(self, message: str, tb: str) -> None:
        if "RouteCancelled" not in tb:
            self._note(message.removeprefix("ValueError: "), error=True, tip=tb)

    def _on_route_finished(self) -> None:
        if self._live_file:   # handed over for this one routing only
            try:
                os.remove(self._live_file)
            except OSError:
                pass
            self._live_file = ""
        self._update_route_button()

    def _note(self, text: str, error: bool = False, tip: str = "") -> None:
        if error:
            c = "#c62828" if not is_dark_palette(self.palette()) else "#f0605d"
            text = f'<span style="color:{c}">{html.escape(text)}</span>'
        self.probe_note.setText(text)
        self.probe_note.setToolTip(tip)

    def _on_user_scrub(self, *_) -> None:
        if self.source() == SOURCE_CUSTOM:
            self.set_source(SOURCE_RECORDED)   # scrubbing means: back to the recording
