"""Where runs live, and where a command may write. One answer for the CLI and the app,
so a headless run shows up in the app's runs panel without configuration.

Output locations (``train --out``, ``$MOE_STUDIO_RUNS``, ``report --out``,
``export --out``) are checked here before any work starts; a refusal is a
:class:`~moe_studio.config.ConfigError` whose one line says what is wrong with which
path.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from .config.inputs import expand_path, kind_of, os_problem
from .config.validate import ConfigError

RUN_DB_NAME = "run.sqlite"  # the store's DB_NAME, repeated so this module stays stdlib only
SWEEP_QUEUE_NAME = "sweep.json"  # sweep.queue's QUEUE_NAME, likewise


def default_runs_dir() -> Path:
    """``$MOE_STUDIO_RUNS`` if set, else ``./runs`` in the current directory.
    ConfigError when the variable names a home folder that does not exist."""
    env = os.environ.get("MOE_STUDIO_RUNS")
    return expand_path(env, "MOE_STUDIO_RUNS") if env else Path.cwd() / "runs"


def sample_runs_dir() -> Path:
    """The recorded runs that ship with the app: ``moe_studio/sample_runs`` in an
    installed package (setup.py maps them there), the top-level ``sample_runs/`` of a
    checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "sample_runs"
    return installed if installed.is_dir() else here.parent / "sample_runs"


def resolve_run_arg(text: str | os.PathLike) -> Path:
    """The run a command line names: a path to a run folder (or its run.sqlite), else
    the name of a sample run (``moe-top2``) or of the sample sweep (``sweep-topk-aux``,
    for the commands that take a sweep folder). A name that is neither comes back as
    the path it spells, so the reader's "run folder not found" names it."""
    p = Path(text)
    if p.exists() or os.sep in str(text) or (os.altsep and os.altsep in str(text)):
        return p
    sample = sample_runs_dir() / str(text)
    return sample if (sample / RUN_DB_NAME).is_file() or (sample / SWEEP_QUEUE_NAME).is_file() else p


def sample_names() -> list[str]:
    """Names of the sample runs that ship with the app, sorted."""
    d = sample_runs_dir()
    try:
        return sorted(p.name for p in d.iterdir() if (p / RUN_DB_NAME).is_file())
    except OSError:
        return []


def check_output_dir(path: str | os.PathLike, what: str, *, outside_runs: bool = False,
                     _target: Path | None = None) -> Path:
    """Refuse a folder that cannot be written into (or created), before any work starts.

    Checks the folder if it exists, else the nearest existing folder above it, by
    creating and removing a nameless temporary file there: a read-only file system,
    ``/proc``, a missing permission or a full disk answer that as they would later.
    Creates nothing that stays. ``outside_runs``: also refuse a folder inside a run
    folder (exports and reports never write into a run). Returns the expanded path.
    """
    p = expand_path(path, what)
    shown = _target or p  # check_output_file checks the folder of the file it names
    if outside_runs:
        for a in [p, *p.parents]:
            if _is_file(a / RUN_DB_NAME):
                raise ConfigError(what, f"{what} {shown}: is inside the run folder {a}; "
                                        "choose a folder outside it (a run folder holds only "
                                        "what its run wrote)")
    probe = p
    while True:
        try:
            st = os.stat(probe)
            break
        except FileNotFoundError:
            if probe.parent == probe:
                raise ConfigError(what, f"{what} {shown}: no existing folder above it") from None
            probe = probe.parent
        except NotADirectoryError:
            probe = probe.parent  # a file somewhere above: found and named below
        except OSError as e:
            raise ConfigError(what, f"{what} {shown}: cannot be checked ({os_problem(e)})") from None
    if not stat.S_ISDIR(st.st_mode):
        if probe == shown:
            raise ConfigError(what, f"{what} {shown}: is {kind_of(st.st_mode)}, not a folder")
        raise ConfigError(what, f"{what} {shown}: cannot be created, {probe} is "
                                f"{kind_of(st.st_mode)}, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".moe-studio-probe-"):
            pass
    except OSError as e:
        where = "" if probe == p else f" (checked {probe}, the nearest existing folder)"
        problem = os_problem(e)
        if e.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
            # an existing folder that answers "no such file": /proc, /sys and the like
            problem = "files cannot be created in that kind of folder (a virtual file system?)"
        raise ConfigError(what, f"{what} {shown}: cannot write there: {problem}{where}") from None
    return p


def _is_file(p: Path) -> bool:
    try:  # Path.is_file raises for a name too long, which is no run folder either
        return stat.S_ISREG(os.stat(p).st_mode)
    except (OSError, ValueError):
        return False


def check_output_file(path: str | os.PathLike, what: str, *, outside_runs: bool = False) -> Path:
    """Refuse a file that cannot be written: an existing folder, device or pipe at
    ``path``, or a folder above it that cannot be written into (see check_output_dir)."""
    p = expand_path(path, what)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # the folder check below names the file in the way
    except OSError as e:
        raise ConfigError(what, f"{what} {p}: cannot be checked ({os_problem(e)})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ConfigError(what, f"{what} {p}: is {kind_of(st.st_mode)}, not a file to write")
    check_output_dir(p.parent, what, outside_runs=outside_runs, _target=p)
    return p
