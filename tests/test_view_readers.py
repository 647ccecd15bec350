"""The views' store readers (``*_data`` modules) work without Qt: importing one loads no
Qt, pyqtgraph or torch module, so they are tested and used without a QApplication."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.parametrize("module", ["compare_data", "ensemble_data"])   # precision_data: its own test
def test_a_view_reader_imports_no_qt(module):
    code = (f"import sys, moe_studio.gui.views.{module} as m; "
            "bad = sorted(k for k in sys.modules if k.startswith(('PySide6', 'pyqtgraph', 'torch'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_skipped_steps_sit_at_the_scale_that_failed():
    """A skipped step is marked at the scale in force when it failed: the last scale
    recorded before it; at or before the first record, twice the first (that record
    already holds the halved scale)."""
    from moe_studio.gui.views.precision_data import PrecisionData

    d = PrecisionData()
    d.scale = (np.array([0, 10, 20, 30]), np.array([64.0, 32.0, 32.0, 16.0]))
    d.skipped = np.array([0, 10, 25, 30])
    x, y = d.skipped_marks()
    assert x.tolist() == [0.0, 10.0, 25.0, 30.0] and y.tolist() == [128.0, 64.0, 32.0, 32.0]
