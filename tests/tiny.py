"""The tiny experiment most tests train: 2 layers, d=32, 4 experts top-2, context 16,
on the embedded corpus, on the CPU. ``tiny_config(section__key=value, ...)`` overrides
any field, for example ``tiny_config(train__steps=6, ensemble__members=3)``."""
from __future__ import annotations

from moe_studio.config import ExperimentConfig


def tiny_config(name: str = "tiny", **over) -> ExperimentConfig:
    c = ExperimentConfig(name=name)
    c.data.context = 16
    c.data.batch_size = 4
    c.model.n_layers = 2
    c.model.d_model = 32
    c.model.n_heads = 2
    c.model.d_ff = 64
    c.moe.n_experts = 4
    c.moe.top_k = 2
    c.train.steps = 12
    c.train.warmup_steps = 2
    c.train.eval_every = 6
    c.train.eval_batches = 2
    c.train.snapshot_every = 6
    c.train.device = "cpu"
    for k, v in over.items():
        sec, key = k.split("__")
        if not hasattr(getattr(c, sec), key):
            raise AttributeError(f"no config field {sec}.{key}")
        setattr(getattr(c, sec), key, v)
    return c


def trained_run(runs_dir, name: str = "tiny", **over):
    """Train ``tiny_config(name, **over)`` to the end in ``runs_dir``; its run folder."""
    from moe_studio.engine.trainer import Trainer
    tr = Trainer(tiny_config(name, **over), runs_dir)
    while not tr.done:
        tr.step()
    tr.close()
    return tr.run_dir
