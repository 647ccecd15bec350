"""``RunControls``: the layer / member / step controls of the views that show one run
step by step (Gates, Experts, Routing, Precision, Ensemble).

A layer selector ("All layers" or one MoE block), a member selector (ensembles only), a
step slider over the recorded steps with a play button, and a status line. New steps
extend the slider; if it sat at the last step it moves on with the run, otherwise it
stays where the user put it. The views' common base is ``views/dashboard.py``.
"""
from __future__ import annotations


import numpy as np
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QSlider, QStyle,
                               QToolButton, QVBoxLayout, QWidget)

from .fitting_label import FittingLabel

PLAY_MS = 100    # 10 steps per second when playing


class RunControls(QWidget):
    """Layer selector, member selector, step slider + play button, status text."""

    layerChanged = Signal(object)    # block index, or None for all layers
    memberChanged = Signal(int)
    stepChanged = Signal(int)        # the selected recorded step
    resized = Signal()               # e.g. the status line moved under the controls

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._steps = np.zeros(0, np.int64)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The MoE layer the views show, or all of them side by side")
        self.layer_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.member_combo = QComboBox()
        self.member_combo.setToolTip("Ensemble member")
        self.member_combo.setVisible(False)
        self.play_button = QToolButton()
        self.play_button.setAutoRaise(True)
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play through the recorded steps")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setPageStep(5)
        self.slider.setMinimumWidth(160)
        self.slider.setToolTip("Scrub through the recorded steps (arrow keys step one)")
        self.step_label = QLabel("no steps")
        self.step_label.setMinimumWidth(120)
        # Leaves out its last parts when narrow, never cuts letters ("… 4 MoE layers :")
        self.status = FittingLabel()
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._play_timer = QTimer(self)
        self._play_timer.setObjectName("playTimer")
        self._play_timer.setInterval(PLAY_MS)
        self._play_timer.timeout.connect(self._advance)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 4, 6, 0)
        outer.setSpacing(2)
        row = self._row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        outer.addLayout(row)
        # The status line goes under the controls when the row cannot hold it whole
        # (a view's extra controls, a narrow window): never cut at the edge.
        self._below = QHBoxLayout()
        self._below.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self._below)
        self._layer_label = QLabel("Layer")
        row.addWidget(self._layer_label)
        row.addWidget(self.layer_combo)
        row.addWidget(self.member_combo)
        row.addSpacing(8)
        row.addWidget(QLabel("Step"))
        row.addWidget(self.play_button)
        row.addWidget(self.slider, 3)
        row.addWidget(self.step_label)
        self._extra = QHBoxLayout()
        self._extra.setSpacing(8)
        row.addLayout(self._extra)
        row.addWidget(self.status)   # its whole line first; the slider gets the rest
        self._status_below = False

        self.layer_combo.currentIndexChanged.connect(
            lambda _i: self.layerChanged.emit(self.layer_combo.currentData()))
        self.member_combo.currentIndexChanged.connect(
            lambda _i: self.memberChanged.emit(int(self.member_combo.currentData() or 0)))
        self.slider.valueChanged.connect(self._on_slider)
        self.play_button.toggled.connect(self._on_play)
        self._update_play_icon()
        self.set_layers([])

    def event(self, e) -> bool:
        if e.type() == QEvent.Type.LayoutRequest:   # e.g. the status text changed
            self._place_status()
        return super().event(e)

    def resizeEvent(self, e) -> None:  # noqa: N802
        super().resizeEvent(e)
        self._place_status()
        self.resized.emit()

    def status_below(self) -> bool:
        """True while the status line sits under the controls (the row is too narrow)."""
        return self._status_below

    def _place_status(self) -> None:
        row, gap = self._row, self._row.spacing()
        want = self.status.sizeHint().width()
        # Summed afresh: the row's own size hint is cached from the last text.
        widths = []
        for i in range(row.count()):
            item = row.itemAt(i)
            if item.widget() is self.status or item.isEmpty():
                continue
            widths.append(item.sizeHint().width())
        others = sum(widths) + gap * max(0, len(widths) - 1)
        m = self.layout().contentsMargins()
        room = self.width() - m.left() - m.right()
        below = others + gap + want > room
        if below == self._status_below:
            return
        self._status_below = below
        if below:
            row.removeWidget(self.status)
            self._below.addWidget(self.status)
        else:
            self._below.removeWidget(self.status)
            row.addWidget(self.status)
        self.layout().activate()

    def add_widget(self, w: QWidget) -> None:
        """A view's own control, placed after the step slider."""
        self._extra.addWidget(w)

    def set_layer_selector_visible(self, on: bool) -> None:
        """Show or hide the layer selector (a view whose rows are not MoE layers)."""
        self._layer_label.setVisible(on)
        self.layer_combo.setVisible(on)

    # ------------------------------------------------------------------ layers
    def set_layers(self, blocks, allow_all: bool = True) -> None:
        """The MoE block indices to choose from (keeps the choice when it still exists)."""
        keep = self.layer_combo.currentData() if self.layer_combo.count() else None
        had = self.layer_combo.count() > 0
        want = ([("All layers", None)] if allow_all else []) + [(f"Layer {b}", int(b)) for b in blocks]
        if [(self.layer_combo.itemText(i), self.layer_combo.itemData(i))
                for i in range(self.layer_combo.count())] == want:
            return
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for text, data in want:
            self.layer_combo.addItem(text, data)
        i = self.layer_combo.findData(keep) if had else -1
        self.layer_combo.setCurrentIndex(max(i, 0))
        self.layer_combo.blockSignals(False)
        self.layer_combo.setEnabled(bool(blocks))

    def layer(self) -> int | None:
        """The chosen MoE block index, or None for all layers."""
        return self.layer_combo.currentData()

    def set_layer(self, block: int | None) -> None:
        i = self.layer_combo.findData(block)
        if i < 0:
            raise ValueError(f"no layer {block!r} to show")
        self.layer_combo.setCurrentIndex(i)

    # ------------------------------------------------------------------ members
    def set_members(self, n: int) -> None:
        n = max(1, int(n))
        if self.member_combo.count() != n:
            self.member_combo.blockSignals(True)
            self.member_combo.clear()
            for m in range(n):
                self.member_combo.addItem(f"Member {m}", m)
            self.member_combo.blockSignals(False)
        self.member_combo.setVisible(n > 1)

    def member(self) -> int:
        return int(self.member_combo.currentData() or 0)

    # ------------------------------------------------------------------ steps
    def set_steps(self, steps) -> None:
        """The recorded steps (ascending). At the end (or with nothing selected yet) the
        slider follows to the new last step; elsewhere it keeps its step."""
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        if np.array_equal(steps, self._steps):
            return
        old_step = self.step()
        follow = self._steps.size == 0 or self.at_end()
        self._steps = steps
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, steps.size - 1))
        if steps.size == 0:
            self.slider.setValue(0)
        elif follow or old_step is None:
            self.slider.setValue(steps.size - 1)
        else:
            self.slider.setValue(int(np.argmin(np.abs(steps - old_step))))
        self.slider.blockSignals(False)
        self.slider.setEnabled(steps.size > 1)
        self.play_button.setEnabled(steps.size > 1)
        self._update_label()
        new = self.step()
        if new is not None and new != old_step:
            self.stepChanged.emit(new)

    def steps(self) -> np.ndarray:
        return self._steps

    def step(self) -> int | None:
        """The selected recorded step, or None before any."""
        if self._steps.size == 0:
            return None
        return int(self._steps[min(self.slider.value(), self._steps.size - 1)])

    def index(self) -> int:
        return self.slider.value()

    def set_index(self, i: int) -> None:
        self.slider.setValue(int(i))

    def set_step(self, step: int) -> None:
        """Select the recorded step nearest ``step``."""
        if self._steps.size:
            self.slider.setValue(int(np.argmin(np.abs(self._steps - int(step)))))

    def at_end(self) -> bool:
        return self._steps.size == 0 or self.slider.value() >= self._steps.size - 1

    def _on_slider(self, _value: int) -> None:
        self._update_label()
        s = self.step()
        if s is not None:
            self.stepChanged.emit(s)

    def _update_label(self) -> None:
        if self._steps.size == 0:
            self.step_label.setText("no steps yet")
        else:
            self.step_label.setText(f"step {self.step():,}  ({self.slider.value() + 1}/"
                                    f"{self._steps.size})")

    # ------------------------------------------------------------------ play
    def play(self) -> None:
        self.play_button.setChecked(True)

    def pause(self) -> None:
        self.play_button.setChecked(False)

    def is_playing(self) -> bool:
        return self._play_timer.isActive()

    def _on_play(self, on: bool) -> None:
        if on and self._steps.size > 1:
            if self.at_end():
                self.slider.setValue(0)
            self._play_timer.start()
        else:
            self._play_timer.stop()
            if self.play_button.isChecked():
                self.play_button.setChecked(False)
        self._update_play_icon()

    def _advance(self) -> None:
        if self.at_end():
            self.pause()
            return
        self.slider.setValue(self.slider.value() + 1)

    def _update_play_icon(self) -> None:
        sp = QStyle.StandardPixmap.SP_MediaPause if self.play_button.isChecked() \
            else QStyle.StandardPixmap.SP_MediaPlay
        self.play_button.setIcon(self.style().standardIcon(sp))

    def hideEvent(self, event) -> None:
        self.pause()   # a hidden view never keeps playing
        super().hideEvent(event)
