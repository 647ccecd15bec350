"""Route custom text through a run's weights in a short-lived engine process.

The window's process never imports torch (see ``worker``): building a model and routing
happen in ``python -m moe_studio.engine.probe_child``, and only the routed arrays come
back, through a temporary ``.npz`` read without pickles. :class:`ChildRoute` is called in
a background thread and can be cancelled from any thread (the child is killed).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .worker import child_command

_ARRAYS = ("tokens", "domains", "topk_idx", "topk_weight", "probs", "token_start", "model_token")


class RouteCancelled(Exception):
    """The routing process was cancelled (the view is closing)."""


class ChildRoute:
    """``route(run_dir, text, checkpoint, member) -> (arrays, meta)`` in a child process;
    ``cancel()`` kills a child in flight. One call at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._cancelled = False

    def route(self, run_dir: str | Path, text: str, checkpoint: str | Path | None = None,
              member: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """ValueError with the engine's one-line message when it cannot route."""
        tmp = Path(tempfile.mkdtemp(prefix="moe-studio-route-"))
        try:
            out = tmp / "routed.npz"
            job = {"run": str(run_dir), "text": text, "member": int(member), "out": str(out),
                   "checkpoint": None if checkpoint is None else str(checkpoint)}
            cmd, env = child_command("moe_studio.engine.probe_child")
            with self._lock:
                if self._cancelled:
                    raise RouteCancelled()
                self._proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True, encoding="utf-8")
            proc = self._proc
            stdout, stderr = proc.communicate(json.dumps(job) + "\n")
            with self._lock:
                self._proc = None
                if self._cancelled:
                    raise RouteCancelled()
            answer = _last_json_line(stdout)
            if answer is None:
                tail = (stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
                raise ValueError(f"the routing process failed: {tail[0]}")
            if "error" in answer:
                raise ValueError(str(answer["error"]))
            with np.load(out, allow_pickle=False) as z:
                arrays = {k: z[k] for k in _ARRAYS if k in z.files}
            return arrays, dict(answer["meta"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def cancel(self) -> None:
        """Kill the child in flight, if any; the running ``route`` raises RouteCancelled."""
        with self._lock:
            self._cancelled = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()


def _last_json_line(text: str) -> dict | None:
    for line in reversed((text or "").splitlines()):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            return v
    return None
