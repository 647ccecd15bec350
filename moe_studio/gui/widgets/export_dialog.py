"""The "Export run data" dialog: which format, which folder. The export itself runs in
the main window's background task (``moe_studio.store.export.export_run``; the weights,
``safetensors``, through an engine process: ``run.weights_export``)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget)

from ..run.weights_export import has_weights

FORMATS = (("csv", "CSV (one .csv file per record kind)"),
           ("parquet", "Parquet (one .parquet file per record kind)"),
           ("tensorboard", "TensorBoard event files (tensorboard --logdir FOLDER)"),
           ("safetensors", "Weights: safetensors of the newest checkpoint, with config.toml"))
NEEDS = {"parquet": "pyarrow", "tensorboard": "tensorboard"}


def has_parquet() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


class ExportDialog(QDialog):
    """Asks for the format and the destination folder of a run export."""

    def __init__(self, run_dir: Path, run_name: str, start_dir: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export Run Data")
        self.setObjectName("exportDialog")
        col = QVBoxLayout(self)
        intro = QLabel(f"Export every record of <b>{run_name}</b> (scalars, tensors, "
                       f"histograms, snapshots, events and the run's config) as tables, "
                       f"or its weights.")
        intro.setWordWrap(True)
        col.addWidget(intro)

        form = QFormLayout()
        self.format_combo = QComboBox()
        for key, label in FORMATS:
            self.format_combo.addItem(label, key)
        for key, package in NEEDS.items():
            if importlib.util.find_spec(package) is None:
                i = self.format_combo.findData(key)
                self.format_combo.model().item(i).setEnabled(False)
                self.format_combo.setItemText(i, self.format_combo.itemText(i) + f" — needs {package}")
        if not has_weights(run_dir):
            i = self.format_combo.findData("safetensors")
            self.format_combo.model().item(i).setEnabled(False)
            self.format_combo.setItemText(i, self.format_combo.itemText(i) + " — the run kept no weights")
        form.addRow("&Format", self.format_combo)

        row = QHBoxLayout()
        self.folder_edit = QLineEdit(str(start_dir / f"{run_dir.name}-export"))
        self.folder_edit.setMinimumWidth(360)
        browse = QPushButton("Browse…")
        browse.setAutoDefault(False)
        browse.clicked.connect(self._browse)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        label = QLabel("&Into folder")
        label.setBuddy(self.folder_edit)
        form.addRow(label, row)
        col.addLayout(form)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.folder_edit.textChanged.connect(
            lambda t: self.export_button.setEnabled(bool(t.strip())))
        col.addWidget(buttons)

    def fmt(self) -> str:
        return str(self.format_combo.currentData())

    def folder(self) -> Path:
        return Path(self.folder_edit.text().strip()).expanduser()

    def _browse(self) -> None:
        current = self.folder()
        start = current.parent if not current.is_dir() else current
        d = QFileDialog.getExistingDirectory(self, "Export into folder", str(start))
        if d:
            self.folder_edit.setText(d)
