"""Long CLI work says how far it is on stderr; stdout stays the result (JSON parses)."""
from __future__ import annotations

import json

import pytest

from moe_studio.bench._common import Progress


def test_progress_lines_are_throttled_and_estimate_the_rest(capsys, monkeypatch):
    now = {"t": 100.0}
    p = Progress("gui", 1000, every_s=10.0)
    p._clock = lambda: now["t"]
    p._t0 = 100.0
    p._last = -float("inf")
    now["t"] = 130.0
    assert p.step(100)                 # the first report: 30 s of it may be start-up
    now["t"] = 135.0
    assert not p.step(150)             # within 10 s of the last line: quiet
    now["t"] = 160.0
    assert p.step(500, force=False)    # 400 steps in the 30 s since: 37.5 s for 500 more
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == "bench gui: step 100/1000 (10 %) · 0:30 elapsed · ETA --:--"
    assert lines[1] == "bench gui: step 500/1000 (50 %) · 1:00 elapsed · ETA 0:38"
    assert len(lines) == 2


def test_bench_json_stays_clean_on_stdout(capsys):
    from moe_studio.cli import main
    assert main(["bench", "store", "--quick", "--json"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)                   # stdout: the JSON and nothing else
    assert "load_s" in res
    assert "moe-studio bench store: running" in captured.err
    assert "moe-studio bench store: done in" in captured.err


@pytest.mark.slow
def test_sample_regeneration_reports_on_stderr(tmp_path, capsys):
    from moe_studio import samples
    assert samples.main(["--only", "dense-baseline", "--scale", "0.002", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(tmp_path / "dense-baseline")]
    assert "generating dense-baseline (1/1)" in captured.err
    assert "dense-baseline: step 3/3" in captured.err and "done in" in captured.err


@pytest.mark.slow
def test_gui_bench_reports_steps_on_stderr_and_only_json_on_stdout(tmp_path):
    """The gui bench (30 minutes at full size) says how far it is; here a quick run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "moe_studio", "bench", "gui", "--quick", "--steps", "6",
                          "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)                     # stdout: the JSON and nothing else
    assert out["status"] == "finished" and out["steps_done"] == 6
    lines = res.stderr.splitlines()
    assert lines[0].startswith("moe-studio bench gui: running")
    assert "bench gui: step 6/6 (100 %)" in res.stderr and lines[-1].startswith("moe-studio bench gui: done in")
