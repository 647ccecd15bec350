"""The layering rule of DESIGN.md: engine, store, data, config and metrics never import
Qt, so the engine runs headless (and a GUI-less server never needs PySide6)."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import moe_studio

QT_FREE = ("config", "data", "engine", "store", "metrics")


def _modules() -> list[str]:
    root = Path(moe_studio.__file__).parent
    out = []
    for pkg in QT_FREE:
        out.append(f"moe_studio.{pkg}")
        out += [f"moe_studio.{pkg}.{m.name}" for m in pkgutil.iter_modules([str(root / pkg)])]
    return out


def test_headless_packages_import_no_qt():
    mods = _modules()
    assert "moe_studio.engine.trainer" in mods and "moe_studio.store.compare" in mods
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'pyqtgraph', 'shiboken6'})\n"
            "assert not bad, bad\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
