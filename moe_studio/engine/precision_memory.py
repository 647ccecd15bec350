"""``moe-studio memory``: the measured memory split of one training step under each
precision mode, side by side (the seeds' claim that mixed precision saves memory,
measured rather than assumed).

Each mode trains the same config for two steps in a throw-away runs folder and reports
the second step's :class:`~.footprint.FootprintProbe` split.
"""
from __future__ import annotations

import tempfile

from ..config import ExperimentConfig, copy_config
from ..config.schema import PRECISIONS
from .footprint import PARTS


def measure_modes(cfg: ExperimentConfig, modes: tuple[str, ...] | list[str] = PRECISIONS
                  ) -> dict[str, dict]:
    """{mode: footprint} of ``cfg`` trained for two steps under each precision ``mode``."""
    from .trainer import Trainer

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="moe-memory-") as tmp:
        for mode in modes:
            c = copy_config(cfg)
            c.name = f"memory-{mode}"
            c.precision.mode = mode
            c.train.steps = 2
            c.train.warmup_steps = 1
            c.train.eval_every = c.train.snapshot_every = 10 ** 6
            c.train.checkpoint_every = 0
            tr = Trainer(c, tmp)
            try:
                while not tr.done:
                    tr.step()
            finally:
                tr.close(checkpoint=False)
            out[mode] = tr.footprint
    return out


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.2f}"


def format_table(result: dict[str, dict]) -> str:
    """The footprints as a text table, one column per mode, MiB."""
    modes = list(result)
    rows = [("part (MiB)", *modes)]
    for part in (*PARTS, "total", "peak_allocated"):
        rows.append((part, *(_mib(result[m].get(part)) for m in modes)))
    dtypes = sorted({d for m in modes for d in result[m].get("activations_by_dtype", {})})
    for d in dtypes:
        rows.append((f"  activations {d}",
                     *(_mib(result[m].get("activations_by_dtype", {}).get(d, 0)) for m in modes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    method = next(iter(result.values()))["method"] if result else ""
    return "\n".join(lines + [f"method: {method}"])
