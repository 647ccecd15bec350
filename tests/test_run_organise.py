"""Organising runs: rename, tags, note, delete, filter; stored in the run, from the CLI."""
from __future__ import annotations

import argparse
import json
import shutil
import sys

import pytest

from moe_studio.store import (RunFileError, RunWriter, TrashUnavailable, delete_run, edit_run,
                              list_runs, matches, open_run, run_info)
from moe_studio.store.cli import add_parsers, cmd_runs

MOE = {"moe": {"router": "topk", "top_k": 2, "n_experts": 4}, "precision": {"mode": "bf16"},
       "model": {"moe_layers": "all"}, "ensemble": {"members": 1}}
DENSE = {"moe": {"router": "topk", "top_k": 2, "n_experts": 4}, "precision": {"mode": "fp32"},
         "model": {"moe_layers": "none"}, "ensemble": {"members": 1}}


def _make(runs, name, config=MOE, close=True):
    w = RunWriter.create(runs, name=name, config=config, config_toml="")
    w.add_scalars(1, {"train/loss": 2.0})
    if close:
        w.close()
    return w


def _cli(*argv):
    ap = argparse.ArgumentParser()
    add_parsers(ap.add_subparsers(dest="command"))
    return cmd_runs(ap.parse_args(["runs", *map(str, argv)]))


def test_name_tags_and_note_are_stored_in_the_run_and_travel_with_it(tmp_path):
    w = _make(tmp_path / "runs", "first")
    edit_run(w.run_dir, name="  lr sweep   base ", add_tags=["baseline", "lr", "baseline"])
    edit_run(w.run_dir, add_tags=["keep"], remove_tags=["lr"], note="lr too high\nsecond line")
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(w.run_dir, moved)
    with open_run(moved) as r:
        assert r.name == "lr sweep base"
        assert r.tags == ("baseline", "keep")
        assert r.note == "lr too high\nsecond line"
    assert sorted(p.name for p in w.run_dir.iterdir()) == ["config.toml", "run.sqlite", "writer.lock"]
    edit_run(moved, note="")
    assert run_info(moved).note is None and run_info(w.run_dir).note.startswith("lr too high")


@pytest.mark.parametrize("bad, phrase", [({"add_tags": ["two words"]}, "no spaces"),
                                         ({"add_tags": [""]}, "cannot be empty"),
                                         ({"name": "   "}, "cannot be empty"),
                                         ({"name": "x" * 300}, "at most 200")])
def test_bad_names_and_tags_are_refused_with_one_line(tmp_path, bad, phrase):
    w = _make(tmp_path / "runs", "r")
    before = w.db_path.read_bytes()
    with pytest.raises(ValueError, match=phrase) as e:
        edit_run(w.run_dir, **bad)
    assert "\n" not in str(e.value)
    assert w.db_path.read_bytes() == before


def test_a_run_being_written_is_neither_changed_nor_deleted(tmp_path, capsys):
    w = _make(tmp_path / "runs", "live", close=False)
    try:
        with pytest.raises(RunFileError, match="open for writing"):
            edit_run(w.run_dir, add_tags=["x"])
        with pytest.raises(RunFileError, match="open for writing"):
            delete_run(w.run_dir, permanent=True)
        assert _cli("delete", w.run_dir, "--yes") == 1
        assert "open for writing" in capsys.readouterr().err
        assert w.run_dir.exists()
    finally:
        w.close()
    edit_run(w.run_dir, add_tags=["x"])
    assert run_info(w.run_dir).tags == ("x",) and run_info(w.run_dir).status == "finished"


def test_delete_moves_to_the_system_trash(tmp_path, monkeypatch):
    s2t = pytest.importorskip("send2trash")
    if sys.platform != "linux" or not s2t.send2trash.__module__.endswith("plat_other"):
        pytest.skip("checks the freedesktop trash as send2trash's own code keeps it")
    import send2trash.plat_other as fd
    # the home trash of a home in tmp_path (send2trash reads XDG_DATA_HOME at import time)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(fd, "XDG_DATA_HOME", str(tmp_path / "data").encode())
    monkeypatch.setattr(fd, "HOMETRASH_B", str(tmp_path / "data" / "Trash").encode())
    w = _make(tmp_path / "runs", "gone")
    assert delete_run(w.run_dir) == "trash"
    assert not w.run_dir.exists()
    trashed = tmp_path / "data" / "Trash" / "files" / w.run_dir.name
    with open_run(trashed) as r:   # whole, and still a run: it can be put back
        assert r.name == "gone"
    assert list_runs(tmp_path / "runs") == []


def test_without_a_trash_delete_asks_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "send2trash", None)  # no trash on this system
    w = _make(tmp_path / "runs", "gone")
    with pytest.raises(TrashUnavailable):
        delete_run(w.run_dir)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    assert _cli("delete", w.run_dir) == 1
    err = capsys.readouterr().err
    assert "--yes" in err and err.count("\n") == 1 and w.run_dir.exists()
    assert _cli("delete", w.run_dir, "--yes") == 0
    assert "deleted" in capsys.readouterr().out and not w.run_dir.exists()


def test_filter_words(tmp_path):
    a = _make(tmp_path / "runs", "alpha")
    b = _make(tmp_path / "runs", "beta", config=DENSE)
    edit_run(a.run_dir, add_tags=["Baseline"], note="router collapsed at step 40")
    with RunWriter.reopen(b.run_dir) as w:     # as `moe-studio sweep` tags its runs
        w.set_meta(sweep={"id": "sweep-20261204-101500-lr", "name": "lr", "index": 0})
    ia, ib = run_info(a.run_dir), run_info(b.run_dir)
    cases = {"tag:baseline": (True, False), "status:finished": (True, True),
             "status:failed": (False, False), "moe.top_k=2": (True, True), "top_k>2": (False, False),
             "precision.mode=bf16": (True, False), "moe_layers=none": (False, True),
             "collapsed": (True, False), "dense": (False, True), "alpha tag:baseline": (True, False),
             "beta tag:baseline": (False, False), "nosuch.key=1": (False, False), "": (True, True),
             "sweep:lr": (False, True), "sweep:sweep-20261204-101500-lr": (False, True),
             "sweep:l": (False, False)}
    for q, want in cases.items():
        assert (matches(ia, q), matches(ib, q)) == want, q


def test_cli_tag_note_rename_and_list(tmp_path, capsys):
    runs = tmp_path / "runs"
    a, b = _make(runs, "same"), _make(runs, "same")
    dense = _make(runs, "plain", config=DENSE)
    assert _cli("tag", a.run_dir, "best", "bf16") == 0
    assert _cli("untag", a.run_dir, "bf16") == 0
    assert _cli("note", a.run_dir, "keeps", "its", "words") == 0
    assert _cli("rename", dense.run_dir, "dense", "reference") == 0
    capsys.readouterr()
    assert _cli(runs, "--json") == 0
    rows = {r["run_id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[a.run_id]["tags"] == ["best"] and rows[a.run_id]["note"] == "keeps its words"
    assert {rows[a.run_id]["label"], rows[b.run_id]["label"]} == {"same #1", "same #2"}
    assert rows[dense.run_id]["name"] == "dense reference"
    assert rows[dense.run_id]["setup"] == "dense · fp32"
    assert _cli(runs) == 0
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if dense.run_id in x)
    assert "topk" not in line and "dense · fp32" in line
    assert "best" in table and "keeps its words" in table
    assert _cli(runs, "--filter", "tag:best") == 0
    out = capsys.readouterr().out
    assert a.run_id in out and b.run_id not in out and dense.run_id not in out
    assert _cli("tag", a.run_dir, "no,commas") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "commas" in err
    assert _cli("rename", a.run_dir) == 2
    assert "usage" in capsys.readouterr().err


def test_the_table_tells_long_names_apart(tmp_path, capsys):
    """Runs of one sweep differ at the end of their names; the table's name column (30
    characters) keeps that end, and runs sharing a name are numbered."""
    runs = tmp_path / "runs"
    names = ["sweep-topk-aux top_k=2 aux_loss_coef=0", "sweep-topk-aux top_k=2 aux_loss_coef=0.01",
             "same", "same"]
    made = [_make(runs, n) for n in names]
    assert _cli(runs) == 0
    lines = capsys.readouterr().out.splitlines()
    lo, hi = lines[0].index("name"), lines[0].index("status")
    cell = {w.run_id: next(x for x in lines if x.split()[0] == w.run_id)[lo:hi].strip() for w in made}
    assert len(set(cell.values())) == 4, cell
    assert all(len(c) <= 30 for c in cell.values())
    assert cell[made[1].run_id].endswith("aux_loss_coef=0.01")
    assert cell[made[0].run_id].startswith("sweep-top")
    assert {cell[made[2].run_id], cell[made[3].run_id]} == {"same #1", "same #2"}


def test_a_reader_open_during_an_edit_sees_it(tmp_path):
    w = _make(tmp_path / "runs", "before")
    with open_run(w.run_dir) as r:
        assert r.tags == () and len(r.scalars()) == 1
        edit_run(w.run_dir, name="after", add_tags=["x"], note="n")
        r.refresh()
        assert r.tags == ("x",) and r.note == "n"
        assert len(r.scalars()) == 1
    assert not (w.run_dir / "run.sqlite-wal").exists() and not (w.run_dir / "run.sqlite-shm").exists()


def test_editing_a_sample_copy_adds_no_file(tmp_path):
    from moe_studio.paths import sample_runs_dir
    run = tmp_path / "dense-baseline"
    shutil.copytree(sample_runs_dir() / "dense-baseline", run)
    edit_run(run, add_tags=["mine"])
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "run.sqlite"]
    assert run_info(run).tags == ("mine",)


def test_an_ended_runs_summary_is_read_again_only_when_its_files_change(tmp_path, monkeypatch):
    """The run list rescans every 2 s: a finished run is read once (it took ~3.6 ms a
    run, a core's worth for hundreds of runs), a live one on every scan, and an edit or a
    resume shows at the next scan."""
    from moe_studio.store import runs as runs_mod
    runs = tmp_path / "runs"
    done = _make(runs, "done")
    live = _make(runs, "live", close=False)
    reads = []
    real = runs_mod._read_info
    monkeypatch.setattr(runs_mod, "_read_info", lambda f, v: reads.append(f.name) or real(f, v))
    first = {i.name: i for i in list_runs(runs)}
    second = {i.name: i for i in list_runs(runs)}
    assert first["done"].status == "finished" and first["live"].status == "running"
    assert reads.count(done.run_dir.name) == 1 and second["done"] is first["done"]
    assert reads.count(live.run_dir.name) == 2
    edit_run(done.run_dir, note="seen at once")
    assert run_info(done.run_dir).note == "seen at once"
    assert reads.count(done.run_dir.name) == 2
    live.add_scalars(2, {"val/loss": 1.5})
    live.close()
    assert {i.name: i.val_loss for i in list_runs(runs)}["live"] == 1.5
    assert {i.name: i.status for i in list_runs(runs)}["live"] == "finished"
    assert reads.count(live.run_dir.name) == 3   # read once when it had ended, kept since
