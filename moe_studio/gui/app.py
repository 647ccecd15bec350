"""The desktop app's entry point: ``moe-studio-gui [PATH]``.

PATH may be a run folder (or its ``run.sqlite``), shown in the dashboards, or an
experiment config (``.toml``), loaded into the setup panel. Without it the app opens
with the default experiment, ready to train on the embedded corpus.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication

from .. import __version__
from ..config import ConfigError
from . import app_log, theme

APP_NAME = "MoE Studio"
ORG_NAME = "moe-studio"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="moe-studio-gui", description="MoE Studio desktop app")
    p.add_argument("path", nargs="?", help="a run folder to show, or a .toml config to load")
    p.add_argument("--runs-dir", help="where new runs are saved (default: $MOE_STUDIO_RUNS "
                                      "or ./runs)")
    p.add_argument("--dark", action="store_true", default=None, help="start with the dark palette")
    p.add_argument("--light", dest="dark", action="store_false", help="start with the light palette")
    p.add_argument("--engine", choices=("process", "thread"), default=None,
                   help="where training runs: a child process (default) or a thread of the "
                        "app (also $MOE_STUDIO_ENGINE)")
    p.set_defaults(dark=None)  # neither: the remembered palette, else the system's
    args, _qt_args = p.parse_known_args(argv)  # Qt's own options (-platform, ...) pass through
    return args


def _system_prefers_dark(app: QApplication) -> bool:
    hints = app.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    return bool(scheme is not None and scheme() == Qt.ColorScheme.Dark)


def create_app(argv: list[str] | None = None):
    """Build (or reuse) the QApplication and the main window; returns ``(app, window)``.
    ``main`` adds only the event loop, so tests can drive this part."""
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])  # first: --help needs no display
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName("moe-studio")

    settings = QSettings()
    dark = args.dark
    if dark is None:
        stored = settings.value("view/dark")
        dark = (str(stored).lower() in ("1", "true")) if stored is not None \
            else _system_prefers_dark(app)
    theme.apply_palette(app, bool(dark))
    settings.setValue("view/dark", bool(dark))

    from .main_window import MainWindow  # after the palette, so every widget starts themed
    window = MainWindow(settings=settings, runs_dir=args.runs_dir, engine_mode=args.engine)
    if args.path:
        _open_path(window, Path(args.path).expanduser())
    # Belt and braces: whatever ends the event loop, never leave a training thread behind.
    app.aboutToQuit.connect(lambda: window.controller.shutdown(30_000))
    if window.environment_problem:  # the window says it too, above Train
        print(f"moe-studio-gui: {window.environment_problem}", file=sys.stderr)
    return app, window


def _open_path(window, path: Path) -> None:
    if path.suffix.lower() == ".toml":
        try:
            notes = window.setup_panel.load_toml(path)
        except ConfigError as e:
            window._warn("Could not load config", str(e))
            return
        if notes:
            window._warn("Config adjusted", "Some values did not fit their range:\n\n" +
                         "\n".join(notes))
    else:
        window.open_run_path(path)


def show_uncaught(message: str, details: str) -> None:
    """The dialog for an exception nothing caught (see ``app_log.install_excepthook``)."""
    from .main_window import show_error
    app = QApplication.instance()
    if app is None:
        return
    path = app_log.log_path()
    box = show_error(app.activeWindow(), "Unexpected error",
                     f"Something went wrong inside MoE Studio:\n{message}", details,
                     informative=(f"The details were written to {path}." if path else None),
                     object_name="uncaughtErrorBox")
    # Without a window to own it, the box lives as long as a Python reference does.
    _open_boxes.add(box)
    box.finished.connect(lambda *_: _open_boxes.discard(box))


_open_boxes: set = set()


def main(argv: list[str] | None = None) -> int:
    """Run the desktop app; returns the process exit code."""
    path = app_log.setup_logging()
    from .startup_checks import display_problem
    problem = display_problem()
    if problem:   # before Qt, whose own message on this does not say what to install
        print(f"moe-studio-gui: {problem}", file=sys.stderr)
        app_log.log.warning(problem)
    restore = app_log.install_excepthook(show_uncaught)
    app_log.log.info("MoE Studio %s starting (log %s)", __version__, path)
    try:
        try:
            app, window = create_app(argv)
        except SystemExit as e:  # argparse: --help or a bad option
            return int(e.code or 0)
        code = run_event_loop(app, window)
        app_log.log.info("MoE Studio closed (exit code %d)", code)
        return code
    finally:
        restore()


def run_event_loop(app, window) -> int:
    """Show ``window`` and run the event loop with SIGTERM / SIGINT answered as a stop
    (see ``app_signals``); returns the exit code, 128 + n after a signal."""
    from .app_signals import SignalStop
    from .gc_guard import MainThreadCollector
    window.show()
    stop = SignalStop(window) if threading.current_thread() is threading.main_thread() else None
    collector = MainThreadCollector(parent=app)   # garbage collected in this thread only
    collector.start()
    try:
        rc = int(app.exec())
    finally:
        collector.stop()
        if stop is not None:
            stop.uninstall()
    return stop.exit_code if stop is not None and stop.exit_code is not None else rc


if __name__ == "__main__":
    raise SystemExit(main())
