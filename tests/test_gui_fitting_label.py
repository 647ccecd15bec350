"""The status line that fits its width by leaving out its last parts (widgets/
fitting_label.py): what it shows, and that the dashboards' per-frame updates with the
same text, or a text of the same width, ask the window for no new layout."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtGui import QFont  # noqa: E402

from moe_studio.gui.widgets.fitting_label import FittingLabel  # noqa: E402

LINE = "<b>moe-top2</b> · running · step 1,200 / 2,000 · 4,100 tok/s · val 1.93"


def _label(qtbot, width: int) -> FittingLabel:
    lab = FittingLabel()
    qtbot.addWidget(lab)
    lab.setFixedWidth(width)
    lab.show()
    return lab


def test_a_narrow_label_leaves_out_its_last_parts_and_tells_them_in_its_tooltip(qtbot):
    lab = _label(qtbot, 2000)
    lab.setText(LINE)
    assert lab.shown_text() == LINE and lab.toolTip() == ""
    lab.setFixedWidth(lab._width("<b>moe-top2</b> · running · step 1,200 / 2,000 …") + 6)
    assert lab.shown_text() == "<b>moe-top2</b> · running · step 1,200 / 2,000 …"
    assert lab.toolTip() == "moe-top2 · running · step 1,200 / 2,000 · 4,100 tok/s · val 1.93"
    assert lab.text() == LINE


def test_the_same_text_again_does_no_work_and_a_same_width_text_no_layout(qtbot, monkeypatch):
    lab = _label(qtbot, 2000)
    lab.setText(LINE)
    layouts, measures = [], []
    monkeypatch.setattr(lab, "updateGeometry", lambda: layouts.append(1))
    real = lab._width
    monkeypatch.setattr(lab, "_width", lambda t: measures.append(t) or real(t))
    for _ in range(5):
        lab.setText(LINE)
        lab.setToolTip("")
    assert layouts == [] and measures == []
    lab.setText(LINE.replace("1,200", "1,300"))   # the next step: the same digits' widths
    if real(LINE.replace("1,200", "1,300")) == real(LINE):
        assert layouts == []
    lab.setText(LINE + " · ETA 2 min 10 s")
    assert layouts == [1]
    assert lab.sizeHint().width() == real(LINE + " · ETA 2 min 10 s") + 4


def test_a_new_font_measures_the_line_again(qtbot):
    lab = _label(qtbot, 2000)
    lab.setText(LINE)
    before = lab.sizeHint().width()
    big = QFont(lab.font())
    big.setPointSizeF(lab.font().pointSizeF() * 2)
    lab.setFont(big)
    assert lab.sizeHint().width() > 1.5 * before
