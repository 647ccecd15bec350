"""The setup form's Parallel section: processes and layout as knobs, and the commands
that run the experiment on several processes, copyable."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from test_gui_setup import _retype  # noqa: E402 - the form as a person edits it


def _enter(qtbot, w, text):
    _retype(qtbot, w, text)
    qtbot.keyClick(w, Qt.Key.Key_Tab)


def test_processes_typed_reach_the_copied_commands(qtbot, panel):
    panel.show()
    cmd = panel.launch_command
    _enter(qtbot, panel.field_widget("parallel.processes"), "4")
    assert panel.config().parallel.processes == 4
    local, cluster = (line.text() for line in cmd.lines)
    assert local.endswith("--nproc 4")
    assert cluster.startswith("torchrun --nnodes=2 ") and "--nproc-per-node=4" in cluster
    assert cluster.endswith("-m moe_studio train experiment.toml")
    qtbot.mouseClick(cmd.copy_buttons[1], Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == cluster


def test_an_expert_split_that_does_not_divide_is_flagged(qtbot, panel):
    panel.show()
    _enter(qtbot, panel.field_widget("parallel.expert"), "3")
    assert not panel.is_valid()
    assert "parallel.expert (3) must divide moe.n_experts" in panel.error_label("parallel.expert").text()
