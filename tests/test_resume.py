"""Continuing a run: `moe-studio train --resume`, the attempt it records, and readers
that show the latest attempt's history (no zig-zag) in every query."""
from __future__ import annotations

import numpy as np
import pytest

from moe_studio.cli import main
from moe_studio.config import save
from moe_studio.engine.resume import ResumeError, ResumeRequest, plan_resume, resume_trainer
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run

from tiny import tiny_config


def _cfg(**over):
    # dropout on: the resumed steps must draw the same random numbers as the original
    base = dict(train__steps=16, train__eval_every=4, train__snapshot_every=4,
                train__checkpoint_every=6, model__dropout=0.1)
    base.update(over)
    return tiny_config(**base)


def _train(cfg, runs, stop_after=None, checkpoint=True):
    """Train; ``stop_after``: stop after that many steps (``checkpoint=False``: without
    the final checkpoint, so the newest one is older than the last records)."""
    tr = Trainer(cfg, runs_dir=runs)
    while not tr.done and (stop_after is None or tr.step_count < stop_after):
        tr.step()
    tr.close("stopped" if stop_after is not None else "finished", checkpoint=checkpoint)
    return tr


def _loss(run):
    with open_run(run) as r:
        df = r.scalars(["train/loss"], member=0)
    return df["step"].to_numpy(), df["value"].to_numpy()


def _assert_same_curve(full, resumed, steps=16):
    s_full, v_full = _loss(full.run_dir)
    s_res, v_res = _loss(resumed.run_dir)
    assert s_res.tolist() == s_full.tolist() == list(range(1, steps + 1))
    np.testing.assert_allclose(v_res, v_full, rtol=1e-5, atol=1e-6)


def test_resumed_curve_equals_uninterrupted_after_the_resumed_step(tmp_path):
    full = _train(_cfg(), tmp_path / "a")
    # stopped after 9 steps without a final checkpoint: the newest is step 6, 3 redone
    part = _train(_cfg(), tmp_path / "b", stop_after=9, checkpoint=False)
    plan = plan_resume(part.run_dir)
    assert (plan.from_step, plan.last_step, plan.redo, plan.total_steps) == (6, 9, 3, 16)
    assert "3 steps (7-9) will be redone" in plan.describe()
    tr = resume_trainer(ResumeRequest(str(part.run_dir)))
    assert tr.step_count == 6
    while not tr.done:
        tr.step()
    tr.close("finished")

    # one row per step, steps rising: the replaced steps 7-9 of the first attempt are gone
    _assert_same_curve(full, part)
    with open_run(part.run_dir) as r:
        raw = r.scalars(["train/loss"], member=0, all_attempts=True)
        assert len(raw) == 16 + 3      # nothing deleted: the first attempt's 7-9 kept
        atts = r.attempts()
        assert [(a.from_step, a.redo) for a in atts] == [(6, 3)]
        assert r.status == "finished" and r.last_step() == 16
        ev = r.events(["resume"])
        assert ev["step"].tolist() == [6]
        # training time goes on from the checkpoint's, it does not restart at 0
        el = r.scalars(["elapsed_s"], member=-1).set_index("step")["value"]
        assert el[7] >= el[6]
        # every kind of record is read as one history: val loss, snapshots, histograms
        val = r.scalars(["val/loss"], member=-1)
        steps = r.snapshot_steps("routing/probe")
    with open_run(full.run_dir) as r:
        val_full = r.scalars(["val/loss"], member=-1)
        steps_full = r.snapshot_steps("routing/probe")
    np.testing.assert_allclose(val["value"].to_numpy(), val_full["value"].to_numpy(), rtol=1e-5)
    assert steps.tolist() == steps_full.tolist()


def test_a_follower_from_the_start_sees_one_history(tmp_path):
    part = _train(_cfg(), tmp_path, stop_after=9, checkpoint=False)
    tr = resume_trainer(ResumeRequest(str(part.run_dir)))
    with open_run(part.run_dir) as r:
        f = r.follower()
        first = f.poll().scalars     # before the new attempt wrote anything past step 6
        assert first[first["name"] == "train/loss"]["step"].max() == 6
        tr.step()
        tr.step()
        tr.writer.flush()
        new = f.poll().scalars
        loss = new[(new["name"] == "train/loss") & (new["member"] == 0)]
        assert loss["step"].tolist() == [7, 8]
    tr.close("stopped")


def test_a_follower_that_had_read_past_the_checkpoint_is_started_over(tmp_path):
    """A view open on the stopped run has read steps 1-9; the run is continued from
    step 6. Its follower's next poll hands out the whole history as the reader now
    reads it (steps 7-9 of the first attempt gone), marked restarted; the one after
    that only what is new."""
    part = _train(_cfg(), tmp_path, stop_after=9, checkpoint=False)
    with open_run(part.run_dir) as r:
        f = r.follower()
        first = f.poll()
        assert first.scalars["step"].max() == 9 and not first.restarted
        assert not f.poll().restarted          # nothing new, nothing restarted
        tr = resume_trainer(ResumeRequest(str(part.run_dir)))
        tr.step()
        tr.step()
        tr.writer.flush()
        upd = f.poll()
        assert upd.restarted and upd.last_step == 8
        whole = r.scalars()
        cols = ["name", "member", "step", "value"]
        got = upd.scalars[cols].sort_values(cols[:3], ignore_index=True)
        want = whole[cols].sort_values(cols[:3], ignore_index=True)
        assert len(want[want["name"] == "train/loss"]) == 8   # steps 1-8, once each
        assert got.astype({"name": str}).equals(want.astype({"name": str}))
        assert upd.new_events["kind"].tolist() == r.events()["kind"].tolist()
        tr.step()
        tr.writer.flush()
        nxt = f.poll()
        assert not nxt.restarted
        assert nxt.scalars[nxt.scalars["name"] == "train/loss"]["step"].tolist() == [9]
    tr.close("stopped")


def test_continue_past_the_planned_steps_and_refusals(tmp_path, capsys):
    cfg_path = tmp_path / "c.toml"
    save(_cfg(train__steps=8, train__checkpoint_every=0), cfg_path)
    runs = tmp_path / "runs"
    assert main(["train", str(cfg_path), "--out", str(runs), "--quiet"]) == 0
    (run,) = runs.iterdir()
    capsys.readouterr()
    # finished: nothing left unless more steps are asked for
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already trained all its 8 steps" in err and "--steps 16" in err
    assert main(["train", "--resume", str(run), "--steps", "8"]) == 2
    assert "not more than the checkpoint's step 8" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--preset", "switch_top1"]) == 2
    assert "drop --preset" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--steps", "12", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "from step 8" in err and "to step 12" in err and "training longer" in err
    with open_run(run) as r:
        assert r.status == "finished" and r.last_step() == 12
        assert r.meta["total_steps"] == 12
        s = r.scalars(["train/loss"], member=0)["step"].tolist()
    assert s == list(range(1, 13))
    # the runs panel and `moe-studio runs` say 12 / 12, not 12 / 8 as the config planned
    from moe_studio.store import run_info
    assert run_info(run).total_steps == 12
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_no_checkpoint_is_a_clear_refusal(tmp_path):
    part = _train(_cfg(train__checkpoint_every=0), tmp_path, stop_after=3, checkpoint=False)
    with pytest.raises(ResumeError, match="no checkpoint to continue from"):
        plan_resume(part.run_dir)


def test_step_time_leaves_out_the_first_step_then_averages():
    from moe_studio.engine.trainer import fold_step_time
    dts = [5.0, 0.2, 0.4, 0.3] + [0.3] * 20 + [3.0]
    avg = None
    seen = []
    for n, dt in enumerate(dts, 1):
        avg = fold_step_time(avg, n, dt)
        seen.append(avg)
    assert seen[0] is None                       # after the first step: unknown
    assert seen[1:4] == pytest.approx([0.2, 0.3, 0.3])   # the mean of steps 2.. (not 5 s)
    # later an evaluation's slow step moves it by a tenth of the difference, no more
    assert seen[-1] == pytest.approx(seen[-2] + 0.1 * (3.0 - seen[-2]))
    # a resumed run keeps the checkpoint's estimate through its own first step
    assert fold_step_time(0.25, 1, 9.0) == 0.25


def test_trainer_eta_is_unknown_after_one_step_then_finite(tmp_path):
    tr = Trainer(_cfg(train__steps=4, train__checkpoint_every=0), runs_dir=tmp_path)
    try:
        first = tr.step()
        assert np.isnan(first.eta_s) and first.tokens_per_s > 0
        second = tr.step()
        assert np.isfinite(second.eta_s) and second.eta_s > 0
    finally:
        tr.close("stopped", checkpoint=False)


def test_continued_twice_still_one_history(tmp_path):
    full = _train(_cfg(), tmp_path / "a")
    part = _train(_cfg(), tmp_path / "b", stop_after=9, checkpoint=False)   # newest: 6
    tr = resume_trainer(ResumeRequest(str(part.run_dir)))
    while tr.step_count < 11:
        tr.step()
    tr.close("stopped", checkpoint=False)     # newest still 6: steps 7-11 redone again
    assert plan_resume(part.run_dir).redo == 5
    tr = resume_trainer(ResumeRequest(str(part.run_dir)))
    while not tr.done:
        tr.step()
    tr.close("finished")
    _assert_same_curve(full, part)
    with open_run(part.run_dir) as r:
        assert [(a.from_step, a.redo) for a in r.attempts()] == [(6, 3), (6, 5)]
        assert len(r.scalars(["train/loss"], member=0, all_attempts=True)) == 16 + 3 + 5
        tpe_steps, _ = r.tensor_series("moe/tokens_per_expert")
    with open_run(full.run_dir) as r:
        full_steps, _ = r.tensor_series("moe/tokens_per_expert")
    assert tpe_steps.tolist() == full_steps.tolist()
