"""A sweep's grid: ``--grid moe.top_k=1,2,4`` arguments parsed, checked against the
config schema, and expanded into one validated config per point (× seeds).

Every problem is one line naming the argument and the value: an unknown key, a value
of the wrong type or out of range, a key given twice, a combination the config
validation refuses ("moe.top_k=4 with moe.n_experts=2: ...").
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, ExperimentConfig, apply_overrides, copy_config, validate
from ..config.schema import to_dict
from ..store.compare import flatten_config, value_text

MAX_POINTS = 1000   # a typo ("1,2,...,1000" twice) must not queue a million runs
SEED_KEY = "train.seed"


class GridError(ValueError):
    """A grid that cannot be run; the message names the argument at fault."""


@dataclass(frozen=True)
class GridAxis:
    key: str                 # "moe.top_k"
    values: tuple[Any, ...]  # typed as the schema field (int 1, float 0.01, True)


@dataclass
class SweepPoint:
    """One run of a sweep: its position, the swept values (key -> typed value, the
    seed included when several are swept), and its full config."""
    index: int
    values: dict[str, Any]
    config: ExperimentConfig

    def label(self) -> str:
        """``top_k=2 aux_loss_coef=0.01 seed=1``: what tells this run apart."""
        return " ".join(f"{k.rsplit('.', 1)[-1]}={value_text(v)}" for k, v in self.values.items())


def override_text(v: Any) -> str:
    """A typed value as ``--set`` reads it back exactly (floats in full precision)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def parse_axis(arg: str, base: ExperimentConfig) -> GridAxis:
    """``"moe.top_k=1,2,4"`` -> GridAxis with values typed by the schema."""
    if "=" not in arg:
        raise GridError(f"--grid {arg!r}: expected section.key=v1,v2,... (e.g. moe.top_k=1,2)")
    key, raw = (s.strip() for s in arg.split("=", 1))
    if key == "name":
        raise GridError("--grid name: runs of a sweep are named by their values; "
                        "sweep a config key instead")
    items = [v.strip() for v in raw.split(",")]
    if not raw.strip() or any(not v for v in items):
        raise GridError(f"--grid {key}: empty value in {raw!r} (give values separated by commas)")
    values = []
    for v in items:
        probe = copy_config(base)
        try:
            apply_overrides(probe, [f"{key}={v}"])
        except ConfigError as e:
            raise GridError(f"--grid {key}: {e}") from None
        values.append(flatten_config(to_dict(probe))[key])
    if len({value_text(v) for v in values}) != len(values):
        raise GridError(f"--grid {key}: a value is given twice in {raw!r}")
    return GridAxis(key, tuple(values))


def parse_grid(args: list[str], base: ExperimentConfig, seeds: int = 1) -> list[GridAxis]:
    """Every ``--grid`` argument parsed (a key at most once), plus ``train.seed`` when
    ``seeds`` > 1 (base seed, base seed + 1, ...)."""
    if seeds < 1:
        raise GridError(f"--seeds must be at least 1 (got {seeds})")
    if seeds > MAX_POINTS:  # refused before a tuple of that many seeds is built
        raise GridError(f"--seeds {seeds:,} is more runs than a sweep holds "
                        f"(at most {MAX_POINTS:,})")
    axes: list[GridAxis] = []
    for a in args:
        ax = parse_axis(a, base)
        if any(x.key == ax.key for x in axes):
            raise GridError(f"--grid {ax.key} is given twice; list all its values in one --grid")
        axes.append(ax)
    if seeds > 1:
        if any(x.key == SEED_KEY for x in axes):
            raise GridError(f"--seeds and --grid {SEED_KEY} both set the seed; use one")
        axes.append(GridAxis(SEED_KEY, tuple(base.train.seed + i for i in range(seeds))))
    if not axes:
        raise GridError("no --grid given: name at least one key to vary (e.g. --grid moe.top_k=1,2)")
    n = 1
    for ax in axes:
        n *= len(ax.values)
    if n > MAX_POINTS:
        raise GridError(f"the grid has {n:,} runs (more than {MAX_POINTS:,}); sweep fewer values")
    return axes


def expand(base: ExperimentConfig, axes: list[GridAxis]) -> list[SweepPoint]:
    """Every combination of the axes' values (the first axis varies slowest), each a
    validated copy of ``base``; GridError naming the first combination refused."""
    points = []
    for i, combo in enumerate(itertools.product(*(ax.values for ax in axes))):
        cfg = copy_config(base)
        values = dict(zip((ax.key for ax in axes), combo))
        apply_overrides(cfg, [f"{k}={override_text(v)}" for k, v in values.items()])
        try:
            validate(cfg)
        except ConfigError as e:
            where = ", ".join(f"{k}={value_text(v)}" for k, v in values.items())
            raise GridError(f"the grid point {where} is not a valid experiment: {e}") from None
        points.append(SweepPoint(i, values, cfg))
    return points


def check_points_fit(points: list[SweepPoint]) -> None:
    """GridError naming the first point whose config cannot fit in this machine's memory
    (each run would refuse it itself, after the queue was made and the others ran)."""
    from ..engine.memory import check_fits

    for p in points:
        try:
            check_fits(p.config)
        except ConfigError as e:
            where = ", ".join(f"{k}={value_text(v)}" for k, v in p.values.items())
            raise GridError(f"the grid point {where} cannot run here: {e}") from None
