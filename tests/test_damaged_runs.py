"""A corpus of damaged run files, made here from a real run: every reader either reads
it or says, in one line naming the file, that it is damaged; the commands exit non-zero;
and no reader changes, creates or removes a byte beside the run."""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest

from moe_studio.store import RunFileError, RunWriter, list_runs, open_run, run_info
from moe_studio.store import runs as runs_mod
from moe_studio.store.cli import cmd_export, cmd_runs

DB = "run.sqlite"


def _make_run(root: Path) -> Path:
    w = RunWriter.create(root, name="pristine", config={"train": {"steps": 30}},
                         config_toml="[train]\nsteps = 30\n", meta={"device": "cpu"})
    rng = np.random.default_rng(0)
    for step in range(30):
        w.add_scalars(step, {"train/loss": 3.0 - step * 0.05, "lr": 1e-3}, member=0)
        if step % 5 == 0:
            w.add_tensor(step, "load", rng.random((4, 8)).astype(np.float32))
            w.add_tensor(step, "big", np.arange(2000, dtype=np.float32))  # compressed
            w.add_histogram(step, "gate", np.linspace(0, 1, 9), rng.integers(0, 9, 8))
            w.add_snapshot(step, "routing/probe", {"gates": rng.random((6, 4)).astype(np.float32),
                                                   "top": rng.integers(0, 4, 6)}, {"text": "abcdef"})
            w.add_event(step, "eval", f"val/loss {2.5 - step * 0.01:.4f}", {"val/loss": 2.5})
            w.flush()  # one scalar block per flush: damage can hit one of several
    w.close("finished")
    return Path(w.run_dir)


def _sql(*statements):
    def damage(run: Path) -> None:
        con = sqlite3.connect(run / DB)
        con.execute("PRAGMA writable_schema = 0")
        for st in statements:
            con.execute(st)
        con.commit()
        con.close()
    return damage


def _bytes_at(fraction: float, n: int, seed: int = 1):
    # From the start of a page: its header and cell pointers. (Random bytes inside a
    # raw float payload decode as other floats; nothing short of a checksum per record
    # could tell, and the store keeps none.)
    def damage(run: Path) -> None:
        p = run / DB
        data = bytearray(p.read_bytes())
        at = max(100, int(len(data) * fraction) // 16384 * 16384)
        data[at:at + n] = random.Random(seed).randbytes(n)
        p.write_bytes(bytes(data))
    return damage


def _truncate(fraction: float):
    def damage(run: Path) -> None:
        p = run / DB
        data = p.read_bytes()
        p.write_bytes(data[:int(len(data) * fraction)])
    return damage


def _header(offset: int, value: bytes):
    def damage(run: Path) -> None:
        p = run / DB
        data = bytearray(p.read_bytes())
        data[offset:offset + len(value)] = value
        p.write_bytes(bytes(data))
    return damage


def _replace_file(content: bytes | None):
    def damage(run: Path) -> None:
        p = run / DB
        p.unlink()
        if content is None:
            p.mkdir()
        else:
            p.write_bytes(content)
    return damage


def _leftover_wal(garbage: bool):
    def damage(run: Path) -> None:
        # A writer killed with records still in its WAL (left behind by copying the
        # files while a connection holds the run open), or a WAL of garbage.
        if garbage:
            (run / (DB + "-wal")).write_bytes(random.Random(3).randbytes(5000))
            return
        con = sqlite3.connect(run / DB)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA wal_autocheckpoint = 0")
        con.execute("INSERT INTO events (step, member, kind, message, data, wall_time) "
                    "VALUES (99, -1, 'note', 'only in the WAL', NULL, 0)")
        con.commit()
        shutil.copyfile(run / (DB + "-wal"), run / "keep-wal")
        shutil.copyfile(run / (DB + "-shm"), run / "keep-shm")
        con.close()  # checkpoints and deletes the WAL; put the pre-close copies back
        os.replace(run / "keep-wal", run / (DB + "-wal"))
        os.replace(run / "keep-shm", run / (DB + "-shm"))
    return damage


Z = zlib.compress(b"x" * 100)
DAMAGE = {
    # rows deleted / tables dropped
    "names rows deleted": _sql("DELETE FROM names"),
    "one name row deleted": _sql("DELETE FROM names WHERE name = 'load'"),
    "run row deleted": _sql("DELETE FROM run"),
    "scalar_blocks dropped": _sql("DROP TABLE scalar_blocks"),
    "latest dropped": _sql("DROP TABLE latest"),
    "tensors dropped": _sql("DROP TABLE tensors"),
    "histograms dropped": _sql("DROP TABLE histograms"),
    "snapshots dropped": _sql("DROP TABLE snapshots"),
    "events dropped": _sql("DROP TABLE events"),
    "meta dropped": _sql("DROP TABLE meta"),
    "names dropped": _sql("DROP TABLE names"),
    # garbage in records
    "garbage JSON in meta": _sql("UPDATE meta SET value = '{not json' WHERE key = 'device'"),
    "garbage JSON in config": _sql("UPDATE run SET config_json = '[1, 2' WHERE id = 1"),
    "config JSON not an object": _sql("UPDATE run SET config_json = '[1, 2]' WHERE id = 1"),
    "garbage status": _sql("UPDATE run SET status = 'exploded' WHERE id = 1"),
    "heartbeat as text": _sql("UPDATE run SET heartbeat = 'soon', status = 'running' WHERE id = 1"),
    "pid as text": _sql("UPDATE run SET pid = 'me', status = 'running' WHERE id = 1"),
    "garbage tensor dtype": _sql("UPDATE tensors SET dtype = '<zz9'"),
    "tensor dtype object": _sql("UPDATE tensors SET dtype = '|O'"),
    "tensor shape too large": _sql("UPDATE tensors SET shape = '999,999'"),
    "tensor shape text": _sql("UPDATE tensors SET shape = 'a,b'"),
    "tensor payload tag": _sql("UPDATE tensors SET data = X'51000102'"),
    "tensor zlib garbage": _sql("UPDATE tensors SET data = X'5A00010203040506'"),
    "tensor payload short": _sql("UPDATE tensors SET data = X'52000102'"),
    "histogram counts dtype": _sql("UPDATE histograms SET counts_dtype = 'nonsense'"),
    "histogram edges garbage": _sql("UPDATE histograms SET edges = X'5200'"),
    "snapshot layout garbage": _sql("UPDATE snapshots SET layout = '[[\"gates\", 3'"),
    "snapshot layout wrong size": _sql("UPDATE snapshots SET layout = "
                                       "'[[\"gates\", \"<f4\", [600, 4], 9600]]'"),
    "snapshot meta garbage": _sql("UPDATE snapshots SET meta = '{{'"),
    "event data garbage": _sql("UPDATE events SET data = 'nope'"),
    "scalar series blob short": _sql("UPDATE scalar_blocks SET series = X'0100'"),
    "scalar steps blob short": _sql("UPDATE scalar_blocks SET steps = X'0000000000000000' "
                                    "WHERE id = 2"),
    "scalar block names a missing id": _sql("UPDATE scalar_blocks SET series = "
                                            "X'63000000000000000100000063000000000000000100000063"
                                            "000000000000000100000063000000000000000100000063000000"
                                            "0000000001000000' WHERE id = 1"),
    "latest value text": _sql("UPDATE latest SET value = 'many'"),
    "latest names a missing id": _sql("UPDATE latest SET name_id = name_id + 900"),
    # damaged file
    "random bytes mid-file": _bytes_at(0.5, 4096),
    "random bytes near the end": _bytes_at(0.9, 2048, seed=2),
    "random bytes after the header": _bytes_at(0.0, 900, seed=4),
    "truncated to half": _truncate(0.5),
    "truncated to 100 bytes": _truncate(0.0001),
    "empty file": _replace_file(b""),
    "zero-filled file": _replace_file(bytes(65536)),
    "not SQLite": _replace_file(b"hello, this is not a database\n" * 100),
    "run.sqlite is a folder": _replace_file(None),
    "application id changed": _header(68, b"\x00\x00\x00\x01"),
    "newer schema version": _header(60, b"\x00\x00\x00\x09"),
    "page size garbage": _header(16, b"\x00\x03"),
}
# Damage that leaves a run readable with every committed record: must read correctly.
READABLE = {"left-over WAL of a killed writer": _leftover_wal(False),
            "garbage left-over WAL": _leftover_wal(True)}  # no valid frame: the file has all


def _digest(run: Path) -> dict[str, str]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(run.iterdir())}


def _read_everything(path: Path) -> dict:
    """Every public read of a RunReader; returns some of what it read."""
    with open_run(path) as r:
        _ = (r.status, r.ended, r.error, r.heartbeat, r.meta)   # each property reads
        r.refresh()
        scal = r.scalars()
        r.latest(), r.last_step(), r.scalar_names()
        for n in r.tensor_names():
            r.tensor(n), r.tensor(n, step=7), r.tensor_steps(n), r.tensor_series(n)
        for n in r.histogram_names():
            r.histogram(n), r.histogram_series(n)
        for n in r.snapshot_names():
            r.snapshot(n), r.snapshot_steps(n)
        ev = r.events()
        r.follower().poll()
        r.verify()
        return {"scalars": len(scal), "events": ev["message"].tolist()}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("pristine"))


def _damaged(pristine: Path, tmp_path: Path, damage) -> Path:
    root = tmp_path / "runs"
    root.mkdir(parents=True)
    run = root / pristine.name
    shutil.copytree(pristine, run)
    (run / "writer.lock").unlink(missing_ok=True)
    damage(run)
    return run


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_run_gives_one_line_error_everywhere_and_stays_byte_identical(
        kind, pristine, tmp_path, capsys, monkeypatch):
    run = _damaged(pristine, tmp_path, DAMAGE[kind])
    before = _digest(run)

    with pytest.raises(RunFileError) as e:
        _read_everything(run)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(run))

    info = run_info(run)
    assert info.status == "unreadable" and str(run) in info.error, info
    monkeypatch.setattr(runs_mod, "FULL_VERIFY_MAX_BYTES", 0)  # the large-run check
    monkeypatch.setattr(runs_mod, "_verified", {})
    light = run_info(run)  # reads the run or names its damage: never raises
    assert light.error is None or str(run) in light.error
    monkeypatch.undo()
    assert [i.status for i in list_runs(run.parent)] == ["unreadable"]
    capsys.readouterr()
    assert cmd_runs(argparse.Namespace(dir=run.parent, json=False)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moe-studio runs: ") and str(run) in err[0]

    out = tmp_path / "export"
    assert cmd_export(argparse.Namespace(run=run, format="csv", out=out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moe-studio export: ") and str(run) in err[0]

    from moe_studio.gui.commands.report import cmd_report
    png = tmp_path / "r.png"
    assert cmd_report(argparse.Namespace(runs=[str(run)], out=png, width=800, dark=False,
                                         tabs=None)) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run) in err[0] and not png.exists()

    assert _digest(run) == before  # no reader wrote, created or removed a side file


@pytest.mark.parametrize("kind", list(READABLE))
def test_a_left_over_wal_is_read_whole_without_touching_its_files(kind, pristine, tmp_path):
    run = _damaged(pristine, tmp_path, READABLE[kind])
    before = _digest(run)
    assert "run.sqlite-wal" in before
    got = _read_everything(run)
    assert got["scalars"] == 60
    assert ("only in the WAL" in got["events"]) == (kind != "garbage left-over WAL")
    assert run_info(run).error is None
    assert _digest(run) == before


def test_pristine_run_reads_and_corpus_covers_many_kinds(pristine, tmp_path):
    run = _damaged(pristine, tmp_path, lambda run: None)
    before = _digest(run)
    got = _read_everything(run)
    assert got["scalars"] == 60 and len(got["events"]) == 6
    assert len(DAMAGE) >= 40
    assert _digest(run) == before


def test_the_runs_panel_shows_every_kind_of_damage_as_unreadable(pristine, tmp_path, qtbot):
    """One runs folder holding a copy of the run with each kind of damage: the app's runs
    panel lists every one as unreadable, its tooltip the one line naming the file."""
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import Qt

    from moe_studio.gui.panels.runs import COL_STATUS, RunsPanel

    root = tmp_path / "runs"
    root.mkdir()
    runs = {}
    for i, (kind, damage) in enumerate(DAMAGE.items()):
        run = root / f"damaged-{i:02d}"
        shutil.copytree(pristine, run)
        (run / "writer.lock").unlink(missing_ok=True)
        damage(run)
        runs[kind] = run
    before = {kind: _digest(run) for kind, run in runs.items()}
    panel = RunsPanel([root], auto_rescan=False)
    qtbot.addWidget(panel)
    try:
        for kind, run in runs.items():
            idx = panel._proxy_index(str(run))
            assert idx.isValid(), kind
            assert idx.siblingAtColumn(COL_STATUS).data() == "unreadable", kind
            tip = idx.data(Qt.ItemDataRole.ToolTipRole)
            assert tip.startswith(str(run)) and "\n" not in tip, (kind, tip)
    finally:
        panel.shutdown()
    assert {kind: _digest(run) for kind, run in runs.items()} == before


def test_random_bytes_anywhere_read_or_fail_in_one_line(pristine, tmp_path):
    """60 runs each hit by 1-4 bursts of random bytes at random places (a fixed seed
    each): reading them gives a RunFileError or a read, nothing else, and changes no
    file. (Bursts inside raw float payloads read as other numbers: no checksum.)"""
    outcomes = {"read": 0, "error": 0}
    for seed in range(60):
        rnd = random.Random(seed)

        def burst(run: Path, rnd: random.Random = rnd) -> None:
            p = run / DB
            data = bytearray(p.read_bytes())
            for _ in range(rnd.randint(1, 4)):
                at = rnd.randrange(0, len(data))
                n = rnd.choice([1, 4, 16, 200, 3000])
                data[at:at + n] = rnd.randbytes(min(n, len(data) - at))
            p.write_bytes(bytes(data))
        run = _damaged(pristine, tmp_path / str(seed), burst)
        before = _digest(run)
        try:
            _read_everything(run)
            outcomes["read"] += 1
        except RunFileError as e:
            assert "\n" not in str(e) and str(run) in str(e)
            outcomes["error"] += 1
        info = run_info(run)
        assert info.error is None or str(run) in info.error
        assert _digest(run) == before
    assert outcomes["error"] >= 15, outcomes  # 23 of 60 hit structure or framing, and are named


@pytest.mark.parametrize("half", [0, 1])  # two tests of ~9 s rather than one of 18
def test_every_dashboard_opens_every_kind_of_damage_without_an_escaping_error(half, tmp_path,
                                                                              qtbot):
    """The app's seven views read a sample run (so every view has data of its kind to
    read) with each kind of damage, and with the names every view reads deleted: each
    view shows what it can or says the run is damaged, no exception leaves a view
    (pytest-qt fails the test on one), and no file changes. Damage that open_run already
    refuses is named in the views' status line."""
    pytest.importorskip("pytestqt")
    from moe_studio.gui.main_window import DASHBOARDS, _load_class
    from moe_studio.paths import sample_runs_dir

    src = sample_runs_dir() / "moe-top2"
    kinds = {**DAMAGE, "names every view reads deleted": _sql(
        "DELETE FROM names WHERE name LIKE 'routing/%' OR name LIKE 'gate%'")}
    views = []
    for _title, spec in DASHBOARDS:
        view = _load_class(spec)()
        qtbot.addWidget(view)
        view.resize(900, 600)
        view.show()
        views.append(view)
    try:
        for i, (kind, damage) in list(enumerate(kinds.items()))[half::2]:
            run = tmp_path / f"damaged-{i:02d}"
            shutil.copytree(src, run, ignore=shutil.ignore_patterns("*.safetensors"))
            damage(run)
            before = _digest(run)
            try:
                open_run(run).close()
                refused = False
            except RunFileError:
                refused = True
            for view in views:
                view.set_runs([str(run)])
                if refused:
                    assert run.name in view.status_text(), (kind, type(view).__name__)
            qtbot.wait(10)
            assert _digest(run) == before, kind
    finally:
        for view in views:
            if hasattr(view, "stop_follow"):
                view.stop_follow()
            view.close()
