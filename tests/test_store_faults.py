"""The writer under I/O faults: transient errors retried without losing a record, a
persistent one stored as the run's failure (or in a side note the readers pick up), a
really full disk, and one writer per live run."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moe_studio.store import RunFileError, RunWriter, open_run, run_info
from moe_studio.store import writer as writer_mod


def make(root: Path, **kw) -> RunWriter:
    return RunWriter.create(root, name="faults", config={"a": 1}, config_toml="a = 1\n", **kw)


class FailingWrites:
    """Makes the writer's inserts fail with ``error`` while ``failing`` is true."""

    def __init__(self, monkeypatch, error: Exception):
        self.failing = True
        self.calls = 0
        self.error = error
        real = writer_mod._write_pending

        def write(con, p):
            self.calls += 1
            if self.failing:
                raise self.error
            real(con, p)
        monkeypatch.setattr(writer_mod, "_write_pending", write)


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_a_transient_error_is_retried_and_no_record_is_lost(tmp_path, monkeypatch):
    w = make(tmp_path, commit_interval=0.02)
    w.add_scalars(0, {"loss": 1.0})
    w.flush()
    faults = FailingWrites(monkeypatch, sqlite3.OperationalError("database or disk is full"))
    for step in range(1, 30):
        w.add_scalars(step, {"loss": 1.0 / (step + 1)})
        w.add_event(step, "note", f"step {step}")
        time.sleep(0.005)
    assert wait_for(lambda: faults.calls >= 3)  # the background thread kept trying
    faults.failing = False
    for step in range(30, 40):
        w.add_scalars(step, {"loss": 0.01})
    w.close("finished")
    with open_run(w.run_dir) as r:
        assert r.status == "finished" and r.error is None
        assert r.scalars()["step"].tolist() == list(range(40))  # in order, none lost
        assert r.events()["message"].tolist() == [f"step {s}" for s in range(1, 30)]


def test_a_persistent_error_fails_the_run_and_stores_why(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "RETRY_WINDOW_S", 0.3)
    w = make(tmp_path, commit_interval=0.02)
    for step in range(5):
        w.add_scalars(step, {"loss": 2.0})
    w.flush()
    faults = FailingWrites(monkeypatch, sqlite3.OperationalError("disk I/O error"))
    w.add_scalars(5, {"loss": 1.0})
    with pytest.raises(RunFileError, match="writing the run failed") as e:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            w.add_scalars(6, {"loss": 1.0})
            time.sleep(0.02)
    assert "\n" not in str(e.value)
    w.close("failed", error="Traceback: the step could not record")
    assert faults.calls > 3
    with open_run(w.run_dir) as r:
        assert r.status == "failed"
        assert "disk I/O error" in r.error and "not stored" in r.error
        assert r.scalars()["step"].tolist() == [0, 1, 2, 3, 4]  # committed records kept
    assert "marked failed" in w.failure


def test_when_even_the_status_cannot_be_stored_a_side_note_is_read(tmp_path, monkeypatch):
    w = make(tmp_path)
    w.add_scalars(0, {"loss": 2.0})
    w.flush()

    def fail(self, write):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(RunWriter, "_transaction", fail)
    w.add_scalars(1, {"loss": 1.0})
    w.close("finished")
    assert "run.sqlite-failed.json" in w.failure
    monkeypatch.undo()
    with open_run(w.run_dir) as r:
        assert r.status == "failed" and "disk is full" in r.error and r.ended is not None
        assert r.scalars()["step"].tolist() == [0]
        f = r.follower()
        assert f.poll().status == "failed"
    assert run_info(w.run_dir).status == "failed"
    w2 = RunWriter.reopen(w.run_dir)  # resuming clears the note of the failed attempt
    assert not (w.run_dir / "run.sqlite-failed.json").exists()
    w2.close("finished")
    with open_run(w.run_dir) as r:
        assert r.status == "finished"


def test_reopen_refuses_a_run_whose_writer_is_alive(tmp_path):
    w = make(tmp_path)
    with pytest.raises(RunFileError, match="open for writing by pid"):
        RunWriter.reopen(w.run_dir)
    w.close("stopped")
    w2 = RunWriter.reopen(w.run_dir)
    w2.close("finished")


CHILD = """
import sys, time
from moe_studio.store import RunWriter
w = RunWriter.create(sys.argv[1], name="child", config={}, config_toml="")
print(w.run_dir, flush=True)
time.sleep(60)
"""


def test_reopen_is_refused_while_another_process_writes_and_allowed_once_it_is_killed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        run_dir = Path(proc.stdout.readline().strip())
        with pytest.raises(RunFileError, match=f"pid {proc.pid}"):
            RunWriter.reopen(run_dir)
    finally:
        proc.kill()
        proc.wait()
    w = RunWriter.reopen(run_dir)  # the kernel dropped the dead writer's lock
    w.close("stopped")
    with open_run(run_dir) as r:
        assert r.status == "stopped"


FULL_DISK = """
import json, sqlite3, sys
from moe_studio.store import RunFileError, RunWriter, open_run
from moe_studio.store import writer as writer_mod
writer_mod.RETRY_WINDOW_S = 0.5
w = RunWriter.create(sys.argv[1], name="faults", config={"a": 1}, config_toml="a = 1\\n",
                     commit_interval=0.05)
step, committed, error = 0, 0, None
try:
    while step < 100_000:
        w.add_scalars(step, {f"s{i}": float(i) for i in range(64)})
        w.add_event(step, "note", "x" * 2000)
        step += 1
        if step % 20 == 0:
            w.flush()
            if not w.failing:
                committed = step
except (RunFileError, sqlite3.Error) as e:
    error = str(e)
w.close("failed", error="the disk filled up")
with open_run(w.run_dir) as r:
    steps = sorted(set(r.scalars()["step"].tolist()))
    print(json.dumps({"error": error, "committed": committed, "steps": steps[:committed],
                      "status": r.status, "run_error": r.error, "failure": w.failure}))
"""


def test_a_really_full_disk_keeps_what_was_committed_and_stores_the_failure(tmp_path):
    """A real 1 MB tmpfs filling up, mounted in a mount namespace of its own (``unshare``:
    as root, or as any user where unprivileged user namespaces are allowed), so nothing
    is left mounted whatever happens."""
    disk = tmp_path / "disk"
    disk.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs in a namespace of its own")
    ns = [unshare, "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    res = subprocess.run(ns + ["sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1" || exit 77; '
                               'shift; exec "$@"', "sh", str(disk), sys.executable, "-c",
                               FULL_DISK, str(disk)],
                         capture_output=True, text=True, env=env, timeout=120)
    if res.returncode == 77 or (res.returncode != 0 and "unshare" in res.stderr):
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()[:200]}")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["error"] is not None and "\n" not in got["error"]
    assert got["steps"] == list(range(got["committed"]))  # every committed step kept
    assert got["status"] == "failed" and got["run_error"], got


def test_a_live_writer_that_names_no_lock_is_still_followed_live(tmp_path):
    # A writer of an earlier version leaves no writer.lock: the run row decides it is live
    w = make(tmp_path)
    w.add_scalars(0, {"loss": 1.0})
    w.flush()
    (w.run_dir / "writer.lock").write_text("")
    with open_run(w.run_dir) as r:
        f = r.follower()
        assert len(f.poll().scalars) == 1
        w.add_scalars(1, {"loss": 0.5})
        w.flush()
        assert f.poll().scalars["step"].tolist() == [1]
    w.close("finished")


def test_a_read_only_run_folder_is_given_up_at_once_and_close_still_returns(tmp_path, monkeypatch):
    w = make(tmp_path, commit_interval=0.02)
    w.add_scalars(0, {"loss": 1.0})
    w.flush()
    faults = FailingWrites(monkeypatch, sqlite3.OperationalError("attempt to write a readonly database"))
    w.add_scalars(1, {"loss": 0.5})
    assert wait_for(lambda: faults.calls >= 1)
    time.sleep(0.2)
    assert faults.calls == 1  # not worth retrying: no second attempt

    def fail(self, write):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    def no_note(path, text):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(RunWriter, "_transaction", fail)
    monkeypatch.setattr(writer_mod, "_write_text_atomic", no_note)
    with pytest.raises(RunFileError, match="readonly"):
        w.add_scalars(2, {"loss": 0.1})
    w.close("finished")  # never raises for an I/O error
    assert "read as interrupted" in w.failure and "\n" not in w.failure
    assert "1 record of steps 1-1 not stored" in w.failure
    with open_run(w.run_dir) as r:
        assert r.scalars()["step"].tolist() == [0]
