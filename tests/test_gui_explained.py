"""What a view says about itself: keys for colours, words for abbreviations, panel names
that match the window's, help for each view."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from moe_studio.gui.views.experts import ExpertsDashboard  # noqa: E402
from moe_studio.paths import sample_runs_dir  # noqa: E402


def _key_entries(html_text: str) -> list[tuple[str, str]]:
    """(colour, name) per entry of a rich-text key of coloured squares."""
    return re.findall(r'color:(#[0-9a-fA-F]{6})">■</span>&nbsp;([^ <]+)', html_text)


def test_tokens_per_expert_has_a_layer_key(make_dashboard):
    """All layers: one bar group per layer, and a key under the bars says which colour
    is which layer, in the colours the bars are drawn in."""
    from PySide6.QtGui import QColor
    d = make_dashboard(ExpertsDashboard, [sample_runs_dir() / "moe-top2"], size=(1280, 800))
    assert d.layer() is None
    entries = _key_entries(d.bars_key.text())
    assert d.bars_key.isVisibleTo(d)
    assert [n for _, n in entries] == ["L0", "L1", "L2", "L3"]
    drawn = [QColor(item.opts["brush"].color()).name() for item in d.bars.bar_items()]
    assert [c.lower() for c, _ in entries] == drawn
    # the key sits under the bars, not over them
    bars = d.bars.geometry()
    key = d.bars_key.geometry()
    assert key.top() >= bars.bottom() and key.width() > 0
    # the dashed line is named in the key, not by a label drawn over the bars
    uniform = d.tokens_per_expert()[1][d.step_index(), 0].sum() / d.tokens_per_expert()[1].shape[-1]
    assert f"uniform {uniform:,.0f}" in d.bars_key.text()
    assert all(not line.label.toPlainText() for line, _ in d.bars._refs)
    d.controls.set_layer(2)                  # one layer: one colour, no layer entries
    assert d.bars_key.isVisibleTo(d) and _key_entries(d.bars_key.text()) == []
    assert "uniform" in d.bars_key.text()


def test_share_maps_spell_out_total_variation(make_dashboard):
    """The Routing view's domain and token-class maps name their number in words."""
    from moe_studio.gui.views.routing import RoutingDashboard
    d = make_dashboard(RoutingDashboard, [sample_runs_dir() / "moe-top2"], size=(1920, 1080))
    d.settle()
    for plot in (d.domain_map, d.class_map):
        title = plot.title()
        assert re.search(r"total variation \d\.\d\d$", title), title
        assert not re.search(r"\bTV\b", title)
        assert "total-variation distance" in plot.toolTip()


def test_ensemble_empty_state_names_what_the_window_shows(qtbot, tmp_path):
    """Every panel, section, field, tab and preset the empty Ensemble view sends the
    user to exists under that very name in the window."""
    from PySide6.QtWidgets import QDockWidget, QLabel, QTabWidget, QWidget

    from moe_studio.config import PRESETS
    from test_gui_layout import click_tab, make_window

    w = make_window(qtbot, tmp_path, (1280, 800))
    try:
        w.show_runs([sample_runs_dir() / "moe-top2"])
        page = click_tab(qtbot, w.tabs, "Ensemble")
        text = page.empty.text()
        assert page.empty.isVisibleTo(w)
        panels = re.findall(r"<b>([^<]+)</b> panel", text)
        docks = {d.windowTitle() for d in w.findChildren(QDockWidget)}
        assert panels and set(panels) <= docks, (panels, docks)
        sections = re.findall(r"<b>([^<]+)</b> section", text)
        names = {x.accessibleName() for x in w.setup_panel.findChildren(QWidget)}
        assert sections and all(f"{s} section" in names for s in sections), sections
        fields = re.findall(r"\bset <b>([^<]+)</b>", text)
        labels = {lab.text() for lab in w.setup_panel.findChildren(QLabel)}
        assert fields and set(fields) <= labels, fields
        presets = re.findall(r"preset <b>([^<]+)</b>", text)
        assert presets and set(presets) <= set(PRESETS)
        tabs = re.findall(r"<b>([^<]+)</b> tab", text)
        titles = {t.tabText(k) for t in page.findChildren(QTabWidget) for k in range(t.count())}
        assert tabs and set(tabs) <= titles, (tabs, titles)
    finally:
        w.controller.shutdown(10_000)


def _menu_click(qtbot, menu, text: str):
    """Click the item ``text`` of the open ``menu`` with the mouse; returns its action."""
    [a] = [a for a in menu.actions() if a.text().replace("&", "") == text]
    assert a.isEnabled() and a.isVisible()
    qtbot.mouseClick(menu, Qt.MouseButton.LeftButton, pos=menu.actionGeometry(a).center())
    return a


def _open_menu(qtbot, w, title: str):
    bar = w.menuBar()
    [a] = [a for a in bar.actions() if a.text().replace("&", "") == title]
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.actionGeometry(a).center())
    qtbot.waitUntil(lambda: a.menu().isVisible(), timeout=2000)
    return a.menu()


def _box(w, name):
    from PySide6.QtWidgets import QMessageBox
    boxes = [b for b in w.findChildren(QMessageBox, name) if b.isVisible()]
    assert len(boxes) == 1, (name, boxes)
    return boxes[0]


def test_help_menu_explains_each_view_and_lists_the_shortcuts(qtbot, tmp_path):
    from moe_studio.gui.main_window import DASHBOARDS
    from moe_studio.gui.views.help import VIEW_HELP
    from test_gui_layout import click_tab, make_window

    assert set(VIEW_HELP) == {t for t, _ in DASHBOARDS}    # every view has its lines
    w = make_window(qtbot, tmp_path, (1280, 800))
    try:
        click_tab(qtbot, w.tabs, "Experts")
        menu = _open_menu(qtbot, w, "Help")
        _menu_click(qtbot, menu, "What Am I Looking At?")
        box = _box(w, "viewHelpBox")
        assert box.windowTitle() == "Experts view"
        assert "Tokens per expert" in box.text() and "dead" in box.text().lower()
        box.close()

        # Help > Precision View, whichever view is shown
        menu = _open_menu(qtbot, w, "Help")
        _menu_click(qtbot, menu, "Precision View")
        box = _box(w, "viewHelpBox")
        assert box.windowTitle() == "Precision view" and "Loss scale" in box.text()
        box.close()

        # F1 on the window: the current view's help
        click_tab(qtbot, w.tabs, "Routing")
        with qtbot.waitActive(w):      # the help box had the focus
            w.activateWindow()
        qtbot.keyClick(w.windowHandle(), Qt.Key.Key_F1)   # as the window system sends it
        assert _box(w, "viewHelpBox").windowTitle() == "Routing view"

        menu = _open_menu(qtbot, w, "Help")
        _menu_click(qtbot, menu, "Keyboard Shortcuts")
        text = _box(w, "shortcutsBox").text()
        rows = dict(re.findall(r"<tr><td>([^<]+)</td><td>&nbsp;&nbsp;<b>([^<]+)</b>", text))
        expected = {"Train": "F5", "Pause": "F6", "Stop": "Shift+F5",
                    "Experiment Panel": "Ctrl+1", "Runs Panel": "Ctrl+2",
                    "Open Run…": "Ctrl+Shift+O", "Export Run Data…": "Ctrl+E",
                    "Dark Palette": "Ctrl+Shift+D", "What Am I Looking At?": "F1",
                    "Keyboard Shortcuts": "Ctrl+/"}
        for what, keys in expected.items():
            assert rows.get(what) == keys, (what, rows)
    finally:
        w.controller.shutdown(10_000)


def test_loss_scale_hover_explains_a_skipped_step(make_dashboard):
    """Hovering a skipped step's marker says which step, how the scale backed off and
    where the overflow was, as the run's backoff event records it."""
    import math

    from moe_studio.gui.views.precision import PrecisionDashboard
    from moe_studio.store import open_run
    run = sample_runs_dir() / "fp16-overflow"
    d = make_dashboard(PrecisionDashboard, [run], size=(1280, 800))
    with open_run(run) as r:
        ev = r.events()
    backoffs = ev[ev["kind"] == "loss_scale_backoff"]
    assert len(backoffs) >= 2
    row = backoffs.iloc[-1]
    step, data = int(row["step"]), row["data"]
    assert step in d.skipped_steps().tolist()
    text = d.scale_plot.hover_at(float(step))
    lo, hi = int(math.log2(data["to"])), int(math.log2(data["from"]))
    assert f"skipped step {step:,}: scale 2^{hi} → 2^{lo}" in text, text
    assert data["module"].replace("blocks.", "b") in text
    # away from every skipped step: the scale alone
    far = max(d.skipped_steps().max() + 100, 300)
    assert "skipped" not in d.scale_plot.hover_at(float(far))
