"""The frame every figure of the app shares: a themed ``PlotWidget`` with a title that
fits its width, a hover read-out, and the ⋯ menu that exports PNG, SVG and the data as
CSV. Curves (``plots``), heatmaps (``heatmap``), bars and bands (``bars``) derive from
``FigureWidget`` and add only what they draw.
"""
from __future__ import annotations

import csv
import html
import re
from pathlib import Path
from typing import Sequence

import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401  (registers ImageExporter / SVGExporter)
from PySide6.QtCore import QEvent, QPointF, QRectF
from PySide6.QtGui import QAction, QColor, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from .. import theme
from .axes import ValueAxis, no_si_prefix
from ..theme import is_dark_palette, plot_colors


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "plot"


class FigureWidget(QWidget):
    """A titled, themed plot with a hover box and a ⋯ menu (PNG / SVG / CSV export).

    Subclasses draw into ``plot_item``, implement ``hover_at(x, y) -> str`` (view
    coordinates; return "" for nothing) and ``csv_rows() -> (header, rows)``, and
    re-colour their own items in ``_theme_changed``.
    """

    plot_widget_class = pg.PlotWidget
    min_plot_size = (140, 100)

    def __init__(self, title: str = "", x_label: str = "", y_label: str = "", *,
                 axis_items: dict | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self._title = title
        self._colors = plot_colors(is_dark_palette(self.palette()))
        axis_items = dict(axis_items or {})
        axis_items.setdefault("left", ValueAxis("left"))
        self._plot = self.plot_widget_class(parent=self, background=self._colors["background"],
                                            axisItems=axis_items)
        self._plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._plot.setMinimumSize(*self.min_plot_size)
        pi = self._pi = self._plot.getPlotItem()
        self._vb = pi.getViewBox()
        for name in ("left", "bottom", "right", "top"):
            no_si_prefix(pi.getAxis(name))   # never "(×0.001)" beside a probability
        pi.hideButtons()
        pi.setMenuEnabled(False, True)   # keep View All + export, drop "Plot Options"
        # Axes repaint from a pixmap until their ticks change: replaying their text was
        # a third of the cost of showing a view again (a tab switch).
        for axis in pi.axes.values():
            axis["item"].setCacheMode(pg.QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        if x_label:
            pi.setLabel("bottom", x_label)
        if y_label:
            pi.setLabel("left", y_label)
        self._hover = pg.TextItem(anchor=(0, 0))
        self._hover.setZValue(2000)
        self._hover.hide()
        pi.addItem(self._hover, ignoreBounds=True)
        self._plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self._plot.installEventFilter(self)

        self._menu_button, self.menu = menu_button(self, "⋯", "Export this plot")
        self._add_export_actions(self.menu)
        self._vb.menu.addSeparator()
        self._add_export_actions(self._vb.menu)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self._plot)

    # ------------------------------------------------------------------ access
    @property
    def plot_item(self) -> pg.PlotItem:
        return self._pi

    @property
    def plot_widget(self) -> pg.PlotWidget:
        return self._plot

    @property
    def view_box(self) -> pg.ViewBox:
        return self._vb

    def title(self) -> str:
        return self._title

    def set_minimum_plot_height(self, height: int) -> None:
        """Let a plot stacked under another shrink below the usual minimum, so the views
        around it keep the room their rows need."""
        self._plot.setMinimumHeight(height)

    def set_title(self, title: str) -> None:
        if title != self._title:
            self._title = title
            self._apply_title()

    def colors(self) -> dict:
        return self._colors

    # ------------------------------------------------------------------ hover
    def hover_at(self, x: float, y: float) -> str:  # pragma: no cover - overridden
        return ""

    def eventFilter(self, obj, event) -> bool:
        if obj is self._plot and event.type() == QEvent.Type.Leave:
            self.hide_hover()
        return super().eventFilter(obj, event)

    def hide_hover(self) -> None:
        self._hover.hide()

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        if not self._vb.sceneBoundingRect().contains(scene_pos):
            self.hide_hover()
            return
        p = self._vb.mapSceneToView(scene_pos)
        if not self._hover_point(p.x(), p.y()):
            self.hide_hover()

    def _hover_point(self, x: float, y: float) -> str:
        """The read-out for the mouse at view point (x, y); a curve reads by x alone."""
        return self.hover_at(x, y)

    def _show_hover(self, lines: Sequence[str], x: float, y: float) -> None:
        """Show the read-out (HTML lines) next to view point (x, y), on the side that
        keeps it inside the plot."""
        fg = self._colors["foreground"]
        self._hover.setHtml(f'<div style="font-size:8pt; color:{fg}">' + "<br>".join(lines)
                            + "</div>")
        scene = self._vb.mapViewToScene(QPointF(x, y))
        r = self._vb.sceneBoundingRect()
        right = scene.x() > r.center().x()
        below = scene.y() > r.center().y()
        self._hover.setAnchor((1.0 if right else 0.0, 1.0 if below else 0.0))
        self._hover.setPos(x, y)
        self._hover.show()

    # ------------------------------------------------------------------ export
    def _add_export_actions(self, menu: QMenu) -> None:
        for text, slot in (("Export PNG…", self._ask_png), ("Export SVG…", self._ask_svg),
                           ("Export data CSV…", self._ask_csv)):
            act = QAction(text, menu)
            act.triggered.connect(slot)
            menu.addAction(act)

    def _ask(self, caption: str, suffix: str, filt: str, fn) -> None:
        path, _ = QFileDialog.getSaveFileName(self, caption, f"{_slug(self._title)}.{suffix}", filt)
        if not path:
            return
        if not path.lower().endswith("." + suffix):
            path += "." + suffix
        try:
            fn(path)
        except Exception as exc:  # noqa: BLE001  a full disk or a read-only folder: tell, don't crash
            QMessageBox.warning(self, caption, f"Could not write {path}:\n{exc}")

    def _ask_png(self) -> None:
        self._ask("Export PNG", "png", "PNG image (*.png)", self.export_png)

    def _ask_svg(self) -> None:
        self._ask("Export SVG", "svg", "SVG image (*.svg)", self.export_svg)

    def _ask_csv(self) -> None:
        self._ask("Export data CSV", "csv", "CSV (*.csv)", self.export_csv)

    def export_png(self, path: str | Path, width: int | None = None) -> Path:
        """Write the figure (title, axes, colour bar, data; no hover box) as PNG;
        ``width`` in pixels, default twice the on-screen width."""
        path = Path(path)
        self.hide_hover()
        exporter = pg.exporters.ImageExporter(self._pi)
        exporter.parameters()["width"] = int(width or max(800, 2 * self._pi.sceneBoundingRect().width()))
        exporter.export(str(path))
        return path

    def export_svg(self, path: str | Path) -> Path:
        """Write the figure as SVG (heatmap pixels embedded as an image)."""
        path = Path(path)
        self.hide_hover()
        try:
            pg.exporters.SVGExporter(self._pi).export(str(path))
        except Exception:  # noqa: BLE001  (ValueError, or what a newer pyqtgraph raises instead)
            # pyqtgraph <= 0.14.0 cannot parse the closed paths ("... Z") that Qt >= 6.9
            # writes (pyqtgraph issue #3495): render through QSvgGenerator instead, the
            # same vector drawing without pyqtgraph's coordinate clean-up.
            rect = self._pi.sceneBoundingRect()
            target = QRectF(0, 0, rect.width(), rect.height())
            gen = QSvgGenerator()
            gen.setFileName(str(path))
            gen.setSize(target.size().toSize())
            gen.setViewBox(target)
            gen.setTitle(self._title or "plot")
            painter = QPainter(gen)
            try:
                painter.setRenderHint(QPainter.RenderHint.Antialiasing)
                painter.fillRect(target, QColor(self._colors["background"]))
                self._plot.scene().render(painter, target, rect)
            finally:
                painter.end()
        return path

    def csv_rows(self) -> tuple[list[str], list[list]]:  # pragma: no cover - overridden
        return [], []

    def export_csv(self, path: str | Path) -> Path:
        """Write the data behind the figure as CSV (see ``csv_rows``)."""
        path = Path(path)
        header, rows = self.csv_rows()
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for row in rows:
                w.writerow([repr(v) if isinstance(v, float) else v for v in row])
        return path

    # ------------------------------------------------------------------ theme
    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)

    def _apply_theme(self) -> None:
        c = self._colors = plot_colors(is_dark_palette(self.palette()))
        fg = QColor(c["foreground"])
        self._plot.setBackground(c["background"])
        for name in ("left", "bottom", "right", "top"):
            axis = self._pi.getAxis(name)
            axis.setPen(pg.mkPen(fg))
            axis.setTextPen(pg.mkPen(fg))
        self._hover.fill = pg.mkBrush(QColor(*c["legend_bg"]))
        self._hover.border = pg.mkPen(QColor(c["muted"]), width=0.5)
        self._apply_title()
        self._theme_changed()

    def _theme_changed(self) -> None:
        """Subclasses re-colour their own items here."""

    def _title_reserve(self) -> float:
        """Width right of the data (a colour bar) that the title cannot use."""
        return 0.0

    def _apply_title(self) -> None:
        """Set the title, elided to the width there is: a pyqtgraph title never gets
        narrower than its text, so a long one would push the plot (and its colour bar)
        out of a narrow widget."""
        if not self._title:
            self._pi.setTitle(None)
            self._shown_title = None
            return
        # The title sits over the data column only: not over the left axis, nor the
        # colour bar; and the ⋯ button needs its corner.
        left = self._pi.getAxis("left")
        avail = max(60, int(self.width() - (left.width() if left.isVisible() else 0)
                            - self._title_reserve() - 36))
        text = theme.elide_title(self.font(), self._title, avail)
        key = (text, self._colors["foreground"])
        if key != getattr(self, "_shown_title", None):
            self._shown_title = key
            self._pi.setTitle(html.escape(text), color=self._colors["foreground"],
                              size=f"{theme.TITLE_POINT_SIZE:g}pt", bold=True)
            # A longer title before may have widened the plot item past the view (a title
            # is never narrower than its text), and the view re-fits it only on its own
            # resize: fit it to the view again, or the colour bar stays cut off.
            self._pi.setGeometry(QRectF(self._plot.rect()))
        self._plot.setToolTip(self._title if text != self._title else "")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._place_menu_button()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place_menu_button()
        if self._title:
            self._apply_title()

    def _place_menu_button(self) -> None:
        b = self._menu_button
        b.adjustSize()
        b.move(self.width() - b.width() - 4, 3)
        b.raise_()


def menu_button(parent: QWidget, text: str, tip: str) -> tuple[QToolButton, QMenu]:
    """A flat button in a figure's corner that opens its menu on a click."""
    b = QToolButton(parent)
    b.setText(text)
    b.setToolTip(tip)
    b.setAutoRaise(True)
    b.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
    b.setStyleSheet("QToolButton::menu-indicator { image: none; }")
    # As narrow as its text: every pixel these corner buttons take is the title's.
    b.setFixedWidth(b.fontMetrics().horizontalAdvance(text) + 10)
    menu = QMenu(b)
    b.setMenu(menu)
    return b, menu
