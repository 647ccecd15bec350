"""The "Sample Text" dialog: text from any run with weights, with its generation speed.

The window's process never imports torch: the text comes from a short-lived
``python -m moe_studio.engine.sample_child`` (a QProcess, no thread), which answers with
one JSON line. Closing the dialog kills a child still running.

"Sample from" offers, for an ensemble run, the ensemble (its members combined by the
run's ``ensemble.combine`` rule, as ``moe-studio sample`` does by default) or any one
member (``--member N``); the list follows the run folder's ``config.toml``.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from PySide6.QtCore import QProcess, Qt
from PySide6.QtWidgets import (QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from ...config import ConfigError, load as load_config
from ..run.worker import child_command, engine_qprocess


def sample_choices(run_dir: str) -> list[tuple[str, int | None]]:
    """``(label, member)`` for the "Sample from" list of the run in ``run_dir``: the
    ensemble (member None) then each member, or the one model; a folder without a
    readable config gets one entry and the child says what is wrong."""
    d = Path(run_dir)
    try:
        d = d.parent if d.is_file() else d   # a run.sqlite or weight file names its run
        cfg = load_config(d / "config.toml") if run_dir else None
    except (ConfigError, OSError):
        cfg = None
    n = cfg.ensemble.members if cfg is not None else 1
    if n == 1:
        return [("the model", None)]
    return ([(f"the ensemble of {n} members ({cfg.ensemble.combine})", None)]
            + [(f"member {m}", m) for m in range(n)])


class SampleDialog(QDialog):
    """Prompt, length and temperature in; generated text and tokens/s, latency out."""

    def __init__(self, run_dir: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Sample Text from a Run")
        self.setObjectName("sampleDialog")
        self._proc: QProcess | None = None
        col = QVBoxLayout(self)
        form = QFormLayout()
        row = QHBoxLayout()
        self.run_edit = QLineEdit(str(run_dir) if run_dir else "")
        self.run_edit.setObjectName("sampleRun")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.run_edit, 1)
        row.addWidget(browse)
        form.addRow("&Run folder", row)
        self.from_combo = QComboBox()
        self.from_combo.setObjectName("sampleFrom")
        self.from_combo.setToolTip("An ensemble run: its members combined by the run's "
                                   "ensemble.combine rule, or one member alone")
        form.addRow("Sample &from", self.from_combo)
        self.run_edit.textChanged.connect(self._fill_choices)
        self._fill_choices()
        self.prompt_edit = QLineEdit("The ")
        self.prompt_edit.setObjectName("samplePrompt")
        form.addRow("&Prompt", self.prompt_edit)
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(1, 4096)
        self.tokens_spin.setValue(200)
        form.addRow("&Tokens", self.tokens_spin)
        self.temp_spin = QDoubleSpinBox()
        self.temp_spin.setRange(0.0, 5.0)
        self.temp_spin.setSingleStep(0.1)
        self.temp_spin.setValue(0.8)
        self.temp_spin.setToolTip("0 = greedy: always the likeliest next byte")
        form.addRow("T&emperature", self.temp_spin)
        col.addLayout(form)
        self.generate_button = QPushButton("&Generate")
        self.generate_button.setObjectName("sampleGenerate")
        self.generate_button.clicked.connect(self.generate)
        col.addWidget(self.generate_button, 0, Qt.AlignmentFlag.AlignRight)
        self.output = QPlainTextEdit()
        self.output.setObjectName("sampleOutput")
        self.output.setReadOnly(True)
        self.output.setMinimumSize(480, 180)
        col.addWidget(self.output, 1)
        self.speed_label = QLabel("")
        self.speed_label.setObjectName("sampleSpeed")
        self.speed_label.setWordWrap(True)
        col.addWidget(self.speed_label)

    def _fill_choices(self) -> None:
        choices = sample_choices(self.run_edit.text().strip())
        if [self.from_combo.itemText(i) for i in range(self.from_combo.count())] == \
                [label for label, _ in choices]:
            return   # same run shape: keep the user's pick
        self.from_combo.clear()
        for label, member in choices:
            self.from_combo.addItem(label, member)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Run folder", self.run_edit.text())
        if d:
            self.run_edit.setText(d)

    @property
    def busy(self) -> bool:
        return self._proc is not None

    def generate(self) -> None:
        """Start a child that samples from the run; the answer fills the output."""
        self._stop()
        run = self.run_edit.text().strip()
        if not run:
            self._error("choose a run folder first")
            return
        cmd, _env = child_command("moe_studio.engine.sample_child")
        proc = engine_qprocess(self, "sampleProcess")
        # A bound method, not a lambda holding self: a lambda on the child's signal kept
        # the dialog alive until the child's deferred delete, whose teardown then freed
        # the dialog, and with it the child being deleted (a crash seen under load).
        proc.finished.connect(self._finished)
        self._proc = proc
        self.generate_button.setEnabled(False)
        self.speed_label.setText("generating…")
        proc.start(cmd[0], cmd[1:])
        job = {"run": run, "prompt": self.prompt_edit.text(), "tokens": self.tokens_spin.value(),
               "temperature": self.temp_spin.value(), "member": self.from_combo.currentData()}
        proc.write((json.dumps(job) + "\n").encode("utf-8"))
        proc.closeWriteChannel()

    def _finished(self, *_exit) -> None:
        proc = self.sender()
        if proc is None or proc is not self._proc:
            return
        self._proc = None
        self.generate_button.setEnabled(True)
        out = bytes(proc.readAllStandardOutput()).decode("utf-8", "replace").strip().splitlines()
        err = bytes(proc.readAllStandardError()).decode("utf-8", "replace").strip()
        proc.deleteLater()
        try:
            ans = json.loads(out[-1])
        except (IndexError, ValueError):
            ans = {"error": (err.splitlines() or ["the sampling process failed"])[-1]}
        if "error" in ans:
            self._error(ans["error"])
            return
        self.output.setPlainText(ans["prompt"] + ans["text"])
        sp = ans["speed"]
        self.speed_label.setText(
            f"{html.escape(ans.get('sampled', ''))}: {sp['tokens']} tokens in {sp['total_s']:.2f} s: "
            f"<b>{sp['tokens_per_s']:,.1f} tokens/s</b>; "
            f"latency per token median {1e3 * sp['latency_median_s']:.1f} ms, p90 "
            f"{1e3 * sp['latency_p90_s']:.1f} ms, first {1e3 * sp['first_token_s']:.1f} ms "
            f"({html.escape(ans['device'])}, {html.escape(ans['checkpoint'])}; no KV cache)")

    def _error(self, msg: str) -> None:
        self.speed_label.setText(f"<span style='color:#c62828'>{html.escape(msg)}</span>")

    def _stop(self) -> None:
        p, self._proc = self._proc, None
        if p is not None and p.state() != QProcess.ProcessState.NotRunning:
            p.kill()
            p.waitForFinished(2000)
        self.generate_button.setEnabled(True)

    def done(self, result: int) -> None:
        self._stop()
        super().done(result)

    def closeEvent(self, event) -> None:
        self._stop()
        super().closeEvent(event)


def open_sample_dialog(window) -> SampleDialog:
    """Show the dialog over the main window, on the run it shows (if any)."""
    shown = getattr(window, "_shown_runs", None) or []
    dlg = SampleDialog(Path(shown[0]) if shown else None, window)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.open()
    return dlg
