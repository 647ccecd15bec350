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
