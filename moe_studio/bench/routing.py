"""Routing-view budgets (``moe-studio bench routing [--json] [--quick]``), offscreen.

1. Heatmap update: ``HeatmapPlot.set_matrix`` of a 4,096-token x 64-expert gate
   matrix (new data each time, explicit levels, both category axes relabelled), median
   and p95 over repeats (``heatmap_update_*``), and the same plus the synchronous
   repaint that puts it on screen, where the colour lookup happens
   (``heatmap_with_paint_*``). Budget: p95 with the repaint <= 30 ms.
2. Scrubbing: a synthetic run with 200 recorded steps (probe snapshots of 512 tokens,
   4 MoE layers x 16 experts, histograms, tensors, scalars) is opened in each routing
   dashboard at 1,040 x 620 (the dashboard area of a 1,400 x 900 window); the step
   slider is moved through every recorded step, each move followed by a synchronous
   repaint and the event loop (so the views have drawn what the step shows; step
   markers on the over-time plots follow at most every 150 ms, as in the app).
   Frames per second = slider steps per second: >= 20 for every dashboard.

``--quick`` uses 20 steps and fewer repeats (a smoke test; budgets indicative only).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import percentile

BUDGET_HEATMAP_MS = 30.0
BUDGET_SCRUB_FPS = 20.0
DASHBOARDS = (("gates", "moe_studio.gui.views.gates:GateDashboard"),
              ("experts", "moe_studio.gui.views.experts:ExpertsDashboard"),
              ("routing", "moe_studio.gui.views.routing:RoutingDashboard"))


def write_synthetic_run(runs_dir: str | Path, *, steps: int = 200, n_tokens: int = 512,
                        n_experts: int = 16, n_blocks: int = 4, top_k: int = 2,
                        every: int = 5, seed: int = 0, writer=None, first_step: int | None = None):
    """Write (or, with ``writer``, append to) a run with the records the trainer makes
    (docs/CONTRACTS.md) at ``steps`` recorded steps ``every`` apart: per-block scalars,
    ``moe/tokens_per_expert`` / ``dropped_per_expert`` / ``bias`` tensors,
    ``router_probs/L{i}`` histograms and ``routing/probe`` snapshots whose routing
    drifts over the steps (prose and code drift apart). Returns the open writer."""
    from ..config import ExperimentConfig, dumps, to_dict
    from ..store import RunWriter

    rng = np.random.default_rng(seed)
    blocks = list(range(n_blocks))
    if writer is None:
        cfg = ExperimentConfig(name="routing-synthetic")
        cfg.model.n_layers = n_blocks
        cfg.moe.n_experts = n_experts
        cfg.moe.top_k = top_k
        cfg.moe.router = "aux_free"
        cfg.train.steps = steps * every
        writer = RunWriter.create(runs_dir, name=cfg.name, config=to_dict(cfg),
                                  config_toml=dumps(cfg),
                                  meta={"moe_blocks": blocks, "domain_names": ["prose", "python"]})
    text = ("The router sends each token to its experts. " * 40 +
            "def f(x):\n    return {k: v for k, v in x.items()}\n" * 40).encode()
    tokens = np.frombuffer(text[:n_tokens].ljust(n_tokens, b" "), np.uint8).copy()
    domains = (np.arange(n_tokens) >= n_tokens // 2).astype(np.int16)
    base = rng.normal(size=(n_blocks, n_tokens, n_experts))
    bias_dir = rng.normal(size=(n_blocks, 2, n_experts))
    edges = np.linspace(0.0, 1.0, 51)
    start = 1 if first_step is None else first_step
    for j in range(steps):
        step = start + j * every
        t = min(1.0, step / (steps * every))
        logits = base * (0.5 + 2.0 * t) + 3.0 * t * bias_dir[:, domains.astype(int)]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        idx = np.argsort(-probs, axis=-1)[..., :top_k]
        w = np.take_along_axis(probs, idx, -1)
        w /= w.sum(-1, keepdims=True)
        load = np.stack([np.bincount(idx[b].ravel(), minlength=n_experts) for b in blocks]).astype(np.float32)
        writer.add_tensor(step, "moe/tokens_per_expert", load)
        dropped = np.floor(load * 0.02 * rng.random(load.shape)).astype(np.float32)
        writer.add_tensor(step, "moe/dropped_per_expert", dropped)
        writer.add_tensor(step, "moe/bias", (1e-3 * step * rng.normal(size=load.shape)).astype(np.float32))
        vals = {}
        for b in blocks:
            p = probs[b]
            vals[f"moe/L{b}/entropy"] = float(-(p * np.log(p)).sum(-1).mean())
            vals[f"moe/L{b}/top1_prob"] = float(p.max(-1).mean())
            vals[f"moe/L{b}/logit_absmean"] = float(np.abs(logits[b]).mean())
            vals[f"moe/L{b}/logit_absmax"] = float(np.abs(logits[b]).max())
            counts, _ = np.histogram(p, bins=edges)
            writer.add_histogram(step, f"router_probs/L{b}", edges, counts.astype(np.int64))
        writer.add_scalars(step, vals)
        writer.add_snapshot(step, "routing/probe",
                            {"tokens": tokens, "domains": domains, "topk_idx": idx.astype(np.int16),
                             "topk_weight": w.astype(np.float16), "probs": probs.astype(np.float16)},
                            {"domain_names": ["prose", "python"], "moe_blocks": blocks,
                             "top_k": top_k, "n_experts": n_experts})
    writer.flush()
    return writer


def _heatmap(app, repeats: int) -> dict[str, float]:
    from ..data.tokenizer import ByteTokenizer
    from ..gui.widgets.heatmap import HeatmapPlot

    rng = np.random.default_rng(0)
    n_tok, n_exp = 4096, 64
    mats = [rng.dirichlet(np.full(n_exp, 0.3), size=n_tok).T.astype(np.float16) for _ in range(2)]
    tokens = rng.integers(32, 127, n_tok).astype(np.uint8)
    labels = ByteTokenizer().token_labels(tokens)
    experts = [f"e{e}" for e in range(n_exp)]
    h = HeatmapPlot("bench", "token", "expert", mono_x=True)
    h.resize(1000, 420)
    h.show()
    h.set_matrix(mats[1], x_labels=labels, y_labels=experts)
    h.set_view_columns(0, 120)
    app.processEvents()
    update, painted = [], []
    for i in range(repeats):
        m = mats[i % 2]
        t0 = time.perf_counter()
        h.set_matrix(m, x_labels=labels, y_labels=experts)
        t1 = time.perf_counter()
        h.plot_widget.viewport().repaint()   # paints now: the colour lookup happens here
        t2 = time.perf_counter()
        update.append((t1 - t0) * 1000)
        painted.append((t2 - t0) * 1000)
    h.close()
    h.deleteLater()
    app.processEvents()
    return {"heatmap_shape": [n_exp, n_tok],
            "heatmap_update_median_ms": round(statistics.median(update), 2),
            "heatmap_update_p95_ms": round(percentile(update, 95), 2),
            "heatmap_with_paint_median_ms": round(statistics.median(painted), 2),
            "heatmap_with_paint_p95_ms": round(percentile(painted, 95), 2)}


def _scrub(app, run_dir: Path, n_steps: int) -> dict[str, Any]:
    import importlib

    out: dict[str, Any] = {}
    for key, spec in DASHBOARDS:
        mod, cls = spec.split(":")
        d = getattr(importlib.import_module(mod), cls)()
        d.resize(1040, 620)
        d.show()
        d.set_runs([run_dir])
        app.processEvents()
        c = d.controls
        c.set_index(0)
        app.processEvents()
        frames = []
        t_all = time.perf_counter()
        for i in range(c.steps().size):
            t0 = time.perf_counter()
            c.set_index(i)
            d.repaint()
            app.processEvents()
            frames.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - t_all
        d.stop_follow()
        d.close()
        d.deleteLater()
        app.processEvents()
        out[f"scrub_{key}_fps"] = round(len(frames) / elapsed, 1)
        out[f"scrub_{key}_frame_p95_ms"] = round(percentile(frames, 95), 1)
        out[f"scrub_{key}_steps"] = len(frames)
    return out


def run(json_out: bool = True, quick: bool = False) -> dict:
    """Run the benchmark; returns the result dict (printed as text unless ``json_out``)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from ..gui import theme

    app = QApplication.instance() or QApplication([sys.argv[0], "-platform", "offscreen"])
    theme.apply_palette(app, False)
    n_steps = 20 if quick else 200
    res: dict[str, Any] = {"benchmark": "routing", "quick": bool(quick),
                           "platform": app.platformName(), "cpu_count": os.cpu_count()}
    res.update(_heatmap(app, 10 if quick else 60))
    with tempfile.TemporaryDirectory(prefix="moe-bench-routing-") as tmp:
        t0 = time.perf_counter()
        w = write_synthetic_run(tmp, steps=n_steps)
        w.close("finished")
        res["synthetic_run_write_s"] = round(time.perf_counter() - t0, 2)
        res["scrub_snapshots"] = n_steps
        res.update(_scrub(app, Path(w.run_dir), n_steps))
    res["budget_heatmap_ms"] = BUDGET_HEATMAP_MS
    res["budget_scrub_fps"] = BUDGET_SCRUB_FPS
    # The stricter reading: the update including the repaint that shows it.
    res["heatmap_within_budget"] = res["heatmap_with_paint_p95_ms"] <= BUDGET_HEATMAP_MS
    res["scrub_within_budget"] = all(res[f"scrub_{k}_fps"] >= BUDGET_SCRUB_FPS for k, _ in DASHBOARDS)
    if not json_out:
        for k, v in res.items():
            print(f"{k:34s} {v}")
    return res


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
