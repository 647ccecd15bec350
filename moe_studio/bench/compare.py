"""Compare view budgets (``moe-studio bench compare [--json] [--quick]``).

50 runs the size of the sample runs (1,500 steps logged every 2nd step: 750 rows of 45
scalar series, 30 evaluations; routers, top-k and seeds varied) are written straight
into run stores, then, offscreen at 1400 x 900:

1. Open: ``CompareDashboard.set_runs`` of all 50 until the view has painted once
   (read every store, config diff, summary, 4 plots of 50 curves). Budget: <= 3 s.
2. Pan and zoom: the train-loss plot's view range moves as a mouse drag and the wheel
   move it (``translateBy``, ``scaleBy``: pan, zoom in, zoom out) and the plot repaints
   after each change; frames per second (per wall second, and per CPU second of this
   process, which is what a free core would give on a shared machine)
   for the 50 runs overlaid and grouped by router (mean + band). Budget: >= 20 fps.

``--quick``: 6 runs of 200 steps and short pan loops (a smoke test).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import load_average

BUDGET_OPEN_S = 3.0
BUDGET_FPS = 20.0
ROUTERS = ("topk", "noisy_topk", "soft", "aux_free")
_LAYER_NAMES = ("entropy", "top1_prob", "logit_absmean", "logit_absmax", "dropped_frac",
                "aux_loss", "z_loss", "load_cv", "load_max_over_mean")


def write_run(runs_dir: Path, i: int, steps: int = 1500, log_every: int = 2,
              n_layers: int = 4) -> Path:
    """Write one finished run of sample-run size through ``RunWriter`` (made-up values
    shaped like training: a decaying loss, noisy throughput, per-layer MoE scalars)."""
    from ..config.schema import ExperimentConfig, to_dict
    from ..config.toml_io import dumps
    from ..store import RunWriter

    cfg = ExperimentConfig()
    cfg.name = f"bench-{i:02d}"
    cfg.moe.router = ROUTERS[i % len(ROUTERS)]
    cfg.moe.top_k = 1 + (i // len(ROUTERS)) % 2
    cfg.train.seed = i
    cfg.train.steps = steps
    w = RunWriter.create(runs_dir, name=cfg.name, config=to_dict(cfg), config_toml=dumps(cfg),
                         meta={"params_total": 2_400_000 + 1000 * i, "params_active": 830_000},
                         commit_interval=3600)
    rng = np.random.default_rng(i)
    t0 = 1_700_000_000.0 + 60.0 * i
    eval_every = max(log_every, steps // 30)
    for s in range(log_every, steps + 1, log_every):
        wall = t0 + 0.3 * s
        w.add_scalars(s, {"lr": 1e-3, "tokens_per_s": 5000 + 300 * rng.standard_normal(),
                          "tokens": 768.0 * s, "elapsed_s": 0.3 * s}, member=-1, wall_time=wall)
        loss = 1.4 + 3.5 / (1 + 0.01 * s) + 0.05 * rng.standard_normal() + 0.01 * (i % 4)
        w.add_scalars(s, {"train/loss": loss, "train/aux_loss": 1.0, "train/z_loss": 0.5,
                          "train/total_loss": loss + 0.01, "train/grad_norm": 1.0},
                      member=0, wall_time=wall)
        per_layer = {f"moe/L{b}/{n}": float(v) for b in range(n_layers)
                     for n, v in zip(_LAYER_NAMES, 0.2 + 0.05 * rng.random(len(_LAYER_NAMES)))}
        w.add_scalars(s, per_layer, member=0, wall_time=wall)
        if s % eval_every == 0:
            w.add_scalars(s, {"val/loss": loss + 0.1, "val/acc": 0.5}, member=0, wall_time=wall)
        if s % 200 == 0:
            w.flush()
    w.close("finished")
    return w.run_dir


def _pan_zoom_fps(app, plot, seconds: float) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second of this process) while the
    plot's view moves (pan, zoom in, zoom out), repainting after each change. On a
    shared machine the second says what one free core would give."""
    from .gui import _PaintCounter

    vb = plot.plot_item.getViewBox()
    (x0, x1), _ = vb.viewRange()
    width = x1 - x0
    counter = _PaintCounter(plot.plot_widget.viewport())
    app.processEvents()
    counter.n = 0
    frames = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        # what a mouse drag (translateBy) and the wheel (scaleBy) do to the view box
        k = frames % 60
        if k < 20:
            vb.translateBy(x=width * 0.01)
        elif k < 40:
            vb.scaleBy((0.97, 0.98))
        else:
            vb.scaleBy((1 / 0.97, 1 / 0.98))
        plot.plot_widget.viewport().repaint()
        frames += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    painted = min(frames, counter.n or frames)
    return painted / wall, painted / max(cpu, 1e-9)


def run(json_out: bool = True, quick: bool = False) -> dict[str, Any]:
    import os
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from ..gui import theme
    from ..gui.views.compare import CompareDashboard

    n_runs, steps, pan_s = (6, 200, 0.5) if quick else (50, 1500, 3.0)
    existing = QApplication.instance()
    app = existing or QApplication([sys.argv[0], "-platform", "offscreen"])
    theme.apply_palette(app, False)
    res: dict[str, Any] = {"runs": n_runs, "steps": steps, "quick": quick}
    with tempfile.TemporaryDirectory(prefix="moe-bench-compare-") as tmp:
        t = time.perf_counter()
        paths = [write_run(Path(tmp), i, steps=steps) for i in range(n_runs)]
        res["write_runs_s"] = round(time.perf_counter() - t, 2)
        w = CompareDashboard()
        try:
            w.resize(1400, 900)
            w.show()
            app.processEvents()
            t, c = time.perf_counter(), time.process_time()
            w.set_runs(paths)
            app.processEvents()
            w.repaint()
            res["open_s"] = round(time.perf_counter() - t, 3)
            res["open_cpu_s"] = round(time.process_time() - c, 3)
            res["open_budget_s"] = BUDGET_OPEN_S
            res["open_ok"] = res["open_s"] <= BUDGET_OPEN_S
            plot = w.plot("train")
            fps = {}
            fps["overlay"] = _pan_zoom_fps(app, plot, pan_s)
            w.set_group_by("moe.router")
            app.processEvents()
            res["groups"] = len(w.groups())
            fps["grouped"] = _pan_zoom_fps(app, plot, pan_s)
            for k, (wall_fps, cpu_fps) in fps.items():
                res[f"pan_zoom_fps_{k}"] = round(wall_fps, 1)
                res[f"pan_zoom_fps_{k}_cpu"] = round(cpu_fps, 1)
            res["fps_budget"] = BUDGET_FPS
            res["fps_ok"] = min(res["pan_zoom_fps_overlay"],
                                res["pan_zoom_fps_grouped"]) >= BUDGET_FPS
            # per CPU second: what one free core gives (this machine may be shared)
            res["fps_cpu_ok"] = min(res["pan_zoom_fps_overlay_cpu"],
                                    res["pan_zoom_fps_grouped_cpu"]) >= BUDGET_FPS
        finally:
            w.close()
            w.deleteLater()
            app.processEvents()
    res["load_average"] = load_average()
    if not json_out:
        print(f"open {n_runs} runs: {res['open_s']:.2f} s (budget {BUDGET_OPEN_S} s) · "
              f"pan/zoom {res['pan_zoom_fps_overlay']:.0f} fps overlaid, "
              f"{res['pan_zoom_fps_grouped']:.0f} fps grouped (budget {BUDGET_FPS:.0f})")
    return res


if __name__ == "__main__":  # pragma: no cover
    import json
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
