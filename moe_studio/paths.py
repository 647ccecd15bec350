"""Where runs live. One answer for the CLI and the app, so a headless run shows up in
the app's runs panel without configuration."""
from __future__ import annotations

import os
from pathlib import Path


def default_runs_dir() -> Path:
    """``$MOE_STUDIO_RUNS`` if set, else ``./runs`` in the current directory."""
    env = os.environ.get("MOE_STUDIO_RUNS")
    return Path(env).expanduser() if env else Path.cwd() / "runs"


def sample_runs_dir() -> Path:
    """The recorded runs that ship with the app (top-level ``sample_runs/``)."""
    return Path(__file__).resolve().parent.parent / "sample_runs"
