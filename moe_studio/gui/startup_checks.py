"""What the app checks about its surroundings before a run can start: the
``MOE_STUDIO_*`` variables and the folder new runs go to. A problem is one line that
names the variable or flag; the window still opens (runs can be viewed) with Train
held back and the line shown, instead of a traceback at start or a run that fails
after Train."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import ConfigError
from ..config.inputs import check_environment
from ..paths import check_output_dir, default_runs_dir


def runs_location(given: str | os.PathLike | None) -> tuple[Path, str]:
    """``(folder for new runs, problem)``; problem is "" when runs can be written there.

    ``given`` (``--runs-dir``) wins over ``$MOE_STUDIO_RUNS``, which wins over ./runs.
    A folder that cannot be resolved is returned as typed (it lists nothing) with the
    problem, so nothing is ever written to a folder the user did not name."""
    if given is not None:
        what, path = "--runs-dir", Path(given)
    else:
        what = "MOE_STUDIO_RUNS" if os.environ.get("MOE_STUDIO_RUNS") else "the runs folder"
        try:
            path = default_runs_dir()
        except ConfigError as e:
            return Path(os.environ["MOE_STUDIO_RUNS"]), e.message
    try:
        check_output_dir(path, what)
    except ConfigError as e:
        return path, e.message
    return path, ""


def environment_problem() -> str:
    """The first ``MOE_STUDIO_*`` variable whose value would be ignored, in one line."""
    try:
        check_environment()
    except ConfigError as e:
        return e.message
    return ""



def xcb_plugin() -> Path | None:
    """Qt's X11 platform plugin inside the installed PySide6 (None when absent)."""
    from PySide6.QtCore import QLibraryInfo
    p = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms" / "libqxcb.so"
    return p if p.is_file() else None


def missing_libraries(library: Path) -> list[str]:
    """The shared libraries ``library`` needs that the dynamic loader cannot find, as
    ``ldd`` lists them ("libxcb-icccm.so.4"); [] when none is missing or ldd cannot say."""
    import subprocess
    try:
        out = subprocess.run(["ldd", str(library)], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.split("=>")[0].strip() for line in out.splitlines()
                   if "not found" in line})


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package of a library by its soname: libxcb-icccm.so.4 ->
    libxcb-icccm4, libxkbcommon-x11.so.0 -> libxkbcommon-x11-0 (Debian's naming rule)."""
    base, _, version = soname.partition(".so.")
    version = version.split(".")[0]
    return base + ("-" if base[-1:].isdigit() else "") + version if version else base


def display_problem(platform: str | None = None, env: dict | None = None,
                    missing: list[str] | None = None) -> str:
    """One line when Qt will not be able to open a window on X11 for want of system
    libraries ("" otherwise). Qt 6.5 and later load the xcb platform plugin only with
    several xcb libraries that minimal Linux installs lack; Qt then aborts with a
    message about xcb-cursor whatever is missing. The app prints this line first, naming
    what is missing and the command that installs it, and still tries. ``missing``: the
    plugin's missing libraries (found with ``missing_libraries`` when not given)."""
    import sys

    platform = sys.platform if platform is None else platform
    env = os.environ if env is None else env
    qpa = env.get("QT_QPA_PLATFORM", "")
    on_x11 = platform.startswith("linux") and env.get("DISPLAY") and (
        qpa.startswith("xcb") or (not qpa and not env.get("WAYLAND_DISPLAY")))
    if not on_x11:
        return ""
    if missing is None:
        plugin = xcb_plugin()
        missing = missing_libraries(plugin) if plugin is not None else []
    if not missing:
        return ""
    return (f"Qt cannot open a window on X11: the system libraries {', '.join(missing)} are "
            f"missing (Debian/Ubuntu: sudo apt-get install "
            f"{' '.join(debian_package(m) for m in missing)})")
