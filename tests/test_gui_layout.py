"""Every view of the sample runs in the main window at 1280 x 800 and 1920 x 1080 (the
experiment and runs panels docked), checked the way a reader would: titles whole or cut
only at a separator, notices inside their plot, combo boxes showing their whole choice,
nothing pushed past the window's right edge."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import (QAbstractScrollArea, QComboBox, QLabel, QStyle,  # noqa: E402
                               QStyleOptionComboBox, QWidget)

from moe_studio.gui.widgets.heatmap import FigureWidget  # noqa: E402
from moe_studio.gui.widgets.plots import CurvePlot  # noqa: E402
from moe_studio.paths import sample_runs_dir  # noqa: E402

SIZES = [(1280, 800), (1920, 1080)]
# (view, sample runs shown): each view with runs that give it something to draw.
CASES = [
    ("Training", ["moe-top2"]), ("Gates", ["moe-top2"]), ("Experts", ["moe-top2"]),
    ("Experts", ["switch-top1"]), ("Routing", ["moe-top2"]), ("Precision", ["fp16-overflow"]),
    ("Ensemble", ["bagging-4"]), ("Ensemble", ["moe-vs-ensemble-moe", "moe-vs-ensemble-dense"]),
    ("Compare", ["moe-vs-ensemble-moe", "moe-vs-ensemble-dense"]),
]


def make_window(qtbot, tmp_path, size):
    from moe_studio.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    return w


def click_tab(qtbot, tabs, title: str) -> QWidget:
    """Click the tab named ``title`` of ``tabs`` as a user would; returns its page."""
    bar = tabs.tabBar()
    i = [tabs.tabText(k) for k in range(tabs.count())].index(title)
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(i).center())
    assert tabs.currentIndex() == i
    qtbot.wait(60)          # layouts settle, the view draws its first frame
    return tabs.currentWidget()


def shown(w: QWidget) -> bool:
    return w.isVisibleTo(w.window()) and w.width() > 0 and w.height() > 0


def figures(root: QWidget) -> list[QWidget]:
    return [f for f in root.findChildren(QWidget) if isinstance(f, (CurvePlot, FigureWidget))
            and shown(f)]


def title_problems(root: QWidget) -> list[str]:
    """Titles cut inside a word ("Load C…") instead of at a separator ("Load CV …")."""
    out = []
    for f in figures(root):
        text = f.plot_item.titleLabel.text or ""
        if "…" in text and not text.endswith(" …"):
            out.append(f"{type(f).__name__} {f.width()} px: {text!r}")
    return out


def notice_problems(root: QWidget) -> list[str]:
    """Notices over plots whose wrapped text needs more room than they have (a word
    wider than the notice, or more lines than its height)."""
    out = []
    for f in figures(root):
        for lab in f.findChildren(QLabel):
            if shown(lab) and lab.wordWrap() and lab.text():
                need = lab.heightForWidth(lab.width())
                widest = max(lab.fontMetrics().horizontalAdvance(w) for w in lab.text().split())
                if need > lab.height() + 1 or widest > lab.width():
                    out.append(f"{lab.text()!r}: needs {widest} x {need} px, has "
                               f"{lab.width()} x {lab.height()}")
    return out


def combo_problem(cb: QComboBox) -> str | None:
    """What is wrong with a combo box too narrow for the choice it shows, or None."""
    if not shown(cb) or cb.isEditable() or not cb.currentText():
        return None
    opt = QStyleOptionComboBox()
    cb.initStyleOption(opt)
    field = cb.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, opt,
                                      QStyle.SubControl.SC_ComboBoxEditField, cb)
    icon = not cb.itemIcon(cb.currentIndex()).isNull()
    room = field.width() - (cb.iconSize().width() + 4 if icon else 0)
    need = cb.fontMetrics().horizontalAdvance(cb.currentText())
    return f"{cb.currentText()!r}: needs {need} px, has {room}" if need > room else None


def combo_problems(root: QWidget) -> list[str]:
    """Combo boxes too narrow for the choice they show."""
    return [p for p in map(combo_problem, root.findChildren(QComboBox)) if p]


def overflow_problems(root: QWidget) -> list[str]:
    """Figures reaching past the right or bottom edge of the view, outside a scroll area."""
    out = []
    for f in figures(root):
        p = f.parentWidget()
        scrolled = False
        while p is not None and p is not root:
            if isinstance(p, QAbstractScrollArea):
                scrolled = True
            p = p.parentWidget()
        if scrolled:
            continue
        tl = f.mapTo(root, QPoint(0, 0))
        if tl.x() + f.width() > root.width() + 1 or tl.y() + f.height() > root.height() + 1:
            out.append(f"{type(f).__name__} {f.plot_item.titleLabel.text!r} at {tl.x()},"
                       f"{tl.y()} {f.width()}x{f.height()} in {root.width()}x{root.height()}")
    return out


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_view_reads_at_default_sizes(qtbot, tmp_path, size):
    w = make_window(qtbot, tmp_path, size)
    problems = []
    try:
        # Every view first seen empty, as at start-up: a combo box that sized itself to
        # no choices at all must still grow to the ones a run brings.
        for view in dict(CASES):
            click_tab(qtbot, w.tabs, view)
        for view, runs in CASES:
            w.show_runs([sample_runs_dir() / r for r in runs])
            page = click_tab(qtbot, w.tabs, view)
            where = f"{view} {'+'.join(runs)}"
            checks = [title_problems, notice_problems, combo_problems, overflow_problems]
            for check in checks:
                problems += [f"{where}: {check.__name__}: {p}" for p in check(page)]
            # and each combo box showing its longest choice
            for cb in page.findChildren(QComboBox):
                if shown(cb) and cb.count() > 1 and cb.isEnabled():
                    longest = max(range(cb.count()), key=lambda k: len(cb.itemText(k)))
                    keep = cb.currentIndex()
                    cb.setCurrentIndex(longest)
                    qtbot.wait(20)
                    p = combo_problem(cb)
                    problems += [f"{where}: longest choice: {p}"] if p else []
                    cb.setCurrentIndex(keep)
            qtbot.wait(20)
            for check in checks:
                problems += [f"{where}: {check.__name__}: {p}" for p in check(page)]
    finally:
        w.controller.shutdown(10_000)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_side_by_side_fits_the_window(qtbot, tmp_path, size):
    """Two runs side by side: each view gets room enough to read, without a horizontal
    scroll bar (one above the other when the width is short)."""
    w = make_window(qtbot, tmp_path, size)
    try:
        w.show_runs([sample_runs_dir() / r for r in ("moe-top2", "switch-top1")])
        page = click_tab(qtbot, w.tabs, "Compare")
        click_tab(qtbot, page.tabs, "Side by side")
        for view in ("Routing", "Experts"):
            page.pair_view.setCurrentIndex(page.pair_view.findText(view))
            qtbot.wait(100)
            scroll = page.pair()[0].parentWidget().parentWidget().parentWidget().parentWidget()
            assert isinstance(scroll, QAbstractScrollArea)
            assert not scroll.horizontalScrollBar().isVisible(), view
            assert min(v.width() for v in page.pair()) >= 700, view
            problems = title_problems(page) + notice_problems(page)
            assert not problems, "\n".join(problems)
    finally:
        w.controller.shutdown(10_000)


def test_every_view_of_a_live_run_reads(qtbot, tmp_path):
    """A run that has only begun (scalars, no snapshots yet), followed live: every view
    says what it waits for inside its plots, titles whole, nothing cut."""
    from test_gui_dashboard import new_run, write_steps

    made = []
    w = make_window(qtbot, tmp_path, (1280, 800))
    problems = []
    try:
        wr = new_run(made, tmp_path / "runs", "just-started", members=1, steps=2000)
        write_steps(wr, range(0, 12), members=1)
        w.show_runs([wr.run_dir], live=True)
        for view in [w.tabs.tabText(i) for i in range(w.tabs.count())]:
            page = click_tab(qtbot, w.tabs, view)
            for check in (title_problems, notice_problems, combo_problems,
                          overflow_problems):
                problems += [f"{view}: {check.__name__}: {p}" for p in check(page)]
        for d in w.dashboards:
            d.stop_follow()
    finally:
        for m in made:
            m.close("stopped")
        w.controller.shutdown(10_000)
    assert not problems, "\n".join(problems)
