"""Helpers the benchmarks share."""
from __future__ import annotations

import os

# A timed run is this much longer than its timed steps: the last step of a run
# evaluates, snapshots and checkpoints, which is not step time.
SPARE_STEPS = 10


def timing_config(cfg, steps: int):
    """``cfg`` set up for timing ``steps`` training steps (plus warm-up): the run is
    SPARE_STEPS longer, evaluation, probe snapshots and checkpoints are pushed past its
    end, warm-up of the learning rate is one step. Returns ``cfg``."""
    cfg.train.steps = steps + SPARE_STEPS
    cfg.train.warmup_steps = 1
    cfg.train.eval_every = 10 ** 6
    cfg.train.snapshot_every = 10 ** 6
    cfg.train.checkpoint_every = 0
    return cfg


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (None where the OS has none):
    recorded with every figure, since a shared machine slows what it measures."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))]


class Progress:
    """Progress lines of a long benchmark on stderr (stdout is the result, JSON with
    --json), at most one every ``every_s`` seconds: ``bench gui: step 300/10000 (3 %) ·
    1:02 elapsed · ETA 33:20``. The ETA is the rate since the first step reported, so
    the start-up before it (building the model, starting a process) does not count as
    step time: unknown on the first line, then the steps' own pace."""

    def __init__(self, name: str, total: int, every_s: float = 10.0) -> None:
        import time

        self._clock = time.monotonic
        self.name, self.total, self.every_s = name, max(1, int(total)), float(every_s)
        self._t0 = self._clock()
        self._last = -float("inf")
        self._first: tuple[float, int] | None = None   # (time, steps) of the first report

    def step(self, done: int, force: bool = False) -> bool:
        """Report ``done`` of ``total``; returns whether a line was printed."""
        now = self._clock()
        if self._first is None:
            self._first = (now, int(done))
        if not force and now - self._last < self.every_s:
            return False
        self._last = now
        elapsed = now - self._t0
        t1, d1 = self._first
        eta = (now - t1) / (done - d1) * (self.total - done) if done > d1 else float("nan")
        say(f"bench {self.name}: step {done}/{self.total} ({100 * done / self.total:.0f} %) · "
            f"{_clock_text(elapsed)} elapsed · ETA {_clock_text(eta)}")
        return True


class Unavailable(Exception):
    """A benchmark cannot run on this machine (e.g. it needs a GPU); the CLI prints the
    message as one line."""


def say(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def _clock_text(s: float) -> str:
    if s != s or s in (float("inf"), -float("inf")):
        return "--:--"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


# --- budgets that can fail ------------------------------------------------------------
#
# A shared machine makes every timing noisy, and a small overhead (a few percent) is
# below the noise of any single pair of runs. So the budgets compare many interleaved
# pairs (A then B, A then B, ...), take each pair's ratio (slow drifts of the machine
# cancel inside a pair), and judge the bootstrap confidence interval of the median
# ratio: within budget only when the whole interval is, over budget only when the whole
# interval is, and "unresolved" otherwise (a noisy -10 % overhead is not a pass).

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def ratio_ci(numer: list[float], denom: list[float], confidence: float = CONFIDENCE,
             seed: int = 0) -> dict:
    """Median of the paired ratios ``numer[i] / denom[i]`` and its bootstrap percentile
    interval (``confidence``, fixed seed so a report is reproducible from its samples).
    Returns {"median", "ci": [lo, hi], "pairs"}."""
    import numpy as np

    if len(numer) != len(denom) or not numer:
        raise ValueError(f"ratio_ci needs equally many paired samples, got {len(numer)} "
                         f"and {len(denom)}")
    r = np.asarray(numer, dtype=np.float64) / np.asarray(denom, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = np.median(r[rng.integers(0, r.size, size=(BOOTSTRAP_RESAMPLES, r.size))], axis=1)
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [a, 1.0 - a])
    return {"median": float(np.median(r)), "ci": [float(lo), float(hi)], "pairs": int(r.size)}


def verdict_at_most(ci: list[float], limit: float) -> str:
    """'ok' when the whole interval is at or under ``limit``, 'missed' when the whole
    interval is over it, 'unresolved' when it straddles the limit."""
    lo, hi = ci
    if hi <= limit:
        return "ok"
    if lo > limit:
        return "missed"
    return "unresolved"


def verdict_at_least(ci: list[float], limit: float) -> str:
    """The mirror of :func:`verdict_at_most` for a figure that must reach ``limit``."""
    lo, hi = ci
    if lo >= limit:
        return "ok"
    if hi < limit:
        return "missed"
    return "unresolved"


def budget(est: dict, limit: float, at_most: bool = True, offset: float = 0.0,
           digits: int = 4) -> dict:
    """A budget record from a :func:`ratio_ci` estimate: the figure is the ratio plus
    ``offset`` (-1 turns a time ratio into an overhead fraction). ``ok`` is True only for
    verdict 'ok'."""
    value = est["median"] + offset
    ci = [est["ci"][0] + offset, est["ci"][1] + offset]
    v = verdict_at_most(ci, limit) if at_most else verdict_at_least(ci, limit)
    return {"value": round(value, digits), "ci95": [round(c, digits) for c in ci],
            "limit": limit, "rule": "<=" if at_most else ">=", "pairs": est["pairs"],
            "verdict": v, "ok": v == "ok"}
