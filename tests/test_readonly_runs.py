"""Reading a run never creates or changes a file beside it, and a read-only run opens in
every view. As root, permission bits stop nothing, so the first check is the bytes: every
file's content, mode and the list of files are the same after every view has read the
run. The second reads, exports and reports the run in a process that the permission bits
do bind ('nobody', or root without its permission-override capabilities)."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from moe_studio.paths import sample_runs_dir  # noqa: E402
from moe_studio.store import list_runs, open_run, run_info  # noqa: E402
from moe_studio.store.export import export_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def tree(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` -> (mode, size, sha256 of the content for a file)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        out[str(p.relative_to(folder))] = (stat.S_IMODE(st.st_mode), st.st_size, digest)
    return out


def set_writable(folder: Path, on: bool) -> None:
    for p in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        p.chmod(mode | stat.S_IWUSR if on else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _interrupted_run(runs: Path) -> Path:
    """A run whose writer was killed: its records partly in a -wal file beside it."""
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from moe_studio.store import RunWriter
        w = RunWriter.create({str(runs)!r}, name="killed", config={{"ensemble": {{"members": 1}}}},
                             config_toml="")
        for s in range(20):
            w.add_scalars(s, {{"train/loss": 3.0 - 0.1 * s}})
        w.flush()
        print(w.run_dir)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    run = Path(out.stdout.strip())
    assert (run / "run.sqlite-wal").exists()
    return run


@pytest.fixture
def readonly_runs(tmp_path):
    ro = tmp_path / "ro"
    for name in ("switch-top1", "dense-baseline"):
        shutil.copytree(sample_runs_dir() / name, ro / name)
    killed = _interrupted_run(ro)
    set_writable(ro, False)
    try:
        yield ro, [ro / "switch-top1", ro / "dense-baseline", killed]
    finally:
        set_writable(ro, True)


@pytest.mark.slow
def test_every_view_opens_a_read_only_run_and_changes_no_byte(readonly_runs, make_dashboard, qtbot, tmp_path):
    from moe_studio.gui.main_window import DASHBOARDS, _load_class
    from moe_studio.gui.panels.runs import RunsPanel

    ro, runs = readonly_runs
    before = tree(ro)
    assert {i.status for i in list_runs(ro)} == {"finished", "interrupted"}
    for run in runs:
        with open_run(run) as r:
            r.verify()
            assert len(r.scalars())
        assert run_info(run).error is None
    panel = RunsPanel([ro], auto_rescan=False)
    qtbot.addWidget(panel)
    assert len(panel.runs()) == 3 and not any(i.error for i in panel.runs())
    for title, spec in DASHBOARDS:
        cls = _load_class(spec)
        shown = runs[:2] if title == "Compare" else runs[:1]
        for run in ([runs[2]] if title == "Training" else []) + [shown]:
            d = make_dashboard(cls, runs=run if isinstance(run, list) else [run])
            d.refresh()
            qtbot.wait(50)
            d.stop_follow()
            d.close()
    for fmt in ("csv", "tensorboard"):
        export_run(runs[0], fmt, tmp_path / f"out-{fmt}")
        export_run(runs[2], fmt, tmp_path / f"out-killed-{fmt}")
    assert tree(ro) == before


@pytest.mark.slow
def test_an_unprivileged_user_reads_a_read_only_run(tmp_path):
    """As a user who cannot write there: the reader, `moe-studio runs`, `export` and
    `report` (every dashboard, offscreen) work, and the run is byte for byte as it was."""
    base = Path(tempfile.mkdtemp(prefix="moe-ro-"))
    try:
        base.chmod(0o755)
        ro = base / "runs"
        shutil.copytree(sample_runs_dir() / "dense-baseline", ro / "dense-baseline")
        killed = _interrupted_run(ro)
        out = base / "out"
        out.mkdir()
        out.chmod(0o777)
        set_writable(ro, False)
        before = tree(ro)
        code = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from moe_studio.cli import main
            from moe_studio.store import open_run
            for run in ({str(ro / 'dense-baseline')!r}, {str(killed)!r}):
                with open_run(run) as r:
                    r.verify()
                    assert len(r.scalars())
            assert main(["runs", {str(ro)!r}, "--json"]) == 0
            assert main(["export", {str(killed)!r}, "--out", {str(out / 'csv')!r}]) == 0
            assert main(["report", {str(ro / 'dense-baseline')!r}, {str(killed)!r},
                         "--out", {str(out / 'report.png')!r}]) == 0
        """)
        cmd = [sys.executable, "-c", code]
        env = {**os.environ, "HOME": str(out), "TMPDIR": str(out), "QT_QPA_PLATFORM": "offscreen"}
        if os.geteuid() == 0:
            cmd = _unprivileged(cmd)
            if cmd is None:
                pytest.skip("neither 'nobody' nor a root without permission overrides can run "
                            "this Python here; the other test compares bytes instead")
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert (out / "report.png").stat().st_size > 10_000
        assert tree(ro) == before
        # and the permission bits did hold for that process: a write there is refused
        res = subprocess.run([*cmd[:-2], "-c", f"open({str(ro / 'x')!r}, 'w')"], capture_output=True,
                             text=True, env=env)
        assert res.returncode != 0 and "Permission denied" in res.stderr
    finally:
        set_writable(base, True)
        shutil.rmtree(base, ignore_errors=True)


def _unprivileged(cmd: list[str]) -> list[str] | None:
    """``cmd`` run so that permission bits bind it: as 'nobody' where that user can run
    this Python, else as root without the capabilities that let root ignore them
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER). None if neither works."""
    tries = []
    if shutil.which("runuser"):
        tries.append(["runuser", "-u", "nobody", "--"])
    if shutil.which("setpriv"):
        tries.append(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"])
    for prefix in tries:
        probe = subprocess.run([*prefix, sys.executable, "-c", "import numpy, pandas"], capture_output=True)
        if probe.returncode == 0:
            return [*prefix, *cmd]
    return None
