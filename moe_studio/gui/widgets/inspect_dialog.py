"""File > Inspect a Checkpoint…: pick a pretrained Hugging Face MoE folder, a corpus and a
token budget, see the memory it needs, and start the inspection in the engine process
(the window's run controller, as for training: progress, Stop and the live views work
the same).

The memory estimate needs torch and transformers, which never load into the window's
process: a short ``moe-studio inspect MODEL --estimate`` child (a QProcess, no thread)
computes it from the config alone and prints one JSON line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QProcess, QSettings, Qt, QTimer
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QSpinBox, QVBoxLayout, QWidget)

from ...data import EMBEDDED
from ...engine.inspection.options import InspectOptions

ESTIMATE_DELAY_MS = 400   # typing pauses this long before a new estimate starts


class InspectDialog(QDialog):
    """The options of one inspection. ``options()`` after it is accepted."""

    def __init__(self, parent: QWidget | None = None, settings: QSettings | None = None):
        super().__init__(parent)
        self.setObjectName("inspectDialog")
        self.setWindowTitle("Inspect a Checkpoint")
        self._settings = settings
        self._proc: QProcess | None = None
        self._est_for: tuple | None = None
        self._estimate: dict | None = None

        d = InspectOptions(model="")
        self.model_edit = QLineEdit(self._setting("inspect/model", ""))
        self.model_edit.setObjectName("modelEdit")
        self.model_edit.setPlaceholderText("folder with config.json + *.safetensors, or a cached model id")
        self.model_button = QPushButton("Browse…")
        self.corpus_edit = QLineEdit(self._setting("inspect/corpus", EMBEDDED))
        self.corpus_edit.setObjectName("corpusEdit")
        self.corpus_edit.setToolTip("'embedded', a UTF-8 text file, or a folder: one domain per "
                                    "file or subfolder")
        self.corpus_file_button = QPushButton("File…")
        self.corpus_folder_button = QPushButton("Folder…")
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setObjectName("tokensSpin")
        self.tokens_spin.setRange(100, 100_000_000)
        self.tokens_spin.setSingleStep(1000)
        self.tokens_spin.setGroupSeparatorShown(True)
        self.tokens_spin.setValue(int(self._setting("inspect/tokens", d.tokens)))
        self.dtype_combo = QComboBox()
        for text, key in (("auto (bf16 on a GPU, fp32 on the CPU)", "auto"), ("bf16", "bf16"),
                          ("fp16", "fp16"), ("fp32", "fp32")):
            self.dtype_combo.addItem(text, key)
        self.device_combo = QComboBox()
        for dev in ("auto", "cpu", "cuda", "mps"):
            self.device_combo.addItem(dev, dev)
        self.trust_check = QCheckBox("Run the checkpoint's own code (trust_remote_code)")
        self.estimate_label = QLabel("Choose a model folder.")
        self.estimate_label.setObjectName("estimateLabel")
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QHBoxLayout()
        row.addWidget(self.model_edit, 1)
        row.addWidget(self.model_button)
        crow = QHBoxLayout()
        crow.addWidget(self.corpus_edit, 1)
        crow.addWidget(self.corpus_file_button)
        crow.addWidget(self.corpus_folder_button)
        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow("Corpus", crow)
        form.addRow("Tokens", self.tokens_spin)
        form.addRow("Precision", self.dtype_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.trust_check)
        form.addRow("Memory", self.estimate_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.addButton("Start", QDialogButtonBox.ButtonRole.AcceptRole)
        self.start_button.setObjectName("startButton")
        self.start_button.setEnabled(False)
        col = QVBoxLayout(self)
        col.addLayout(form)
        col.addWidget(QLabel("Nothing is downloaded: the model must be on this machine. "
                             "Only safetensors weights load."))
        col.addWidget(self.buttons)
        self.resize(640, self.sizeHint().height())

        self._debounce = QTimer(self)
        self._debounce.setObjectName("estimateDebounce")
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(ESTIMATE_DELAY_MS)
        self._debounce.timeout.connect(self._start_estimate)
        self.model_button.clicked.connect(self._browse_model)
        self.corpus_file_button.clicked.connect(self._browse_corpus_file)
        self.corpus_folder_button.clicked.connect(self._browse_corpus_folder)
        for w in (self.model_edit, self.corpus_edit):
            w.textChanged.connect(lambda _t: self._changed())
        self.tokens_spin.valueChanged.connect(lambda _v: self._changed())
        for c in (self.dtype_combo, self.device_combo):
            c.currentIndexChanged.connect(lambda _i: self._changed())
        self.trust_check.toggled.connect(lambda _on: self._changed())
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.finished.connect(lambda _r: self._stop_estimate())
        if self.model_edit.text().strip():
            self._changed()

    # ------------------------------------------------------------------ options
    def options(self) -> InspectOptions:
        return InspectOptions(model=self.model_edit.text().strip(),
                              corpus=self.corpus_edit.text().strip() or EMBEDDED,
                              tokens=self.tokens_spin.value(),
                              dtype=self.dtype_combo.currentData(),
                              device=self.device_combo.currentData(),
                              trust_remote_code=self.trust_check.isChecked())

    def estimate(self) -> dict | None:
        """The last estimate shown (None while one is running or none was made)."""
        return self._estimate

    def accept(self) -> None:
        if not self.start_button.isEnabled():
            return
        if self._settings is not None:
            o = self.options()
            self._settings.setValue("inspect/model", o.model)
            self._settings.setValue("inspect/corpus", o.corpus)
            self._settings.setValue("inspect/tokens", o.tokens)
        super().accept()

    def _setting(self, key: str, default):
        if self._settings is None:
            return default
        v = self._settings.value(key, default)
        return default if v in (None, "") else v

    # ------------------------------------------------------------------ browsing
    def _browse_model(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Hugging Face model folder",
                                             self.model_edit.text() or str(Path.home()))
        if d:
            self.model_edit.setText(d)

    def _browse_corpus_file(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Corpus text file", str(Path.home()),
                                           "Text (*.txt *.md *.py *.rst);;All files (*)")
        if f:
            self.corpus_edit.setText(f)

    def _browse_corpus_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Corpus folder (one domain per file)",
                                             str(Path.home()))
        if d:
            self.corpus_edit.setText(d)

    # ------------------------------------------------------------------ estimate
    def _changed(self) -> None:
        self.start_button.setEnabled(False)
        self._estimate = None
        if not self.model_edit.text().strip():
            self.estimate_label.setText("Choose a model folder.")
            self._debounce.stop()
            return
        self.estimate_label.setText("Estimating…")
        self._debounce.start()

    def _start_estimate(self) -> None:
        self._stop_estimate()
        o = self.options()
        bad = o.problems()
        if bad:
            self._show({"ok": False, "error": bad[0]})
            return
        from ..run.worker import engine_qprocess
        proc = engine_qprocess(self, "estimateProcess")
        args = ["-m", "moe_studio", "inspect", o.model, "--estimate", "--tokens", str(o.tokens),
                "--dtype", o.dtype, "--device", o.device]
        if o.trust_remote_code:
            args.append("--trust-remote-code")
        proc.finished.connect(self._estimated)   # bound: see SampleDialog.generate
        self._proc = proc
        proc.start(sys.executable, args)

    def _estimated(self, *_exit) -> None:
        proc = self.sender()
        if proc is None or proc is not self._proc:
            return
        self._proc = None
        out = bytes(proc.readAllStandardOutput()).decode("utf-8", "replace").strip().splitlines()
        err = bytes(proc.readAllStandardError()).decode("utf-8", "replace").strip()
        proc.deleteLater()
        try:
            result = json.loads(out[-1])
        except (IndexError, ValueError):
            result = {"ok": False, "error": (err.splitlines() or ["the estimate failed"])[-1]}
        self._show(result)

    def _show(self, est: dict) -> None:
        self._estimate = est
        if not est.get("ok"):
            self.estimate_label.setText(f"<span style='color:#c62828'>{_esc(est['error'])}</span>")
            self.start_button.setEnabled(False)
            return
        text = f"{_esc(est['family'])} · {_esc(est['text'])}"
        for n in est.get("notes") or []:
            text += f"<br><i>{_esc(n)}</i>"
        if not est.get("fits"):
            text += f"<br><span style='color:#c62828'>{_esc(est.get('reason') or 'does not fit')}</span>"
        self.estimate_label.setText(text)
        self.start_button.setEnabled(bool(est.get("fits")))

    def _stop_estimate(self) -> None:
        self._debounce.stop()
        p, self._proc = self._proc, None
        if p is not None and p.state() != QProcess.ProcessState.NotRunning:
            p.kill()
            p.waitForFinished(2000)


def _esc(s: str) -> str:
    import html
    return html.escape(str(s))


def open_inspect_dialog(window) -> InspectDialog:
    """Show the dialog over the main window; on Start, run the inspection through the
    window's run controller (as Train does), into the window's runs folder."""
    dlg = InspectDialog(window, getattr(window, "settings", None))
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

    def start() -> None:
        ctl = window.controller
        if ctl.busy:
            return
        o = dlg.options()
        window._running_name = f"inspection of {Path(o.model).name}"
        window.statusBar().showMessage(f"Loading {o.model}…")
        ctl.start(o, window.runs_dir)

    dlg.accepted.connect(start)
    dlg.open()
    return dlg
