"""The word an app leaves for the ranks of a run it started (engine/parallel/app_run.py):
a file named by ``MOE_STUDIO_CONTROL`` holding run, pause or stop, which rank 0 reads
between steps."""
from __future__ import annotations

from pathlib import Path

CONTROL_ENV = "MOE_STUDIO_CONTROL"


def read_control(path: str | None) -> str:
    """'run', 'pause' or 'stop' as the control file says (run when there is none)."""
    if not path:
        return "run"
    try:
        word = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return "run"
    return word if word in ("pause", "stop") else "run"
