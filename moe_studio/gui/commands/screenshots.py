"""``moe-studio screenshots [--out DIR] [--size WxH] [--dark]``: the main window as a
new user sees it, one PNG per view, each showing the bundled sample run that view is
made for (the README's "What you see" pictures come from this command).

The window is the app's own (experiment and runs panels docked, settings in a
temporary file, new runs in an empty temporary folder), opened offscreen at 1280 x 800
unless ``--size`` says otherwise. A view's run is opened the way a double-click in the
runs panel opens it; Compare's runs are checked in the runs panel, as a user checks
them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_SIZE = (1280, 800)
DEFAULT_OUT = Path("docs") / "screenshots"
# (view, sample runs it shows): every tab of main_window.DASHBOARDS has one.
SHOTS: list[tuple[str, list[str]]] = [
    ("Training", ["moe-top2"]),
    ("Gates", ["moe-top2"]),
    ("Experts", ["moe-top2"]),
    ("Routing", ["moe-top2"]),
    ("Precision", ["fp16-overflow"]),
    ("Ensemble", ["bagging-4"]),
    ("Compare", ["moe-vs-ensemble-moe", "moe-vs-ensemble-dense"]),
]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``screenshots`` on the ``moe-studio`` command line."""
    p = subparsers.add_parser(
        "screenshots", help="one PNG per view of the app, on the sample runs (offscreen)",
        description="Open the app offscreen and save one PNG of the main window per view, "
                    "each showing the sample run it is made for.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"folder for the PNGs (default {DEFAULT_OUT})")
    p.add_argument("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", metavar="WxH",
                   help="window size in pixels (default %(default)s)")
    p.add_argument("--dark", action="store_true", help="the dark palette")
    p.set_defaults(func=cmd_screenshots)
    return p


def parse_size(text: str) -> tuple[int, int]:
    """"1280x800" -> (1280, 800); ValueError with a one-line reason otherwise."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h)) if sep else None
    except ValueError:
        size = None
    if size is None or not (800 <= size[0] <= 7680 and 600 <= size[1] <= 4320):
        raise ValueError(f"--size must be WIDTHxHEIGHT, at least 800x600 (got {text!r})")
    return size


def cmd_screenshots(args) -> int:
    prog = "moe-studio screenshots"
    try:
        size = parse_size(args.size)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    from .report import _needs_offscreen, quiet_qt
    if _needs_offscreen():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    restore = quiet_qt(prog)
    try:
        files = take_screenshots(args.out, size=size, dark=args.dark)
    except OSError as e:
        print(f"{prog}: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        restore()
    for f in files:
        print(f"wrote {f} ({f.stat().st_size // 1024} KB)")
    return 0


def take_screenshots(out: str | Path, *, size: tuple[int, int] = DEFAULT_SIZE,
                     dark: bool = False) -> list[Path]:
    """Save ``<view>.png`` (lower case) for every entry of ``SHOTS`` into ``out``;
    returns the files. OSError if the folder or a file cannot be written."""
    from PySide6.QtCore import QEvent, QSettings
    from PySide6.QtWidgets import QApplication

    from ...paths import sample_runs_dir
    from .. import theme
    from ..main_window import MainWindow

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "moe-studio"])
    was_dark = theme.is_dark()
    theme.apply_palette(app, bool(dark))

    def settle(rounds: int = 8) -> None:
        for _ in range(rounds):
            app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
            app.processEvents()

    files = []
    with tempfile.TemporaryDirectory(prefix="moe-screenshots-") as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(settings=settings, runs_dir=Path(tmp) / "runs")
        try:
            window.resize(*size)
            window.show()
            window.runs_panel.wait_for_scan()
            settle()
            titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
            for view, runs in SHOTS:
                paths = [sample_runs_dir() / r for r in runs]
                if len(paths) == 1:
                    window.open_run_path(paths[0])
                else:
                    window.runs_panel.clear_checks()
                    for p in paths:
                        window.runs_panel.set_checked(p, True)
                window.tabs.setCurrentIndex(titles.index(view))
                settle()
                window.grab()    # paint once: axes size themselves to their labels when drawn
                settle()
                window.dashboards[titles.index(view)].stop_follow()
                target = out / f"{view.lower()}.png"
                if not window.grab().save(str(target), "PNG", 0):  # 0: smallest file
                    raise OSError(f"Qt could not write {target}")
                files.append(target)
        finally:
            for d in window.dashboards:
                d.stop_follow()
            window.runs_panel.shutdown()
            window.controller.shutdown(10_000)
            window.close()
            window.deleteLater()
            settle(2)
            theme.apply_palette(app, was_dark)
    return files
