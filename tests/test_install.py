"""A wheel install has the sample runs, and the commands find them by name from any folder.

Built and installed offline: the wheel from a copy of the source tree (so the checkout
gets no build folder), into a fresh venv whose other packages come from the test's own
environment through a path file (no download; the checkout's editable install is not
seen there, so only the wheel can answer)."""
from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from moe_studio.paths import sample_names
from moe_studio.store import run_info

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("moe_studio", "sample_runs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run = dict(capture_output=True, text=True, timeout=300)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                          "--no-build-isolation", "--no-index", "-w", str(tmp / "dist")], **run)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("moe_studio-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, **run)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, **run).stdout.strip())
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                          "--ignore-installed", "--no-index", str(wheel)], **run)
    assert res.returncode == 0, res.stderr[-3000:]
    # after the install: pip would otherwise take the checkout's editable install for it
    here = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "test-deps.pth").write_text("\n".join(sorted(here)) + "\n")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return venv, elsewhere


def _env(cwd: Path) -> dict[str, str]:
    # nothing of the checkout: no PYTHONPATH, no runs folder variable
    return {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "QT_QPA_PLATFORM": "offscreen"}


def _cli(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "moe-studio"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=_env(cwd))


def test_wheel_install_ships_the_samples_and_opens_one_by_name(installed):
    venv, elsewhere = installed
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import moe_studio, moe_studio.paths as p; print(moe_studio.__file__); "
                            "print(p.sample_runs_dir())"], cwd=elsewhere, capture_output=True,
                           text=True, check=True, env=_env(elsewhere)).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].startswith(str(venv))
    samples = Path(where[1])
    assert sorted(p.name for p in samples.iterdir() if (p / "run.sqlite").exists()) == sample_names()
    before = _tree(samples)

    res = _cli(venv, elsewhere, "runs", "moe-top2", "--json")
    assert res.returncode == 0, res.stderr
    (row,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert row["name"] == "moe-top2" and row["status"] == "finished" and row["path"].startswith(str(venv))
    res = _cli(venv, elsewhere, "runs", "samples")
    # every sample is listed (by run id: the name column elides long sweep names)
    ids = [run_info(samples / n).run_id for n in sample_names()]
    assert res.returncode == 0 and all(i in res.stdout for i in ids), res.stdout
    res = _cli(venv, elsewhere, "export", "dense-baseline", "--out", str(elsewhere / "csv"))
    assert res.returncode == 0, res.stderr
    assert (elsewhere / "csv" / "scalars.csv").stat().st_size > 1000
    assert "exporting as csv" in res.stderr and str(elsewhere / "csv" / "scalars.csv") in res.stdout
    res = _cli(venv, elsewhere, "export", "no-such-sample", "--out", str(elsewhere / "x"))
    assert res.returncode == 1 and "no-such-sample" in res.stderr and res.stderr.count("\n") == 1
    assert _tree(samples) == before       # reading the installed samples changed nothing
    assert sorted(p.name for p in elsewhere.iterdir()) == ["csv"]
