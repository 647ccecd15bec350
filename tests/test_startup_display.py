"""Before Qt starts on X11, the app names the system libraries Qt's window plugin is
missing and the command that installs them; Qt's own abort names only xcb-cursor."""
import shutil
import subprocess

import pytest

from moe_studio.gui import startup_checks
from moe_studio.gui.startup_checks import debian_package, display_problem, missing_libraries

MISSING = ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]


def test_missing_libraries_are_named_with_the_install_command():
    msg = display_problem("linux", {"DISPLAY": ":0"}, missing=MISSING)
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in msg
    assert msg.endswith("sudo apt-get install libxcb-icccm4 libxcb-keysyms1)")
    assert display_problem("linux", {"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, missing=MISSING) == msg


def test_no_line_where_no_x11_window_is_opened_or_nothing_is_missing():
    for platform, env in [("linux", {"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}),
                          ("linux", {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}),
                          ("linux", {}), ("darwin", {"DISPLAY": ":0"})]:
        assert display_problem(platform, env, missing=MISSING) == ""
    assert display_problem("linux", {"DISPLAY": ":0"}, missing=[]) == ""


@pytest.mark.parametrize("soname, package", [
    ("libxcb-icccm.so.4", "libxcb-icccm4"), ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"), ("libxcb-render-util.so.0.0.0", "libxcb-render-util0")])
def test_debian_package_names(soname, package):
    assert debian_package(soname) == package


@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd")
def test_missing_libraries_agree_with_ldd_on_the_real_plugin():
    plugin = startup_checks.xcb_plugin()
    if plugin is None:
        pytest.skip("this PySide6 has no xcb plugin")
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout
    expected = sorted({ln.split()[0] for ln in out.splitlines() if ln.strip().endswith("not found")})
    assert missing_libraries(plugin) == expected
    assert missing_libraries(plugin.parent / "no-such-plugin.so") == []
