"""Under the setup form's Parallel section: the commands that train this experiment on
several processes, ready to copy (the app itself trains in one process).

One machine: ``moe-studio train experiment.toml --nproc N``; a cluster: the torchrun
line to run on every node. Both name ``experiment.toml``: the config as the form's
Save writes it.
"""
from __future__ import annotations

from PySide6.QtWidgets import (QApplication, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QVBoxLayout, QWidget)

from ...engine.parallel.launch import shell_line, torchrun_command

CONFIG_NAME = "experiment.toml"


def commands(cfg) -> tuple[str, str]:
    """(one machine, each node of a 2-node cluster) command lines for ``cfg``."""
    n = max(2, cfg.parallel.processes)
    local = f"moe-studio train {CONFIG_NAME} --nproc {n}"
    cluster = shell_line(torchrun_command(n, [CONFIG_NAME], nnodes=2, endpoint="HOST:29500"))
    return local, cluster


class LaunchCommand(QWidget):
    """Two read-only command lines, each with a Copy button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        note = QLabel(f"Run on several processes (save the config as {CONFIG_NAME}):")
        note.setWordWrap(True)   # the form's width is the fields', not this line's
        lay.addWidget(note)
        self.lines: list[QLineEdit] = []
        self.copy_buttons: list[QPushButton] = []
        for tip in ("this machine", "every node of a cluster (HOST: the first node)"):
            row = QHBoxLayout()
            line = QLineEdit()
            line.setReadOnly(True)
            line.setMinimumWidth(60)
            line.setToolTip(f"The command for {tip}")
            button = QPushButton("Copy")
            button.setToolTip(f"Copy the command for {tip}")
            button.clicked.connect(lambda _=False, e=line: QApplication.clipboard().setText(e.text()))
            row.addWidget(line, 1)
            row.addWidget(button)
            lay.addLayout(row)
            self.lines.append(line)
            self.copy_buttons.append(button)

    def set_config(self, cfg) -> None:
        for line, text in zip(self.lines, commands(cfg)):
            if line.text() != text:
                line.setText(text)
                line.setCursorPosition(0)
