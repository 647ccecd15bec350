"""What a view says about itself: keys for colours, words for abbreviations, panel names
that match the window's, help for each view."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("pytestqt")

from moe_studio.gui.experts_dashboard import ExpertsDashboard  # noqa: E402
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
    d.controls.set_layer(2)                  # one layer: one colour, no key needed
    assert not d.bars_key.isVisibleTo(d)


def test_share_maps_spell_out_total_variation(make_dashboard):
    """The Routing view's domain and token-class maps name their number in words."""
    from moe_studio.gui.routing_dashboard import RoutingDashboard
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
