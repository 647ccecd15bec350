"""Light and dark looks for the whole app: the Qt palette (Fusion) and the plot colours.

One source for both, so a plot never ends up white inside a dark window. Widgets that
draw their own colours (plots, status cells) ask :func:`is_dark_palette` of their own
palette when Qt tells them it changed, so switching theme at runtime re-colours them.
"""
from __future__ import annotations

import re
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette, QPen
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle, QStyleFactory

# Tableau-10 hue order. Light: the classic matplotlib tab10 (olive darkened so it still
# reads on white). Dark: the same hues lifted in lightness so they read on near-black.
_SERIES_LIGHT = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#a5a61c", "#17becf")
_SERIES_DARK = ("#5fa8e8", "#ffa04d", "#5cc85c", "#f0605d", "#b99be0",
                "#c9a08d", "#f59ad5", "#b5b5b5", "#d8d84a", "#4fd6e3")

_STATUS = {
    # status: (light, dark)
    "running": ("#1e8e3e", "#5cc85c"),
    "finished": (None, None),  # the ordinary text colour
    "stopped": ("#6b6b6b", "#a0a4ab"),
    "failed": ("#c62828", "#f0605d"),
    "interrupted": ("#d46b08", "#ffa04d"),
}

_PALETTES: dict[bool, dict[str, str]] = {
    False: {
        "window": "#f3f3f3", "window_text": "#1b1b1b", "base": "#ffffff",
        "alternate_base": "#f5f7fa", "text": "#1b1b1b", "button": "#ececec",
        "button_text": "#1b1b1b", "bright_text": "#d00000", "highlight": "#2f6fd6",
        "highlighted_text": "#ffffff", "tooltip_base": "#ffffff", "tooltip_text": "#1b1b1b",
        "link": "#1a5fb4", "link_visited": "#6a3fb4", "placeholder": "#8a8a8a",
        "light": "#ffffff", "midlight": "#e3e3e3", "mid": "#b8b8b8", "dark": "#9a9a9a",
        "shadow": "#707070", "disabled_text": "#a0a0a0", "disabled_button": "#e6e6e6",
        "disabled_highlight": "#c8c8c8",
    },
    True: {
        "window": "#1f2023", "window_text": "#e4e6ea", "base": "#17181b",
        "alternate_base": "#222428", "text": "#e4e6ea", "button": "#2b2d32",
        "button_text": "#e4e6ea", "bright_text": "#ff6b6b", "highlight": "#3d7bd9",
        "highlighted_text": "#ffffff", "tooltip_base": "#2b2d32", "tooltip_text": "#e4e6ea",
        "link": "#6aa9ff", "link_visited": "#b08cff", "placeholder": "#80858d",
        "light": "#3c3f45", "midlight": "#33363b", "mid": "#2a2c31", "dark": "#111214",
        "shadow": "#000000", "disabled_text": "#6b7078", "disabled_button": "#26282c",
        "disabled_highlight": "#3a3d42",
    },
}

_dark = False
_style: "FusionStyle | None" = None  # Python keeps a reference; the app owns it


class FusionStyle(QProxyStyle):
    """Fusion, with check boxes, radio buttons and line edits that keep a visible edge on
    a dark palette (Fusion draws those edges as the window colour darkened by 40 %,
    which vanishes against a near-black window)."""

    _EDGED = (QStyle.PrimitiveElement.PE_IndicatorCheckBox,
              QStyle.PrimitiveElement.PE_IndicatorItemViewItemCheck,
              QStyle.PrimitiveElement.PE_IndicatorRadioButton,
              QStyle.PrimitiveElement.PE_PanelLineEdit)

    def __init__(self):
        super().__init__(QStyleFactory.create("Fusion"))

    def drawPrimitive(self, element, option, painter, widget=None):
        super().drawPrimitive(element, option, painter, widget)
        if element not in self._EDGED or not is_dark_palette(option.palette):
            return
        if element == QStyle.PrimitiveElement.PE_PanelLineEdit:
            if option.state & QStyle.StateFlag.State_HasFocus:
                return  # Fusion's highlight-coloured focus frame is visible already
            # A line edit inside a combo box or spin box has that widget's frame.
            if widget is not None and widget.parentWidget() is not None and \
                    widget.parentWidget().inherits("QAbstractSpinBox"):
                return
            if getattr(option, "lineWidth", 1) <= 0:
                return
        edge = option.palette.color(QPalette.ColorRole.Window).lighter(230)
        if not option.state & QStyle.StateFlag.State_Enabled:
            edge = option.palette.color(QPalette.ColorRole.Window).lighter(160)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(edge, 1))
        painter.setBrush(QColor(0, 0, 0, 0))
        r = QRectF(option.rect).adjusted(0.5, 0.5, -0.5, -0.5)
        if element == QStyle.PrimitiveElement.PE_IndicatorRadioButton:
            painter.drawEllipse(r.adjusted(1, 1, -1, -1))
        elif element == QStyle.PrimitiveElement.PE_PanelLineEdit:
            painter.drawRoundedRect(r, 2, 2)
        else:
            painter.drawRoundedRect(r.adjusted(0, 0, -1, -1), 1, 1)
        painter.restore()


def build_palette(dark: bool) -> QPalette:
    """A complete QPalette (every colour role, every group) for the light or dark theme."""
    c = {k: QColor(v) for k, v in _PALETTES[bool(dark)].items()}
    R = QPalette.ColorRole
    pal = QPalette()
    roles = {
        R.Window: c["window"], R.WindowText: c["window_text"], R.Base: c["base"],
        R.AlternateBase: c["alternate_base"], R.Text: c["text"], R.Button: c["button"],
        R.ButtonText: c["button_text"], R.BrightText: c["bright_text"],
        R.Highlight: c["highlight"], R.HighlightedText: c["highlighted_text"],
        R.ToolTipBase: c["tooltip_base"], R.ToolTipText: c["tooltip_text"],
        R.Link: c["link"], R.LinkVisited: c["link_visited"],
        R.PlaceholderText: c["placeholder"], R.Light: c["light"], R.Midlight: c["midlight"],
        R.Mid: c["mid"], R.Dark: c["dark"], R.Shadow: c["shadow"],
    }
    if hasattr(R, "Accent"):  # Qt >= 6.6
        roles[R.Accent] = c["highlight"]
    for role, color in roles.items():
        pal.setColor(role, color)  # all groups
    G = QPalette.ColorGroup
    for role in (R.WindowText, R.Text, R.ButtonText, R.HighlightedText, R.PlaceholderText):
        pal.setColor(G.Disabled, role, c["disabled_text"])
    pal.setColor(G.Disabled, R.Button, c["disabled_button"])
    pal.setColor(G.Disabled, R.Highlight, c["disabled_highlight"])
    # An unfocused window keeps a visible (if calmer) selection.
    pal.setColor(G.Inactive, R.Highlight, c["highlight"].darker(115) if dark
                 else c["highlight"].lighter(125))
    return pal


def apply_palette(app: QApplication, dark: bool) -> None:
    """Switch the whole app to the light or dark theme: Fusion style, palette, plot defaults.

    Existing widgets get Qt's palette-change event; plots created afterwards pick up the
    matching pyqtgraph background/foreground from the global config.
    """
    global _dark, _style
    _dark = bool(dark)
    if not isinstance(app.style(), FusionStyle):
        _style = FusionStyle()
        app.setStyle(_style)
    app.setPalette(build_palette(_dark))
    colors = plot_colors(_dark)
    pg.setConfigOptions(antialias=True, background=colors["background"],
                        foreground=colors["foreground"])


def is_dark() -> bool:
    """The theme last set by :func:`apply_palette` (False before any call)."""
    return _dark


def is_dark_palette(palette: QPalette) -> bool:
    """True when ``palette``'s window colour is dark: what a widget should draw for."""
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def diverging_colormap(palette: QPalette | None = None) -> str:
    """The colour map of shares centred on a reference (load / uniform), for the theme
    of ``palette`` (default: the application's)."""
    return plot_colors(is_dark_palette(palette or QApplication.palette()))["colormap_diverging"]


def plot_colors(dark: bool) -> dict[str, Any]:
    """Colours for plots in one theme.

    Keys: ``background``, ``foreground`` (axes, text), ``muted`` (secondary text),
    ``grid_alpha`` (0..1, grid lines are the foreground at this opacity), ``crosshair``,
    ``legend_bg`` (RGBA tuple), ``series`` (10 hex colours, Tableau-10 order), ``ensemble``
    (the colour of an ensemble's combined curve), ``colormap`` (sequential pyqtgraph
    colormap name for heatmaps) and ``colormap_diverging``.
    """
    if dark:
        return {
            "background": "#17181b", "foreground": "#c9ccd2", "muted": "#8a9099",
            "grid_alpha": 0.13, "crosshair": "#9aa0a8", "legend_bg": (30, 32, 36, 215),
            "series": list(_SERIES_DARK), "ensemble": "#f2f2f2",
            "colormap": "viridis", "colormap_diverging": "CET-D1",
        }
    return {
        "background": "#ffffff", "foreground": "#3a3a3a", "muted": "#777777",
        "grid_alpha": 0.15, "crosshair": "#8a8a8a", "legend_bg": (255, 255, 255, 215),
        "series": list(_SERIES_LIGHT), "ensemble": "#202020",
        "colormap": "viridis", "colormap_diverging": "CET-D1",
    }


def series_color(i: int, dark: bool | None = None) -> str:
    """The i-th qualitative series colour (hex), cycling after 10. ``dark=None``: current theme."""
    pal = _SERIES_DARK if (_dark if dark is None else dark) else _SERIES_LIGHT
    return pal[int(i) % len(pal)]


def status_color(status: str, dark: bool | None = None) -> QColor | None:
    """Text colour for a run status (running green, failed red, interrupted orange, ...);
    None means the ordinary text colour."""
    pair = _STATUS.get(status)
    if pair is None:
        return None
    hexcolor = pair[1] if (_dark if dark is None else dark) else pair[0]
    return QColor(hexcolor) if hexcolor else None


# ---------------------------------------------------------------------------- plot titles
TITLE_POINT_SIZE = 10.0


# Where a title may be cut: its detail after " · ", ": ", " (" or ", " goes first, so a
# narrow plot keeps whole words ("Load CV …") instead of "Load CV (std ÷ m…".
_TITLE_CUTS = re.compile(r" · |: | \(|, ")


def elide_title(base: QFont, title: str, width: float) -> str:
    """``title`` as a plot draws it (``TITLE_POINT_SIZE`` bold, from ``base``'s family),
    shortened to ``width`` pixels: trailing details are dropped at a separator (" · ",
    ": ", " (", ", ") and marked " …", and only a first part that is still too wide is
    elided inside a word.
    pyqtgraph's title item never gets narrower than its text, so a title too long for its
    plot would push the view box (and the latest data, or a colour bar) past the widget's
    right edge."""
    f = QFont(base)
    f.setPointSizeF(TITLE_POINT_SIZE)
    f.setBold(True)
    fm = QFontMetrics(f)
    room = max(1, int(width))
    if fm.horizontalAdvance(title) <= room:
        return title
    for m in reversed(list(_TITLE_CUTS.finditer(title))):
        head = title[:m.start()].rstrip() + " …"    # whole words, and a sign of more
        if fm.horizontalAdvance(head) <= room:
            return head
    first = _TITLE_CUTS.split(title, maxsplit=1)[0]
    return fm.elidedText(first, Qt.TextElideMode.ElideRight, room)
