"""Where ``CurvePlot``'s legend goes: never over data.

Inside the view in a corner (or the middle of a side) with no data under it, else in a
column right of the plot that the layout keeps free for it, else, when that column
would take too much of a small plot's width, folded into a "key" button that lists the
series. Clicking an entry shows or hides its series (an ensemble's members as one).

A mixin of ``CurvePlot``: it uses the plot's ``_series``, ``_pi``, ``_vb``,
``_resolve``, ``_sync_visibility``, ``_apply_title`` and ``_place_menu_button``.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QIcon, QPixmap, QTransform

from .curve_series import CurveSeries
from .figure import menu_button


class _Legend(pg.LegendItem):
    """A legend that stops being auto-placed once the user drags it."""

    pinned = False

    def mouseDragEvent(self, ev):
        self.pinned = True
        super().mouseDragEvent(ev)


class CurveLegendMixin:
    """The legend of ``CurvePlot``: its entries, placement, and the "key" button."""

    def _init_legend(self) -> None:
        """Make the legend (hidden until a second series) and its column right of the
        plot; called by ``CurvePlot.__init__`` once the plot item is set up."""
        pi = self._pi
        self._legend = _Legend(offset=(-6, 6), verSpacing=-8, horSpacing=6, labelTextSize="7.5pt")
        self._legend.layout.setContentsMargins(4, 2, 6, 2)
        self._legend.setParentItem(self._vb)
        pi.legend = self._legend
        # Where the legend goes when every corner of the view has data under it: a
        # column right of the plot that the layout keeps free (zero wide while unused).
        self._legend_slot = pg.GraphicsWidget()
        self._legend_slot.setFlag(self._legend_slot.GraphicsItemFlag.ItemHasNoContents)
        pi.layout.addItem(self._legend_slot, 2, 3)
        # The title spans the whole plot, from above the y axis to above the legend's
        # column: a narrow plot keeps more of its title.
        pi.layout.removeItem(pi.titleLabel)
        pi.layout.addItem(pi.titleLabel, 0, 0, 1, 4)
        pi.layout.setColumnStretchFactor(3, 0)
        self._set_slot_width(0)
        self._legend_outside = False
        self._legend.sigSampleClicked.connect(self._on_legend_clicked)
        self._legend.setVisible(False)    # shown from the second series on
        self._legend_enabled = True
        self._legend_corner = (1, 0)

    def _init_key_button(self) -> None:
        """Make the "key" button: after the legend, as the title's room depends on it."""
        # The key of a plot too small for its legend beside it: a button that lists the
        # series (click one to show or hide it) instead of a box over the curves.
        self._key_button, self._key_menu = menu_button(
            self, "key", "The key to the curves (click one to show or hide it)")
        self._key_button.setObjectName("legendKeyButton")
        self._key_menu.aboutToShow.connect(self._fill_key_menu)
        self._key_button.hide()
        self._legend_collapsed = False

    def _legend_entries(self) -> list[CurveSeries]:
        """The series that carry a legend entry: each ungrouped one, and the first of
        each legend group."""
        seen: set[str] = set()
        out = []
        for s in self._series.values():
            if s.legend_group is None:
                out.append(s)
            elif s.legend_group not in seen:
                seen.add(s.legend_group)
                out.append(s)
        return out

    def _add_legend_entry(self, s: CurveSeries) -> None:
        if s in self._legend_entries() and self._legend.getLabel(s.smooth) is None:
            self._legend.addItem(s.smooth, s.legend_group or s.label)
            self._legend_columns(force=True)

    def _update_legend_visibility(self) -> None:
        # One entry needs no key (the title names it), and the box would hide data.
        show = self._legend_enabled and len(self._legend_entries()) > 1
        self._legend.setVisible(show)
        if not show and self._legend_outside:
            self._collapse_legend(False)      # no "key" button for no legend
            self._move_legend_inside()

    def set_legend_enabled(self, on: bool) -> None:
        """Show the in-plot legend (from the second series on; the default), or never:
        for a view that keys its series in a legend of its own (many runs)."""
        self._legend_enabled = bool(on)
        if on:
            for s in self._series.values():
                self._add_legend_entry(s)
        self._update_legend_visibility()
        self._place_legend()

    # A legend never covers data: inside the view in a corner (or the middle of a side)
    # with no data under it, else in a column right of the plot, which the layout keeps
    # free for it. The choice is made with the legend's inside size, whichever place it
    # is in now, so it does not flip back and forth as the view box changes size.
    _LEGEND_MARGIN = 6.0
    # Extra clearance, in pixels, a legend beside the plot needs to come back inside.
    # Its way back is judged by scaling today's view to the width it will have, but the
    # auto-range padding follows the width too: without a margin the judgement missed by
    # a pixel or two, and at some sizes the legend went in, covered a point, went out,
    # ... for ever (a repaint each time, starving the app's timers).
    _LEGEND_RETURN_PX = 12.0

    def _legend_columns(self, force: bool = False) -> None:
        """Columns: inside, 1 (2 from 7 entries); outside, as many as the plot's height
        needs. Then the legend takes the size its entries ask for."""
        lg = self._legend
        n = len(lg.items)
        if self._legend_outside:
            room = max(1.0, self._vb.boundingRect().height())
            cols = 1
            while cols < n and self._legend_hint(cols)[1] > room:
                cols += 1
        else:
            cols = 2 if n > 6 else 1
        if force or cols != lg.columnCount:
            lg.columnCount = 0      # setColumnCount lays out again only on a change
            lg.setColumnCount(cols)
        w, h = self._legend_hint(cols)
        lg.setGeometry(0, 0, w, h)

    def _legend_hint(self, cols: int) -> tuple[float, float]:
        """The legend's size with its entries in ``cols`` columns (row-major, as
        pyqtgraph's LegendItem fills them), from the entries' preferred sizes: the
        legend's own measure reads the sizes its last layout stretched them to."""
        lg = self._legend
        items = lg.items
        if not items:
            return 0.0, 0.0
        pref = Qt.SizeHint.PreferredSize
        rows = math.ceil(len(items) / cols)
        col_w = [0.0] * cols
        row_h = [0.0] * rows
        for i, (sm, lb) in enumerate(items):
            r, c = divmod(i, cols)
            a, b = sm.effectiveSizeHint(pref), lb.effectiveSizeHint(pref)
            col_w[c] = max(col_w[c], a.width() + b.width())
            row_h[r] = max(row_h[r], a.height(), b.height())
        lay = lg.layout
        left, top, right, bottom = lay.getContentsMargins()
        w = sum(col_w) + lay.horizontalSpacing() * (2 * cols - 1) + left + right
        h = sum(row_h) + lay.verticalSpacing() * (rows - 1) + top + bottom
        return w, h

    def _inside_legend_size(self) -> tuple[float, float]:
        """The legend's size in its inside layout (1 or 2 columns)."""
        return self._legend_hint(2 if len(self._legend.items) > 6 else 1)

    def _set_slot_width(self, w: float) -> None:
        slot = self._legend_slot
        if getattr(self, "_slot_w", None) == w:
            return         # a relayout on every pan step would cost a frame each
        self._slot_w = w
        slot.setMinimumWidth(w)
        slot.setMaximumWidth(w)
        slot.setPreferredWidth(w)
        self._pi.layout.setColumnFixedWidth(3, w)
        self._pi.layout.invalidate()
        if self._title and hasattr(self, "_key_button"):
            self._apply_title(force=False)    # the title gives up the legend's width

    def _move_legend_outside(self) -> None:
        self._legend_outside = True
        lg = self._legend
        lg.setParentItem(self._legend_slot)
        self._legend_columns(force=True)
        self._set_slot_width(lg.width() + 6)
        lg.anchor(itemPos=(0, 0), parentPos=(0, 0), offset=(4, 0))

    def _move_legend_inside(self) -> None:
        self._legend_outside = False
        self._legend.setParentItem(self._vb)
        self._set_slot_width(0)
        self._legend_columns(force=True)
        self._legend_corner = None

    _LEGEND_MAX_SHARE = 0.4     # of the plot's width, for a legend beside it

    def _collapse_legend(self, on: bool) -> None:
        """A legend beside the plot that would take more than its share of the width
        folds into the "key" button (the curves keep their room)."""
        if on == self._legend_collapsed:
            return
        self._legend_collapsed = on
        # hidden by opacity: visibility is what says whether a plot has a legend at all
        self._legend.setOpacity(0.0 if on else 1.0)
        self._legend.setAcceptedMouseButtons(Qt.MouseButton.NoButton if on
                                             else Qt.MouseButton.LeftButton)
        self._set_slot_width(0 if on else self._legend.width() + 6)
        self._key_button.setVisible(on)
        self._place_menu_button()

    def legend_collapsed(self) -> bool:
        """Whether the legend is folded into the "key" button (a plot too small for it)."""
        return self._legend_collapsed

    def _fill_key_menu(self) -> None:
        menu = self._key_menu
        menu.clear()
        for s in self._legend_entries():
            act = menu.addAction(s.legend_group or s.label)
            pix = QPixmap(12, 12)
            pix.fill(self._resolve(s.color))
            act.setIcon(QIcon(pix))
            act.setCheckable(True)
            act.setChecked(s.smooth.isVisible())
            act.toggled.connect(lambda on, k=s.key: self._toggle_entry(k, on))

    def _toggle_entry(self, key: str, on: bool) -> None:
        """Show or hide a legend entry's series (its whole group), as a legend click does."""
        s = self._series.get(key)
        if s is None:
            return
        s.smooth.setVisible(on)
        self._on_legend_clicked(s.smooth)

    def legend_outside(self) -> bool:
        """Whether the legend sits right of the plot (no free corner for it inside)."""
        return self._legend_outside

    def legend_scene_rect(self) -> QRectF | None:
        """The legend's rectangle in scene coordinates, or None when none is shown."""
        lg = self._legend
        if not lg.isVisible() or self._legend_collapsed:
            return None
        return lg.mapRectToScene(lg.boundingRect())

    def _place_legend(self) -> None:
        """Put the legend in the corner (or the middle of a side) of the view where no
        data point lies under it, top right first; where there is none, right of the
        plot. A legend the user dragged stays where they put it. ~1 ms."""
        lg = self._legend
        if lg.pinned or not lg.isVisible():
            return
        vb_rect = self._vb.boundingRect()
        if vb_rect.width() <= 0 or vb_rect.height() <= 0:
            return
        w, h = self._inside_legend_size()
        if self._legend_outside:
            # judged at the size the view will have with the legend inside again
            vb_rect = QRectF(vb_rect.left(), vb_rect.top(),
                             vb_rect.width() + self._legend_slot.width(), vb_rect.height())
        to_view = self._vb.childTransform().inverted()[0]
        if self._legend_outside:
            sx = (vb_rect.width() - self._legend_slot.width()) / vb_rect.width()
            to_view = QTransform(to_view.m11() * sx, 0, 0, to_view.m22(), to_view.dx(),
                                 to_view.dy())
        pts = self._visible_points()
        best = None
        # a few pixels of margin: a curve grazing the box edge reads as covered
        clear = 3.0 + (self._LEGEND_RETURN_PX if self._legend_outside else 0.0)
        if pts is not None and vb_rect.width() > w and vb_rect.height() > h:
            px, py = pts
            m = self._LEGEND_MARGIN
            for corner in ((1, 0), (0, 0), (1, 1), (0, 1), (1, 0.5), (0, 0.5)):
                left = vb_rect.left() + m if corner[0] == 0 else vb_rect.right() - m - w
                top = (vb_rect.top() + m if corner[1] == 0 else
                       vb_rect.bottom() - m - h if corner[1] == 1 else
                       vb_rect.center().y() - h / 2)
                r = to_view.mapRect(QRectF(left - clear, top - clear, w + 2 * clear,
                                           h + 2 * clear))
                if not np.any((px >= r.left()) & (px <= r.right())
                              & (py >= r.top()) & (py <= r.bottom())):
                    best = corner
                    break
        if best is None:
            if not self._legend_outside:
                self._move_legend_outside()
            else:
                self._legend_columns()
            collapse = (lg.width() + 6 > self._LEGEND_MAX_SHARE * self.width()
                        or lg.height() > self._vb.boundingRect().height() + 4)
            self._collapse_legend(collapse)
            self._set_slot_width(0 if collapse else lg.width() + 6)
            return
        self._collapse_legend(False)
        if self._legend_outside:
            self._move_legend_inside()
        if best != self._legend_corner:
            self._legend_corner = best
            m = self._LEGEND_MARGIN
            off = (-m if best[0] else m, 0 if best[1] == 0.5 else -m if best[1] else m)
            lg.anchor(itemPos=best, parentPos=best, offset=off)

    def _visible_points(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Points of the visible curves in view coordinates (log10 under log-y): every
        point of short series and the segments between sparse markers, a per-column
        min/max of long ones, so a spike is not missed."""
        xs, ys = [], []
        for s in self._series.values():
            if not s.smooth.isVisible():
                continue
            x, y = s.smooth.getData()   # display coordinates (log10 under log-y)
            if x is None or not len(x):
                continue
            x = np.asarray(x, float)
            y = np.asarray(y, float)
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            if not x.size:
                continue
            if 1 < x.size < 400 and np.all(np.diff(x) > 0):
                # a line of few points (evaluations): where its segments run counts too
                fine = np.linspace(x[0], x[-1], 800)
                xs.append(np.concatenate([fine, x]))
                ys.append(np.concatenate([np.interp(fine, x, y), y]))
            elif x.size <= 4000:
                xs.append(x)
                ys.append(y)
            else:
                # 1,000 columns: each one's lowest and highest point
                n = x.size // 1000 * 1000
                xc = x[:n].reshape(1000, -1)
                yc = y[:n].reshape(1000, -1)
                xs += [xc[:, 0], xc[:, 0], x[n:]]
                ys += [yc.min(axis=1), yc.max(axis=1), y[n:]]
        if not xs:
            return None
        return np.concatenate(xs), np.concatenate(ys)

    def _on_legend_clicked(self, item) -> None:
        for s in self._series.values():
            if s.smooth is item:
                if s.legend_group is not None:
                    for o in self._series.values():
                        if o.legend_group == s.legend_group and o is not s:
                            o.smooth.setVisible(s.smooth.isVisible())
                            self._sync_visibility(o)
                self._sync_visibility(s)
                return
