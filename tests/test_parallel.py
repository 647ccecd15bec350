"""torch.distributed on CPU (gloo): each check runs under ``torchrun --nproc_per_node 2``
as a real two-process job and compares with one process doing the whole batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def torchrun(script: str, *args: str, nproc: int = 2, timeout: float = 240) -> str:
    """Run ``tests/dist/<script>`` on ``nproc`` local ranks; its output (fails the test
    with it when any rank fails)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(HERE.parent)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--standalone", str(HERE / "dist" / script), *args]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        pytest.fail(f"{script} failed (exit {p.returncode}):\n{out[-4000:]}")
    return out


def test_expert_parallel_equals_one_process():
    out = torchrun("ep_check.py")
    assert "ep ok rank 0" in out and "ep ok rank 1" in out
