"""The app's Train button on several local processes: the engine process starts the
ranks with torch's launcher (``moe-studio train`` under ``torch.distributed.run``) and
stands in for a trainer in :func:`moe_studio.engine.loop.train_loop`, so the app sees
the run as it sees any other: progress read from the run's store, which rank 0 writes.

Pause, resume and stop reach every rank through a control file the ranks' launcher
environment names (``MOE_STUDIO_CONTROL``): rank 0 reads it between steps and the ranks
agree on it (:meth:`Ranks.between_steps`); paused ranks wait between steps, so no
collective times out however long the pause.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from ...config import ExperimentConfig, save
from .control import CONTROL_ENV
from .launch import torchrun_command

STOP_WAIT_S = 120.0


class LaunchedRun:
    """``config.parallel.processes`` ranks training ``config`` into ``runs_dir``."""

    def __init__(self, config: ExperimentConfig, runs_dir: str | Path):
        from ...store import open_run

        self.config = config
        self.total_steps = config.train.steps
        self.step_count = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="moe-studio-ranks-")
        toml = Path(self._tmp.name) / "experiment.toml"
        save(config, toml)
        self._control = Path(self._tmp.name) / "control"
        self._control.write_text("run", encoding="utf-8")
        n = config.parallel.processes
        cmd = torchrun_command(n, [str(toml), "--out", str(runs_dir), "--quiet"],
                               python=sys.executable)
        env = dict(os.environ, **{CONTROL_ENV: str(self._control)})
        self._proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True)
        self._err: list[str] = []
        threading.Thread(target=self._drain, args=(self._proc.stderr, self._err), daemon=True,
                         name="moe-studio-ranks-stderr").start()
        run_dir = None
        for line in self._proc.stdout:   # rank 0 names the run first
            if line.startswith("run ") and " -> " in line:
                run_dir = line.split(" -> ", 1)[1].strip()
                break
        if run_dir is None:
            self._proc.wait()
            raise RuntimeError(f"the {n} ranks did not start: " + self._tail())
        threading.Thread(target=self._drain, args=(self._proc.stdout, []), daemon=True,
                         name="moe-studio-ranks-stdout").start()
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        self.device = f"{n} local processes"
        self._reader = open_run(self.run_dir)

    @staticmethod
    def _drain(stream, keep: list[str]) -> None:
        for line in stream:
            keep.append(line)
            del keep[:-50]

    def _tail(self) -> str:
        return " ".join("".join(self._err[-6:]).split())[-600:] or f"exit {self._proc.returncode}"

    @property
    def done(self) -> bool:
        return self.step_count >= self.total_steps

    # ------------------------------------------------------------------ control
    def _say(self, word: str) -> None:
        tmp = self._control.with_suffix(".part")
        tmp.write_text(word, encoding="utf-8")
        os.replace(tmp, self._control)

    def pause(self) -> None:
        self._say("pause")

    def resume(self) -> None:
        self._say("run")

    def step(self) -> SimpleNamespace:
        """Wait for the ranks' next recorded step; RuntimeError when they ended
        without finishing (the run's own error, as rank 0 recorded it)."""
        while True:
            self._reader.refresh()
            last = self._reader.last_step()
            if last > self.step_count:
                self.step_count = last
                return self._progress()
            if self._proc.poll() is not None:
                self._reader.refresh()
                if self._reader.last_step() > self.step_count:
                    continue
                why = self._reader.error or self._tail()
                raise RuntimeError(f"the ranks ended at step {self.step_count}: "
                                   + " ".join(str(why).split())[-600:])
            time.sleep(0.05)

    def _progress(self) -> SimpleNamespace:
        row = self._reader.latest()
        values = {(n, int(m)): float(v) for n, m, v in zip(row["name"], row["member"], row["value"])}
        tps = values.get(("tokens_per_s", -1), float("nan"))
        # tokens a step trains: every rank's shard, or every member's whole batch when
        # the ensemble's members are spread over the ranks
        c = self.config
        per_step = c.data.batch_size * c.data.context * (
            c.ensemble.members if c.ensemble.members > 1 else c.parallel.processes)
        eta = (self.total_steps - self.step_count) * per_step / tps if tps == tps and tps > 0 else float("nan")
        # the fields of the trainer's StepInfo, which train_loop reports
        return SimpleNamespace(step=self.step_count, total_steps=self.total_steps,
                           loss=values.get(("train/loss", 0), float("nan")),
                           lr=values.get(("lr", -1), float("nan")), tokens_per_s=tps, eta_s=eta,
                               val_loss=None)

    @property
    def models(self):
        # what a request for the live weights reads: they live in the ranks
        raise RuntimeError("the live weights of a multi-process run stay in its ranks; route "
                           "through its latest checkpoint instead")

    def save_checkpoint(self) -> None:
        """The app went away: the ranks stop (they checkpoint as they do)."""
        self._finish("stop")

    def close(self, status: str = "finished", error: str | None = None) -> None:
        self._finish("stop" if status != "finished" else "run")

    def _finish(self, word: str) -> None:
        if self._proc.poll() is None:
            self._say(word)
            try:
                self._proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGTERM)   # the launcher's session
                self._proc.wait(timeout=60)
        self._reader.close()
        self._tmp.cleanup()
