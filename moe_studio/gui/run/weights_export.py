"""The Export dialog's safetensors format: a run's weights, written by an engine process.

Reading a checkpoint needs torch, which never loads into the window's process, so the
export runs ``moe-studio export RUN --format safetensors --out FOLDER`` as a child (the
same command a terminal runs) and waits for it in the export task's thread.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ...engine.resume import newest_checkpoint
from .worker import child_command

WEIGHTS_FILE = "weights.safetensors"   # what sample runs ship (engine.weights)
PREFIX = "moe-studio export: "


def has_weights(run_dir: str | Path) -> bool:
    """The run kept weights to export: a checkpoint, or a ``weights.safetensors``."""
    run_dir = Path(run_dir)
    return newest_checkpoint(run_dir) is not None or (run_dir / WEIGHTS_FILE).is_file()


def export_weights_in_child(run_dir: str | Path, out: str | Path, timeout_s: float = 600.0) -> list[Path]:
    """Write ``run_dir``'s newest weights and config into ``out`` through an engine
    process; the files written. RuntimeError with the command's one-line reason when it
    fails."""
    cmd, env = child_command("moe_studio")
    res = subprocess.run(cmd + ["export", str(run_dir), "--format", "safetensors", "--out", str(out)],
                         env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout_s)
    if res.returncode != 0:
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        reason = lines[-1] if lines else f"the export process ended with code {res.returncode}"
        raise RuntimeError(reason[len(PREFIX):] if reason.startswith(PREFIX) else reason)
    return [Path(x) for x in res.stdout.splitlines() if x.strip()]
