"""Compare's "Side by side" page: two runs in the Routing or the Experts view, one step
slider aligning them (each view shows its recorded step nearest to it), side by side or
one above the other."""
from __future__ import annotations

import html
from typing import Any, Sequence

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QScrollArea, QSplitter,
                               QVBoxLayout, QWidget)

from ..theme import is_dark_palette, series_color
from ..widgets.run_controls import RunControls

PAIR_MIN_HEIGHT = 620       # px per view when the two are one above the other
PAIR_MIN_WIDTH = 900        # px per view below which "Automatic" puts them one above the other
PAIR_VIEWS = (("Routing", "moe_studio.gui.views.routing:RoutingDashboard"),
              ("Experts", "moe_studio.gui.views.experts:ExpertsDashboard"))


def swatch(color: str, size: int = 12) -> QIcon:
    """A square of a run's colour, for its name in lists and combo boxes."""
    pm = QPixmap(size, size)
    pm.fill(QColor(color))
    return QIcon(pm)


class SideBySidePage(QWidget):
    """Two views of two of the compared runs. ``set_runs`` hands it the runs (objects
    with ``label``, ``index`` and ``path``); the views are built when first needed."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._runs: Sequence[Any] = []
        self._pair: list[QWidget] = []
        self._pair_kind = ""
        self.pair_view = QComboBox()
        for title, spec in PAIR_VIEWS:
            self.pair_view.addItem(title, spec)
        self.pair_left, self.pair_right = QComboBox(), QComboBox()
        for cb in (self.pair_left, self.pair_right):
            cb.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.pair_controls = RunControls()
        self.pair_controls.set_layer_selector_visible(False)
        self.pair_controls.slider.setToolTip("One step for both runs: each shows its recorded "
                                             "step nearest to it")
        pl = QVBoxLayout(self)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.setSpacing(4)
        prow = QHBoxLayout()
        prow.setContentsMargins(6, 4, 6, 0)
        self.pair_layout = QComboBox()
        self.pair_layout.addItem("Automatic", None)
        self.pair_layout.addItem("Side by side", Qt.Orientation.Horizontal)
        self.pair_layout.addItem("One above the other", Qt.Orientation.Vertical)
        self.pair_layout.setToolTip("The views are wide: one above the other gives each run "
                                    "the full width. Automatic: side by side when the window "
                                    f"gives each at least {PAIR_MIN_WIDTH} px")
        for w in (QLabel("View"), self.pair_view, QLabel("Left / top"), self.pair_left,
                  QLabel("Right / bottom"), self.pair_right, self.pair_layout):
            prow.addWidget(w)
        prow.addStretch(1)
        pl.addLayout(prow)
        pl.addWidget(self.pair_controls)
        self._pair_split = QSplitter(Qt.Orientation.Horizontal)
        self._pair_split.setChildrenCollapsible(False)
        # Two whole views may want more room than the window has: scroll, never grow it.
        scroll = self._pair_scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self._pair_split)
        pl.addWidget(scroll, 1)
        scroll.installEventFilter(self)     # Automatic follows the width
        self.pair_layout.currentIndexChanged.connect(self._on_pair_layout)

        self.pair_view.currentIndexChanged.connect(lambda _i: self._build_pair())
        self.pair_left.currentIndexChanged.connect(lambda _i: self._load_pair())
        self.pair_right.currentIndexChanged.connect(lambda _i: self._load_pair())
        self.pair_controls.stepChanged.connect(self._on_pair_step)

    def set_runs(self, runs: Sequence[Any], force: bool = False) -> None:
        """The runs to choose from (the compared ones, in their colour order)."""
        self._runs = runs
        self._fill_pair_combos(force)

    def ensure_built(self) -> None:
        if not self._pair:
            self._build_pair()

    def refresh(self) -> None:
        for d in self._pair:
            d.refresh()
        self._sync_pair_steps()

    def stop_follow(self) -> None:
        for d in self._pair:
            d.stop_follow()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if (obj is self._pair_scroll and event.type() == QEvent.Type.Resize
                and event.size().width() != event.oldSize().width()):
            self._on_pair_layout()
        return super().eventFilter(obj, event)

    def _fill_pair_combos(self, force: bool = False) -> None:
        labels = [r.label for r in self._runs]
        for cb, default in ((self.pair_left, 0), (self.pair_right, 1)):
            have = [cb.itemText(i) for i in range(cb.count())]
            if have == labels and not force:
                continue
            cb.blockSignals(True)
            cb.clear()
            for i, lab in enumerate(labels):
                cb.addItem(swatch(series_color(i, is_dark_palette(self.palette()))), lab, i)
            cb.setCurrentIndex(min(default, len(labels) - 1))
            cb.blockSignals(False)
        if self._pair:
            self._load_pair()

    def pair(self) -> list[QWidget]:
        """The two views (built when first shown)."""
        return list(self._pair)

    def set_pair(self, left: int, right: int, view: str = "Routing") -> None:
        """Show runs ``left`` and ``right`` side by side in ``view`` ("Routing", "Experts")."""
        self.pair_view.setCurrentIndex(self.pair_view.findText(view))
        self.pair_left.setCurrentIndex(left)
        self.pair_right.setCurrentIndex(right)
        if not self._pair:
            self._build_pair()
        else:
            self._load_pair()

    def _build_pair(self) -> None:
        from ..main_window import _load_class
        spec = self.pair_view.currentData()
        if self._pair and spec == self._pair_kind:
            return
        self.close_pair()
        self._pair_kind = spec
        cls = _load_class(spec)
        for _side in range(2):
            box = QWidget()
            bl = QVBoxLayout(box)
            bl.setContentsMargins(0, 0, 0, 0)
            bl.setSpacing(2)
            head = QLabel()
            head.setObjectName("pairHead")
            head.setTextFormat(Qt.TextFormat.RichText)
            view = cls()
            view.controls.slider.hide()       # the shared slider above drives both
            view.controls.play_button.hide()
            bl.addWidget(head)
            bl.addWidget(view, 1)
            self._pair_split.addWidget(box)
            self._pair.append(view)
        self._on_pair_layout()
        self._load_pair()

    def _load_pair(self) -> None:
        if not self._pair or not self._runs:
            return
        dark = is_dark_palette(self.palette())
        for view, cb in zip(self._pair, (self.pair_left, self.pair_right)):
            i = max(0, cb.currentData() or 0)
            r = self._runs[min(i, len(self._runs) - 1)]
            head = view.parentWidget().findChild(QLabel, "pairHead")
            head.setText(f'<span style="color:{series_color(r.index, dark)}">■</span> '
                         f"<b>{html.escape(r.label)}</b>")
            if view.runs() != [r.path]:
                view.set_runs([r.path])
        self._sync_pair_steps(force=True)

    def _sync_pair_steps(self, force: bool = False) -> None:
        if not self._pair:
            return
        steps = np.unique(np.concatenate([v.controls.steps() for v in self._pair]
                                         + [np.zeros(0, np.int64)])).astype(np.int64)
        self.pair_controls.set_steps(steps)
        if force:
            self._on_pair_step(self.pair_controls.step())

    def _on_pair_step(self, step: int | None) -> None:
        if step is None:
            return
        for v in self._pair:
            v.controls.set_step(int(step))
            if hasattr(v, "settle"):
                v.settle()

    def pair_orientation(self) -> Qt.Orientation:
        """How the two views of the side-by-side tab are laid out now."""
        chosen = self.pair_layout.currentData()
        if chosen is not None:
            return chosen
        fits = self._pair_scroll.width() >= 2 * PAIR_MIN_WIDTH
        return Qt.Orientation.Horizontal if fits else Qt.Orientation.Vertical

    def _on_pair_layout(self, _i: int = 0) -> None:
        orientation = self.pair_orientation()
        vertical = orientation == Qt.Orientation.Vertical
        if self._pair_split.orientation() != orientation:
            self._pair_split.setOrientation(orientation)
        for i in range(self._pair_split.count()):
            # one above the other: each view keeps a readable height, the page scrolls
            self._pair_split.widget(i).setMinimumHeight(PAIR_MIN_HEIGHT if vertical else 0)

    def close_pair(self) -> None:
        for v in self._pair:
            v.stop_follow()
            v.close()
            box = v.parentWidget()
            box.setParent(None)
            box.deleteLater()
        self._pair = []
        self._pair_kind = ""
