"""The main window's status bar: the run's state, device, step, throughput, ETA and
progress, all read from the live run (the numbers every view shows).

Label widths are fixed for the longest text each shows, so 20 updates a second neither
jitter nor re-lay out the bar. A mixin of ``MainWindow`` (it uses ``live`` and
``dark_action``).
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QLabel, QProgressBar

from .. import theme
from ..formats import format_eta, format_rate

STATE_TEXT = {
    "idle": "Ready", "starting": "Starting…", "running": "Running", "paused": "Paused",
    "stopping": "Stopping…", "finished": "Finished", "stopped": "Stopped", "failed": "Failed",
}
# The theme's run-status colours, for the controller's states.
_STATE_COLOR = {"running": "running", "starting": "running", "paused": "interrupted",
                "stopping": "interrupted", "stopped": "stopped", "failed": "failed"}


class RunStatusMixin:
    """The status bar of ``MainWindow``."""

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.device_label = QLabel("Device: —")
        self.device_label.setToolTip("The device of the current run")
        self.state_label = QLabel(STATE_TEXT["idle"])
        self.state_label.setTextFormat(Qt.TextFormat.RichText)
        self.step_label = QLabel("Step —")
        self.rate_label = QLabel(format_rate(None))
        self.rate_label.setToolTip("Training throughput (tokens per second, all members)")
        self.eta_label = QLabel("ETA —")
        self.eta_label.setToolTip("Estimated time to the last step")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFixedWidth(180)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("")  # no "0%" before any run; "%p%" once one starts
        # Widths fixed for the longest text each label shows, so 20 progress updates a
        # second neither make the status bar jitter nor re-lay it out.
        fm = self.fontMetrics()
        for w, longest in ((self.device_label, "Device: cuda:0"),
                           (self.state_label, "● Stopping…"),
                           (self.step_label, "Step 1,000,000 / 1,000,000"),
                           (self.rate_label, "999.9 k tok/s"),
                           (self.eta_label, "ETA 10 h 00 min")):
            w.setContentsMargins(6, 0, 6, 0)
            w.setMinimumWidth(fm.horizontalAdvance(longest) + 14)
            sb.addPermanentWidget(w)
        for w in (self.step_label, self.rate_label, self.eta_label):
            w.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        sb.addPermanentWidget(self.progress_bar)

    @Slot()
    def _show_live(self) -> None:
        """The status bar from the live run (the same numbers every view shows)."""
        st = self.live.status()
        if st is None:
            return
        total = st.total_steps
        self.step_label.setText(f"Step {st.step:,} / {total:,}")
        self.rate_label.setText(format_rate(st.tokens_per_s))
        eta = "paused" if st.status == "paused" else format_eta(st.eta_s)
        self.eta_label.setText(f"ETA {eta}")
        if self.progress_bar.maximum() != max(1, total):
            self.progress_bar.setRange(0, max(1, total))
        self.progress_bar.setValue(min(int(st.step), self.progress_bar.maximum()))

    def _clear_run_status(self) -> None:
        """The status bar's run part back to idle: the run it described is not shown."""
        self.state_label.setText(STATE_TEXT["idle"])
        self.device_label.setText("Device: —")
        self.step_label.setText("Step —")
        self.rate_label.setText(format_rate(None))
        self.eta_label.setText("ETA —")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self._run_status_cleared = True

    @Slot(str)
    def _on_state(self, state: str) -> None:
        if state in ("finished", "stopped", "failed") and self._run_status_cleared:
            state = "idle"
        text = STATE_TEXT.get(state, state)
        color = theme.status_color(_STATE_COLOR.get(state, ""), self.dark_action.isChecked())
        if color is not None:
            text = f'<span style="color:{color.name()}">●</span> {text}'
        self.state_label.setText(text)
        self._update_actions()
