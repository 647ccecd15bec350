"""A tiny real run for the routing tests: two domains (prose, code), 2 MoE layers x 4
experts, top-2 with the aux-loss-free balancer and a capacity limit (so biases and
drops are recorded), probe snapshots every 3 steps, checkpoints at steps 6 and 12."""
from __future__ import annotations

from pathlib import Path

from moe_studio.config import ExperimentConfig

PROSE = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
         "it was the age of foolishness, it was the epoch of belief. ") * 30
CODE = ("def area(r):\n    return 3.14159 * r ** 2\n\nfor i in range(10):\n"
        "    print({'i': i, 'a': area(i)})\n") * 30


def tiny_config(corpus: Path) -> ExperimentConfig:
    c = ExperimentConfig(name="tiny-routing")
    c.data.corpus = str(corpus)
    c.data.context = 16
    c.data.batch_size = 4
    c.model.n_layers = 2
    c.model.d_model = 32
    c.model.n_heads = 2
    c.model.d_ff = 64
    c.moe.n_experts = 4
    c.moe.top_k = 2
    c.moe.router = "aux_free"
    c.moe.capacity_factor = 1.0
    c.train.steps = 12
    c.train.warmup_steps = 2
    c.train.eval_every = 6
    c.train.eval_batches = 1
    c.train.snapshot_every = 3
    c.train.checkpoint_every = 6
    c.train.device = "cpu"
    return c


def train_tiny_run(tmp: Path):
    """Train the tiny run under ``tmp``; returns the (closed) Trainer, whose models
    still route (``trainer.route_tokens``)."""
    from moe_studio.engine.trainer import Trainer

    corpus = tmp / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "prose.txt").write_text(PROSE, encoding="utf-8")
    (corpus / "python.py").write_text(CODE, encoding="utf-8")
    tr = Trainer(tiny_config(corpus), runs_dir=tmp / "runs")
    while not tr.done:
        tr.step()
    tr.close("finished")
    return tr
