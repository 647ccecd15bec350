"""Regenerate the recorded runs that ship in ``sample_runs/`` with the real engine.

    python -m moe_studio.samples [--only NAME ...] [--scale 0.1] [--out DIR]

Each sample is a normal run folder (``run.sqlite`` + ``config.toml``) with a stable
name, so the app's "Open sample run" menu and the tests find them. Optimizer state is
not kept (it would triple the size); the final model weights of the samples named in
``WEIGHTS`` are, as fp16 safetensors, so probe text can be routed through their model
(the 25 MB budget for all samples allows only a few).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .config import ExperimentConfig, presets
from .paths import sample_runs_dir


def _sample(fn: Callable[[], ExperimentConfig], name: str, steps: int,
            **over) -> Callable[[], ExperimentConfig]:
    def make() -> ExperimentConfig:
        c = fn()
        c.name = name
        c.train.steps = steps
        c.train.warmup_steps = min(c.train.warmup_steps, steps // 10)
        c.train.eval_every = max(1, steps // 30)
        c.train.snapshot_every = max(1, steps // 40)
        c.train.log_every = 2
        c.train.device = "cpu"
        for k, v in over.items():
            sec, key = k.split("__")
            setattr(getattr(c, sec), key, v)
        return c
    return make


# Samples that ship their final weights (fp16 safetensors).
WEIGHTS = {"moe-top2"}

SAMPLES: dict[str, Callable[[], ExperimentConfig]] = {
    "dense-baseline": _sample(presets.dense_baseline, "dense-baseline", 1500),
    "moe-top2": _sample(presets.mixtral_top2, "moe-top2", 1500),
    "switch-top1": _sample(presets.switch_top1, "switch-top1", 1500),
    # Ensembles (issue 7): small enough to regenerate in a few minutes on a laptop CPU.
    "bagging-4": _sample(presets.bagging_ensemble, "bagging-4", 500, train__eval_every=25,
                         train__log_every=5, precision__headroom=False),
    "moe-vs-ensemble-moe": _sample(presets.moe_vs_ensemble_moe, "moe-vs-ensemble-moe", 400,
                                   train__eval_every=25, train__log_every=5,
                                   train__snapshot_every=50, precision__headroom=False),
    "moe-vs-ensemble-dense": _sample(presets.moe_vs_ensemble_dense, "moe-vs-ensemble-dense", 400,
                                     train__eval_every=25, train__log_every=5,
                                     precision__headroom=False),
    # Mixed precision (issue 6): the fp16 overflow demo and the same run with its router
    # in float32, headroom on. About four minutes each on a CPU.
    "fp16-overflow": _sample(presets.fp16_overflow_demo, "fp16-overflow", 400,
                             train__snapshot_every=40),
    "fp16-router-fp32": _sample(presets.fp16_overflow_demo, "fp16-router-fp32", 400,
                                train__snapshot_every=40, moe__router_fp32=True),
}


# A recorded sweep (issue 18): its folder (the queue) and one run per grid point, each a
# sample run of its own named <sweep>-<values>. Small: four runs of a narrow two-layer
# top-2 MoE, 80 steps each (about 0.3 MB a run).
SWEEPS: dict[str, tuple[Callable[[], ExperimentConfig], list[str]]] = {
    "sweep-topk-aux": (_sample(presets.mixtral_top2, "sweep-topk-aux", 80, train__eval_every=8,
                               train__snapshot_every=16, train__warmup_steps=8,
                               precision__headroom=False, model__n_layers=2, model__d_model=64,
                               model__n_heads=2, model__d_ff=256, moe__n_experts=4,
                               moe__d_expert=64, data__batch_size=8),
                       ["moe.top_k=1,2", "moe.aux_loss_coef=0,0.01"]),
}


def export_weights(trainer, path: Path) -> None:
    """Member weights as fp16 safetensors (``member{m}.`` prefixes; tied tensors once)."""
    from .engine.weights import save_weights

    save_weights(trainer.models, path, trainer.step_count, half=True)


def _say(text: str) -> None:
    """Progress on stderr: stdout lists the sample folders written."""
    print(text, file=sys.stderr, flush=True)


def generate(name: str, out_dir: Path, scale: float = 1.0, log=_say) -> Path:
    from .engine.trainer import Trainer

    cfg = SAMPLES[name]()
    cfg.train.steps = max(2, int(cfg.train.steps * scale))
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, cfg.train.steps // 10)
    cfg.train.eval_every = max(1, min(cfg.train.eval_every, cfg.train.steps // 5 or 1))
    cfg.train.snapshot_every = max(1, min(cfg.train.snapshot_every, cfg.train.steps // 5 or 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tr = Trainer(cfg, runs_dir=tmp)
        t0 = t_said = time.time()
        try:
            while not tr.done:
                info = tr.step()
                if info.step % 100 == 0 or tr.done or time.time() - t_said > 10:
                    t_said = time.time()
                    log(f"  {name}: step {info.step}/{info.total_steps} loss {info.loss:.3f} "
                        f"({info.tokens_per_s:,.0f} tok/s)")
            if name in WEIGHTS:
                export_weights(tr, tr.run_dir / "weights.safetensors")
            tr.close("finished", checkpoint=False)   # a sample ships weights, not checkpoints
        except BaseException:
            tr.close("failed")
            raise
        src = tr.run_dir
        dest = out_dir / name
        if dest.exists():
            shutil.rmtree(dest)
        for ck in src.glob("checkpoint-*.pt"):
            ck.unlink()
        shutil.move(str(src), str(dest))
    log(f"  {name}: done in {time.time() - t0:.0f} s -> {dest}")
    return dest


def generate_sweep(name: str, out_dir: Path, scale: float = 1.0, log=print) -> Path:
    """Run the sweep ``name`` with the real sweep runner, then lay it out as samples:
    ``<out_dir>/<name>/`` (the queue; paths in it relative, so it moves with them) and
    ``<out_dir>/<name>-<values>/`` per run, without checkpoints or logs."""
    from .store.writer import slugify
    from .sweep.grid import expand, parse_grid
    from .sweep.queue import SweepQueue
    from .sweep.runner import SweepRunner, create_sweep

    make, grid = SWEEPS[name]
    base = make()
    base.train.steps = max(2, int(base.train.steps * scale))
    base.train.eval_every = max(1, min(base.train.eval_every, base.train.steps // 5 or 1))
    base.train.snapshot_every = max(1, min(base.train.snapshot_every, base.train.steps // 5 or 1))
    axes = parse_grid(grid, base)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        q = create_sweep(base, [a.key for a in axes], expand(base, axes), Path(tmp) / "runs",
                         name=name)
        if SweepRunner(q.dir, log=lambda text: log(f"  {text}")).run() != 0:
            raise RuntimeError(f"sweep {name}: not every run finished (see {q.dir / 'logs'})")
        q = SweepQueue.load(q.dir)
        dest = out_dir / name
        for e in q.entries:
            run_dest = out_dir / f"{name}-{slugify(e.label.replace(' ', '-'))}"
            if run_dest.exists():
                shutil.rmtree(run_dest)
            src = q.run_path(e)
            for ck in src.glob("checkpoint-*.pt"):
                ck.unlink()
            (src / "writer.lock").unlink(missing_ok=True)
            shutil.move(str(src), str(run_dest))
            e.run = f"../{run_dest.name}"
            e.started = e.ended = None
        q.runs_dir = ".."
        shutil.rmtree(q.dir / "logs")
        for f in ("sweep.lock", "runner.lock"):
            (q.dir / f).unlink(missing_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(q.dir), str(dest))
        q.dir = dest
        q.save()
    log(f"  {name}: {len(q.entries)} runs -> {out_dir}")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moe_studio.samples", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(SAMPLES) + sorted(SWEEPS),
                    help="regenerate only these")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every sample's steps")
    ap.add_argument("--out", type=Path, default=sample_runs_dir())
    args = ap.parse_args(argv)
    names = args.only or list(SAMPLES) + list(SWEEPS)
    for k, name in enumerate(names, 1):
        _say(f"generating {name} ({k}/{len(names)})…")
        print((generate_sweep if name in SWEEPS else generate)(
            name, args.out, scale=args.scale, log=_say), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
