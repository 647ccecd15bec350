"""Continuing a stopped or interrupted run from its newest checkpoint.

:func:`plan_resume` says what continuing would do (which checkpoint, how many recorded
steps will be redone, the new total) without importing torch, so the app can ask the
user before anything starts; :func:`resume_trainer` builds the Trainer that does it. The
run keeps its folder and records a new attempt (``store.attempts``): every view then
shows the history that led to the final model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


class ResumeError(ValueError):
    """A run that cannot be continued as asked; the message says why in one line."""


@dataclass(frozen=True)
class ResumeRequest:
    """What the app asks the engine to continue: a run folder and, optionally, a new
    total number of steps (None: the run's own ``train.steps``)."""
    run_dir: str
    steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResumeRequest":
        return cls(str(d["run_dir"]), None if d.get("steps") is None else int(d["steps"]))


@dataclass(frozen=True)
class ResumePlan:
    run_dir: Path
    name: str
    status: str
    checkpoint: Path
    from_step: int        # the checkpoint's step: training goes on after it
    last_step: int        # the largest step the run has records of
    planned_steps: int    # the run's train.steps as recorded
    total_steps: int      # what it will train to

    @property
    def redo(self) -> int:
        """Steps recorded past the checkpoint that will be trained (and recorded) again."""
        return max(0, self.last_step - self.from_step)

    def describe(self) -> str:
        """One line for the CLI and the app's confirmation."""
        more = (f" (planned {self.planned_steps:,}; training longer)"
                if self.total_steps > self.planned_steps else "")
        text = (f"continuing {self.name} from step {self.from_step:,} ({self.checkpoint.name}) "
                f"to step {self.total_steps:,}{more}")
        if self.redo:
            text += (f"; the newest checkpoint is older than the last records, so "
                     f"{self.redo:,} step{'s' if self.redo != 1 else ''} "
                     f"({self.from_step + 1:,}-{self.last_step:,}) will be redone")
        return text


def newest_checkpoint(run_dir: str | Path) -> tuple[Path, int] | None:
    """``(path, step)`` of the run's newest ``checkpoint-<step>.pt``, or None."""
    best: tuple[Path, int] | None = None
    for p in Path(run_dir).glob("checkpoint-*.pt"):
        m = CHECKPOINT_RE.match(p.name)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (p, int(m.group(1)))
    return best


def plan_resume(run_dir: str | Path, steps: int | None = None, *,
                longer_if_done: bool = False) -> ResumePlan:
    """What continuing ``run_dir`` would do; ResumeError (one line) when it cannot:
    the run is still being written, has no checkpoint, or ``steps`` leaves nothing to
    train. ``longer_if_done``: a run whose checkpoint has all its planned steps is
    planned to twice as many (the app's proposal) instead of refused."""
    from ..store import RunFileError, open_run

    try:
        with open_run(run_dir) as r:
            status, name, path = r.status, r.name, r.path
            last = r.last_step()
            cfg = r.config if isinstance(r.config, dict) else {}
            train = cfg.get("train") or {}
            ens = cfg.get("ensemble") or {}
    except RunFileError as e:
        raise ResumeError(str(e)) from None
    if status == "running":
        raise ResumeError(f"{path}: the run is still being written; stop it before continuing it")
    if "steps" not in train:
        raise ResumeError(f"{path}: not a training run (an inspection cannot be continued)")
    found = newest_checkpoint(path)
    if found is None:
        raise ResumeError(f"{path}: no checkpoint to continue from (a run saves one when it "
                          "stops, and every train.checkpoint_every steps)")
    ckpt, from_step = found
    planned = int(train["steps"])
    total = planned if steps is None else int(steps)
    if steps is None and longer_if_done and total <= from_step:
        total = 2 * max(planned, from_step)
    if steps is not None and total < 1:
        raise ResumeError(f"--steps must be at least 1 (got {total})")
    if total <= from_step:
        if steps is None:
            raise ResumeError(f"{path}: the run already trained all its {planned:,} steps; "
                              f"give more steps (e.g. --steps {2 * planned}) to train longer")
        raise ResumeError(f"{path}: --steps {total:,} is not more than the checkpoint's step "
                          f"{from_step:,}; give more steps to continue")
    if total != planned and ens.get("method") in ("snapshot", "boosting") \
            and int(ens.get("members", 1)) > 1:
        raise ResumeError(f"{path}: a {ens['method']} ensemble's members train in segments fixed "
                          f"by its {planned:,} steps; it can be continued only to those")
    return ResumePlan(Path(path), str(name), status, ckpt, from_step, max(last, from_step),
                      planned, total)


def resume_trainer(request: ResumeRequest):
    """A Trainer that continues ``request.run_dir`` from its newest checkpoint, writing
    into the same run as a new attempt."""
    from ..config import from_dict
    from ..store import RunReader, RunWriter
    from .trainer import Trainer

    plan = plan_resume(request.run_dir, request.steps)
    with RunReader(plan.run_dir) as r:
        cfg = from_dict(r.config)
        elapsed = r.scalars(["elapsed_s"], member=-1)
    elapsed = elapsed[elapsed["step"] <= plan.from_step]["value"]
    cfg.train.steps = plan.total_steps
    writer = RunWriter.reopen(plan.run_dir)
    try:
        trainer = Trainer(cfg, writer=writer)
        trainer.load_checkpoint(plan.checkpoint)
        if len(elapsed):   # the run's training time goes on from the checkpoint's
            trainer._t_start -= float(elapsed.iloc[-1])
        writer.begin_attempt(plan.from_step, redo=plan.redo, total_steps=plan.total_steps)
    except BaseException as e:
        # The run keeps the status it had; only an interrupted one (no end recorded)
        # has none to keep.
        from ..store.schema import END_STATUSES
        writer.close(plan.status if plan.status in END_STATUSES else "failed",
                     error=f"continuing from {plan.checkpoint.name} failed: {e!r}")
        raise
    trainer.resume_plan = plan
    return trainer
