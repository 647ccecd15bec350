"""Refusals before any work: memory a config cannot have, output locations that cannot
be written, checkpoints that must not be loaded; and a step that calls sys.exit."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe_studio.cli import main
from moe_studio.config import ConfigError, dumps
from moe_studio.engine.memory import check_fits, estimate, machine_memory
from moe_studio.engine.params import count_params
from moe_studio.engine.safe_load import load_weights_only
from moe_studio.store import RunWriter

from tiny import tiny_config

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- memory
def test_memory_estimate_terms_match_a_count_made_here():
    cfg = tiny_config(ensemble__members=3)
    est = estimate(cfg)
    # parameters: float32 weights + gradients + two AdamW moments, each member
    assert est.terms["parameters and optimizer state"] == 3 * 16 * count_params(cfg).total
    # evaluation windows: int64 inputs and targets, eval_batches x batch x context each
    assert est.terms["evaluation batches"] == 2 * 8 * 2 * 4 * 16
    model = __import__("moe_studio.engine.model", fromlist=["MoEGPT"]).MoEGPT(
        cfg.model, cfg.moe, context=cfg.data.context)
    built = sum(p.numel() for p in model.parameters())
    assert est.terms["parameters and optimizer state"] == 3 * 16 * built


@pytest.mark.parametrize("over,term", [
    (dict(model__d_model=8192, model__n_layers=64, model__d_ff=65536, model__n_heads=64),
     "parameters and optimizer state"),
    (dict(data__batch_size=4096, data__context=4096, train__eval_batches=10000), "evaluation batches"),
])
def test_configs_that_cannot_fit_are_refused_naming_the_largest_term(over, term):
    cfg = tiny_config(**over)
    with pytest.raises(ConfigError) as e:
        check_fits(cfg)
    msg = str(e.value)
    assert term in msg and "this machine has" in msg and "\n" not in msg
    check_fits(tiny_config())  # the tiny experiment fits anywhere
    with pytest.raises(ConfigError, match="has 1.0 KB"):
        check_fits(tiny_config(), available=1000)
    assert machine_memory() and machine_memory() > 10 ** 8


def test_train_refuses_memory_before_creating_a_run(tmp_path, capsys):
    rc = main(["train", "--set", "data.batch_size=4096", "--set", "data.context=4096",
               "--set", "train.eval_batches=10000", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "evaluation batches" in err[0]
    assert not (tmp_path / "runs").exists()


def test_memory_and_sweep_refuse_what_cannot_fit_before_building_or_queueing(tmp_path, capsys):
    big = ["--set", "data.context=4096", "--set", "train.eval_batches=10000"]
    rc = main(["memory", "--set", "data.batch_size=4096", *big, "--modes", "fp32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "evaluation batches" in err[0], err
    rc = main(["sweep", "--grid", "data.batch_size=2,4096", *big, "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "grid point data.batch_size=4096 cannot run here" in err[0] and "this machine has" in err[0]
    assert not (tmp_path / "runs").exists()  # nothing queued, not even the runs that fit


# ---------------------------------------------------------------------- output paths
def _one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def test_train_out_locations_are_checked_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    f = tmp_path / "a-file"
    f.write_text("x")
    cases = [(str(f), "is a file, not a folder"),
             (str(f / "below"), f"cannot be created, {f} is a file"),
             ("/proc/moe-studio-runs", "cannot write there"),
             ("~nosuchuser/runs", "no home folder")]
    for out, message in cases:
        assert main(["train", "--out", out]) == 2
        line = _one_line(capsys)
        assert message in line and "Traceback" not in line, line
    monkeypatch.setenv("MOE_STUDIO_RUNS", str(f))
    assert main(["train"]) == 2
    assert "MOE_STUDIO_RUNS" in _one_line(capsys)
    monkeypatch.setenv("MOE_STUDIO_RUNS", "~nosuchuser/r")
    assert main(["runs"]) == 1
    assert "MOE_STUDIO_RUNS" in _one_line(capsys)


def test_a_refusal_after_a_steps_note_is_still_one_line(tmp_path, capsys):
    # --steps 5 shortens the default warm-up (a note); the note waits until nothing is refused
    f = tmp_path / "a-file"
    f.write_text("x")
    assert main(["train", "--steps", "5", "--out", str(f)]) == 2
    assert "is a file, not a folder" in _one_line(capsys)
    assert main(["sweep", "--steps", "5", "--grid", "moe.top_k=1,2", "--out", str(f)]) == 2
    assert "is a file, not a folder" in _one_line(capsys)


@pytest.fixture
def small_run(tmp_path) -> Path:
    w = RunWriter.create(tmp_path / "runs", name="small", config={}, config_toml="")
    w.add_scalars(0, {"train/loss": 1.0})
    w.close("finished")
    return Path(w.run_dir)


def test_export_and_report_outputs_are_checked_with_true_messages(small_run, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    for argv, message in [
            (["export", str(small_run), "--out", "/dev/full"], "/dev/full: is a device, not a folder"),
            (["export", str(small_run), "--out", str(f)], "is a file, not a folder"),
            (["export", str(small_run), "--out", str(small_run / "csv")], "inside the run folder"),
            (["report", str(small_run), "--out", str(f / "r.png")], f"{f} is a file, not a folder"),
            (["report", str(small_run), "--out", str(small_run / "r.png")], "inside the run folder"),
            (["report", str(small_run), "--out", "/proc/r.png"], "cannot write there")]:
        rc = main(argv)
        line = _one_line(capsys)
        assert rc != 0 and message in line and "File exists" not in line, (argv, line)
    assert sorted(p.name for p in small_run.iterdir()) == ["config.toml", "run.sqlite", "writer.lock"]


# ---------------------------------------------------------------------- checkpoints, exits
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_checkpoint_is_refused_in_one_short_line(tmp_path):
    p = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"models": [_Evil()]}, buf)
    p.write_bytes(buf.getvalue())
    with pytest.raises(ValueError) as e:
        load_weights_only(p)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 200 and "could run code" in msg, msg
    (tmp_path / "cut.pt").write_bytes(buf.getvalue()[:40])
    with pytest.raises(ValueError, match="cut.pt: not loaded: truncated"):
        load_weights_only(tmp_path / "cut.pt")


EXITING_STEP = """
import sys
from moe_studio.cli import main
from moe_studio.engine import trainer
real = trainer.Trainer.step
def step(self):
    if self.step_count == 2:
        sys.exit(3)
    return real(self)
trainer.Trainer.step = step
raise SystemExit(main(sys.argv[1:]))
"""


def test_sys_exit_inside_a_step_is_a_failed_run_with_a_sentence(tmp_path):
    cfg = tiny_config(train__steps=6)
    (tmp_path / "c.toml").write_text(dumps(cfg))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", EXITING_STEP, "train", str(tmp_path / "c.toml"),
                          "--out", str(tmp_path / "runs"), "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "failed in step 3: the step called sys.exit(3)" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    from moe_studio.store import list_runs
    (info,) = list_runs(tmp_path / "runs")
    assert info.status == "failed" and "SystemExit" in info.run_error and info.last_step == 2


def test_a_corpus_too_large_for_memory_is_refused_by_its_size(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: 2 GB of size, no disk used
        f.truncate(2 * 10 ** 9)
    cfg = tiny_config(data__corpus=str(big))
    est = estimate(cfg, 2 * 10 ** 9)
    assert est.terms["corpus"] == 3 * 2 * 10 ** 9  # bytes read + tokens + domain labels
    with pytest.raises(ConfigError, match="largest part is corpus"):
        check_fits(cfg, available=4 * 10 ** 9)
    bag = tiny_config(data__corpus=str(big), ensemble__members=4, ensemble__method="bagging")
    assert estimate(bag, 10).terms["corpus"] == 10 * (3 + 4 * 8)  # + int64 starts per member
    check_fits(tiny_config(), available=10 ** 9)  # the embedded corpus is not counted here
