"""``moe-studio report RUN [RUN ...] --out FILE.png``: the app's dashboards of a run (or
an overlay of several) rendered offscreen into one image, for headless servers and for
sharing.

The image is a header (one line per run: name, status, steps, losses, setup) and then
one section per dashboard of the app, in the order of ``main_window.DASHBOARDS``: every
dashboard added there is in the report too. Each is the very widget the app shows,
given the runs with ``set_runs(paths)`` (several: overlaid) and grabbed at the report's
width. A report is a picture: every row of controls (step slider, layer and format
combos, the Route box) and the "click a cell" token panels are hidden
(``hide_controls``); a dashboard may offer ``set_report_mode(True)`` for more of its
own, and a ``report_aspect`` attribute (height / width; default 0.6). One with a
``report_min_runs`` attribute (Compare: 2) is left out of reports of fewer runs, and one
whose ``report_empty_reason()`` gives a reason after ``set_runs`` (Precision without
precision records, Ensemble without an ensemble, the routing views of a dense model) is
one line saying so instead of a picture of its empty state, unless ``--tabs`` asks for it.

Without a display (Linux with neither ``$DISPLAY`` nor ``$WAYLAND_DISPLAY``) Qt runs
offscreen; ``QT_QPA_PLATFORM`` set by the caller wins. Qt's chatter about offscreen
windows stays off stderr (``quiet_qt``); its real warnings and errors still reach it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_WIDTH = 1600
MIN_WIDTH, MAX_WIDTH = 600, 8000
DEFAULT_ASPECT = 0.6
_PAD = 16
# Qt warnings that rendering offscreen always produces and that say nothing about the
# report (a window manager hint the offscreen platform cannot pass on).
QT_NOISE = ("does not support propagateSizeHints",)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``report`` on the ``moe-studio`` command line."""
    p = subparsers.add_parser(
        "report", help="render the dashboards of runs into one PNG (offscreen)",
        description="Render the app's dashboards of one run, or an overlay of several, "
                    "into one PNG image. Works without a display.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folder (or its run.sqlite), a sample run's name, or a sweep "
                        "folder: its finished runs")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.png",
                   help="the image to write")
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH,
                   help=f"image width in pixels (default {DEFAULT_WIDTH})")
    p.add_argument("--dark", action="store_true", help="the dark palette")
    p.add_argument("--tabs", metavar="TITLE[,TITLE...]",
                   help="only these dashboards (their tab titles, e.g. Training)")
    p.set_defaults(func=cmd_report)
    return p


def _needs_offscreen() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return False
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def cmd_report(args) -> int:
    prog = "moe-studio report"
    if not MIN_WIDTH <= args.width <= MAX_WIDTH:
        print(f"{prog}: --width must be between {MIN_WIDTH} and {MAX_WIDTH} pixels",
              file=sys.stderr)
        return 2
    if args.out.suffix.lower() != ".png":
        print(f"{prog}: --out must name a .png file (got {args.out})", file=sys.stderr)
        return 2
    from ...config import ConfigError
    from ...paths import check_output_file
    try:  # before any run is read or Qt started: a report never writes inside a run
        args.out = check_output_file(args.out, "--out", outside_runs=True)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    # Check every run before starting Qt: a typo fails fast with the store's one line.
    from ...store import RunFileError, open_run, run_info
    from ...sweep.queue import QUEUE_NAME, SweepError, SweepQueue
    from ...paths import resolve_run_arg
    runs = []
    for r in map(resolve_run_arg, args.runs):   # a path, or a sample run's (or sweep's) name
        try:   # a sweep folder stands for its finished runs, in grid order
            runs += SweepQueue.load(r).run_paths() if (r / QUEUE_NAME).exists() else [r]
        except SweepError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 2
    infos = []
    for r in runs:
        info = run_info(r)
        try:
            if info.error:
                raise RunFileError(info.path, "")
            with open_run(info.path) as reader:
                reader.verify()  # every record: a damaged run is refused, not drawn empty
        except RunFileError as e:
            print(f"{prog}: {info.error or e}", file=sys.stderr)
            return 2
        infos.append(info)
    tabs = [t.strip() for t in args.tabs.split(",")] if args.tabs else None
    if _needs_offscreen():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    restore = quiet_qt(prog)
    try:
        size = render_report([i.path for i in infos], args.out, width=args.width,
                             dark=args.dark, tabs=tabs, infos=infos)
    except ValueError as e:  # an unknown --tabs title
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        restore()
    for line, cost in zip(run_lines(infos), cost_lines(infos)):
        print(line)   # the header's text, the cost figures with it
        if cost:
            print(f"  {cost}")
    print(f"wrote {args.out} ({size[0]} x {size[1]})")
    return 0


def quiet_qt(prog: str):
    """Send Qt's messages through a filter until the returned function is called: debug
    and info messages and the known offscreen noise (``QT_NOISE``) are dropped, every
    other warning and every error goes to stderr as one line, prefixed with ``prog``."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    def handler(kind, _context, message) -> None:
        if kind in (QtMsgType.QtDebugMsg, QtMsgType.QtInfoMsg):
            return
        if kind == QtMsgType.QtWarningMsg and any(n in message for n in QT_NOISE):
            return
        print(f"{prog}: Qt: {message}", file=sys.stderr)

    previous = qInstallMessageHandler(handler)
    return lambda: qInstallMessageHandler(previous)


def hide_controls(widget) -> None:
    """Hide what only a person at the screen can use: every row of ``widget``'s top
    layout that holds an input (a slider, combo box, button, spin box or text box) and
    no figure, every "click a cell" token panel, and the buttons on each figure."""
    from PySide6.QtWidgets import (QAbstractButton, QAbstractSlider, QAbstractSpinBox,
                                   QComboBox, QLineEdit, QPlainTextEdit)

    from ..widgets.figure import FigureWidget
    from ..widgets.plots import CurvePlot
    from ..widgets.routed_text import TokenListPanel

    inputs = (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit,
              QPlainTextEdit)

    def widgets_of(layout) -> list:
        out = []
        for i in range(layout.count()):
            item = layout.itemAt(i)
            if item.widget() is not None:
                out.append(item.widget())
            elif item.layout() is not None:
                out += widgets_of(item.layout())
        return out

    def is_control_row(ws: list) -> bool:
        return (any(isinstance(w, inputs) for w in ws) and not any(
            isinstance(w, (CurvePlot, FigureWidget)) or w.findChildren(CurvePlot)
            or w.findChildren(FigureWidget) for w in ws))

    top = widget.layout()
    for i in range(top.count() if top is not None else 0):
        item = top.itemAt(i)
        if item.layout() is not None:
            row = widgets_of(item.layout())
        elif item.widget() is not None and item.widget().layout() is not None:
            row = [item.widget()] if is_control_row(widgets_of(item.widget().layout())) \
                else []
            if row:
                row[0].hide()
            continue
        else:
            continue
        if is_control_row(row):
            for w in row:
                w.hide()
    for panel in widget.findChildren(TokenListPanel):
        panel.hide()
    # Each figure's own buttons (the "⋯" export menu, the legend key) float over it.
    from PySide6.QtWidgets import QToolButton
    for b in widget.findChildren(QToolButton):
        if isinstance(b.parent(), (CurvePlot, FigureWidget)):
            b.hide()


def _app():
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "moe-studio"])
        app.setApplicationName("MoE Studio")
    return app


def _settle(app, rounds: int = 4) -> None:
    from PySide6.QtCore import QEvent
    for _ in range(rounds):
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        app.processEvents()


def run_lines(infos) -> list[str]:
    """The header's line per run: name, status, steps, losses, setup."""
    from ..panels.runs_model import setup_summary
    lines = []
    for info in infos:
        parts = [f"{info.name or info.run_id}", str(info.status or "unknown")]
        if info.last_step is not None:
            parts.append(f"step {info.last_step:,}" +
                         (f" / {int(info.total_steps):,}" if info.total_steps else ""))
        if info.train_loss is not None:
            parts.append(f"train loss {info.train_loss:.4f}")
        if info.val_loss is not None:
            parts.append(f"val loss {info.val_loss:.4f}")
        setup = setup_summary(info)
        if setup:
            parts.append(setup)
        parts.append(info.run_id)
        lines.append("  ·  ".join(parts))
    return lines


def cost_lines(infos) -> list[str]:
    """The header's cost line per run (``store.cost``: FLOPs per token, training FLOPs,
    achieved FLOP/s, memory of one step, as recorded); "" for a run without them."""
    from ...store import RunFileError, open_run
    from ...store.cost import cost_text, run_costs
    out = []
    for info in infos:
        try:
            with open_run(info.path) as r:
                out.append(cost_text(run_costs(r)))
        except (RunFileError, OSError):
            out.append("")
    return out


def render_dashboards(paths: list[Path], width: int, tabs: list[str] | None = None
                      ) -> list[tuple[str, Any, str | None]]:
    """``(title, QPixmap or None, message)`` per dashboard in ``DASHBOARDS`` order: the
    message says why there is no picture ("could not render: ..." after an exception, or
    "nothing to show: ..." for a dashboard whose ``report_empty_reason()`` gives a reason,
    e.g. Precision for a run without precision records; one asked for with ``tabs`` is
    always drawn)."""
    from PySide6.QtCore import Qt
    from ..main_window import DASHBOARDS, _load_class

    known = [t for t, _ in DASHBOARDS]
    if tabs:
        unknown = [t for t in tabs if t not in known]
        if unknown:
            raise ValueError(f"unknown dashboard {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(known)})")
    app = _app()
    out = []
    for title, spec in DASHBOARDS:
        if tabs and title not in tabs:
            continue
        widget = None
        try:
            cls = _load_class(spec)
            if len(paths) < getattr(cls, "report_min_runs", 1) and not tabs:
                continue    # e.g. Compare: nothing to compare in one run
            widget = cls()
            widget.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
            report_mode = getattr(widget, "set_report_mode", None)
            if callable(report_mode):
                report_mode(True)
            hide_controls(widget)
            aspect = float(getattr(widget, "report_aspect", DEFAULT_ASPECT) or DEFAULT_ASPECT)
            widget.resize(width, max(200, int(width * aspect)))
            widget.show()       # polish and lay out (never on a screen)
            _settle(app)
            widget.set_runs(list(paths))
            hide_controls(widget)       # again: reading runs may show some (a member combo)
            _settle(app)
            if hasattr(widget, "stop_follow"):
                widget.stop_follow()
            empty = getattr(widget, "report_empty_reason", None)
            reason = empty() if callable(empty) and not tabs else ""
            if reason:
                out.append((title, None, f"nothing to show: {reason}"))
            else:
                out.append((title, widget.grab(), None))
        except Exception as exc:  # noqa: BLE001 - one dashboard never sinks the report
            out.append((title, None, f"could not render: {type(exc).__name__}: {exc}"))
        finally:
            if widget is not None:
                widget.close()
                widget.deleteLater()
                _settle(app, 2)
    return out


def render_report(paths: list[Path], out: str | Path, *, width: int = DEFAULT_WIDTH,
                  dark: bool = False, tabs: list[str] | None = None,
                  infos: list | None = None) -> tuple[int, int]:
    """Render the report of ``paths`` into the PNG ``out``; returns its (width, height).
    ``infos``: their ``store.run_info`` when the caller has read them already.
    OSError if the file cannot be written; ValueError for an unknown ``tabs`` title."""
    from PySide6.QtWidgets import QApplication

    from .. import theme

    restore = theme.is_dark() if QApplication.instance() is not None else None
    app = _app()
    theme.apply_palette(app, bool(dark))
    try:
        return _render(app, [Path(p) for p in paths], Path(out), width, bool(dark), tabs,
                       infos)
    finally:
        if restore is not None and restore != bool(dark):
            theme.apply_palette(app, restore)   # a running app keeps its own palette


def _render(app, paths: list[Path], out: Path, width: int, dark: bool,
            tabs: list[str] | None, infos: list | None = None) -> tuple[int, int]:
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter

    from ... import __version__
    from ...store import run_info
    from .. import theme

    if infos is None:
        infos = [run_info(p) for p in paths]
    sections = render_dashboards(paths, width - 2 * _PAD, tabs)

    pal = app.palette()
    bg, fg = pal.window().color(), pal.windowText().color()
    dim = QColor(fg)
    dim.setAlpha(150)
    base = QFont(app.font())
    title_font = QFont(base)
    title_font.setPointSizeF(base.pointSizeF() * 1.5 if base.pointSizeF() > 0 else 15)
    title_font.setBold(True)
    head_font = QFont(base)
    head_font.setBold(True)
    head_font.setPointSizeF(base.pointSizeF() * 1.15 if base.pointSizeF() > 0 else 11)
    fm_title, fm_base, fm_head = (QFontMetrics(f) for f in (title_font, base, head_font))

    title = ("MoE Studio report: " + infos[0].name if len(infos) == 1 and infos[0].name
             else f"MoE Studio report: {len(infos)} runs overlaid" if len(infos) > 1
             else "MoE Studio report")
    lines = run_lines(infos)
    costs = cost_lines(infos)
    line_h = fm_base.height() + 4
    header_h = _PAD + fm_title.height() + 8 + line_h * (len(lines) + sum(map(bool, costs))) + _PAD
    heights = [fm_head.height() + 8 + (pm.height() / pm.devicePixelRatio() if pm is not None
                                        else line_h) + _PAD
               for _, pm, _ in sections]
    footer_h = line_h + _PAD
    height = int(header_h + sum(heights) + footer_h)

    img = QImage(width, height, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(bg)
    p = QPainter(img)
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        y = _PAD
        p.setFont(title_font)
        p.setPen(fg)
        p.drawText(QRect(_PAD, y, width - 2 * _PAD, fm_title.height()),
                   Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
        y += fm_title.height() + 8
        p.setFont(base)
        dot_w = fm_base.height()
        for i, (info, text) in enumerate(zip(infos, lines)):
            x = _PAD
            if len(infos) > 1:   # the run's colour in the overlaid plots
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(theme.series_color(i, bool(dark))))
                r = dot_w * 0.6
                p.drawEllipse(int(x), int(y + (line_h - r) / 2), int(r), int(r))
                x += dot_w
            c = theme.status_color(str(info.status or ""), bool(dark))
            p.setPen(c if c is not None and info.status in ("failed", "interrupted") else fg)
            p.drawText(QRect(int(x), y, width - int(x) - _PAD, line_h),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       fm_base.elidedText(text, Qt.TextElideMode.ElideRight,
                                          width - int(x) - _PAD))
            y += line_h
            if costs[i]:
                p.setPen(dim)
                p.drawText(QRect(int(x), y, width - int(x) - _PAD, line_h),
                           Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                           fm_base.elidedText(costs[i], Qt.TextElideMode.ElideRight,
                                              width - int(x) - _PAD))
                y += line_h
        y += _PAD
        for (name, pm, err), h in zip(sections, heights):
            p.setFont(head_font)
            p.setPen(fg)
            p.drawText(QRect(_PAD, y, width - 2 * _PAD, fm_head.height()),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, name)
            y0 = y + fm_head.height() + 8
            if pm is not None:
                p.drawPixmap(_PAD, int(y0), pm)
            else:
                p.setFont(base)
                p.setPen(dim)
                p.drawText(QRect(_PAD, int(y0), width - 2 * _PAD, line_h),
                           Qt.AlignmentFlag.AlignLeft, err)
            y += int(h)
        p.setFont(base)
        p.setPen(dim)
        stamp = time.strftime("%Y-%m-%d %H:%M")
        p.drawText(QRect(_PAD, y, width - 2 * _PAD, line_h),
                   Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                   f"moe-studio {__version__} · {stamp}")
    finally:
        p.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not img.save(str(out), "PNG"):
        raise OSError(f"Qt could not write {out}")
    return width, height
