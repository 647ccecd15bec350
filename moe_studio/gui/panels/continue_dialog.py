"""Continue a stopped or interrupted run: the runs panel's "Continue…" action and the
confirmation that says from which step, to which step, and how many recorded steps
will be redone (``engine.resume.plan_resume``)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QLabel, QMessageBox,
                               QSpinBox, QVBoxLayout, QWidget)

from ...engine.resume import ResumeError, ResumePlan, ResumeRequest, newest_checkpoint, plan_resume

MAX_STEPS = 10_000_000   # train.steps' own limit


def can_continue(info: Any) -> bool:
    """A readable run that is not being written and has a checkpoint to continue from."""
    return (info is not None and not getattr(info, "error", None)
            and info.status in ("stopped", "interrupted", "failed", "finished")
            and newest_checkpoint(info.path) is not None)


def add_continue_action(menu, info: Any, request: Callable[[str], None]) -> None:
    """Add "Continue…" to a run's context menu when the run can be continued."""
    if not can_continue(info):
        return
    act = QAction("Continue…", menu)
    act.setObjectName("continueRunAction")
    act.setToolTip("Train this run further from its newest checkpoint")
    path = str(info.path)
    act.triggered.connect(lambda: request(path))
    menu.addAction(act)


class ContinueDialog(QDialog):
    """Asks how far to continue ``plan``'s run; says what will be redone."""

    def __init__(self, plan: ResumePlan, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("continueDialog")
        self.setWindowTitle(f"Continue {plan.name}")
        self.plan = plan
        self.steps_box = QSpinBox()
        self.steps_box.setObjectName("continueSteps")
        self.steps_box.setRange(plan.from_step + 1, MAX_STEPS)
        self.steps_box.setGroupSeparatorShown(True)
        self.steps_box.setValue(plan.total_steps)
        self.steps_box.setToolTip(f"Train to this step (planned: {plan.planned_steps:,}); "
                                  "more than planned trains longer")
        self.summary = QLabel()
        self.summary.setObjectName("continueSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.addRow("Train to step", self.steps_box)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.continue_button = buttons.addButton("Continue", QDialogButtonBox.ButtonRole.AcceptRole)
        self.continue_button.setObjectName("continueButton")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addLayout(form)
        lay.addWidget(buttons)
        self.steps_box.valueChanged.connect(self._describe)
        self._describe()

    def current_plan(self) -> ResumePlan:
        return dataclasses.replace(self.plan, total_steps=int(self.steps_box.value()))

    def request(self) -> ResumeRequest:
        steps = int(self.steps_box.value())
        return ResumeRequest(str(self.plan.run_dir),
                             None if steps == self.plan.planned_steps else steps)

    def _describe(self, *_) -> None:
        text = self.current_plan().describe()
        self.summary.setText(text[0].upper() + text[1:] + ".")


def continue_run(window, path: str) -> ContinueDialog | None:
    """Ask, then continue the run at ``path`` through ``window.start_run``. Returns the
    (non-blocking, window-modal) dialog, or None when the run cannot be continued (the
    reason is shown)."""
    if window.controller.busy:
        QMessageBox.information(window, "Continue", "A run is in progress; stop it before "
                                                    "continuing another.")
        return None
    try:
        plan = plan_resume(path, longer_if_done=True)
    except ResumeError as e:
        QMessageBox.warning(window, "Cannot continue this run", str(e))
        return None
    dlg = ContinueDialog(plan, window)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

    def go() -> None:
        from ...config import from_dict
        from ...store import open_run
        with open_run(plan.run_dir) as r:
            cfg = from_dict(r.config)
        cfg.train.steps = int(dlg.steps_box.value())
        window.start_run(cfg, dlg.request())

    dlg.accepted.connect(go)
    dlg.open()
    return dlg
