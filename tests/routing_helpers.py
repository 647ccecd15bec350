"""A tiny real run for the routing tests: two domains (prose, code), 2 MoE layers x 4
experts, top-2 with the aux-loss-free balancer and a capacity limit (so biases and
drops are recorded), probe snapshots every 3 steps, checkpoints at steps 6 and 12."""
from __future__ import annotations

from pathlib import Path

import tiny
from moe_studio.config import ExperimentConfig

PROSE = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
         "it was the age of foolishness, it was the epoch of belief. ") * 30
CODE = ("def area(r):\n    return 3.14159 * r ** 2\n\nfor i in range(10):\n"
        "    print({'i': i, 'a': area(i)})\n") * 30


def routing_config(corpus: Path) -> ExperimentConfig:
    return tiny.tiny_config("tiny-routing", data__corpus=str(corpus), moe__router="aux_free",
                            moe__capacity_factor=1.0, train__eval_batches=1,
                            train__snapshot_every=3, train__checkpoint_every=6)


def train_tiny_run(tmp: Path):
    """Train the tiny run under ``tmp``; returns the (closed) Trainer, whose models
    still route (``trainer.route_tokens``)."""
    from moe_studio.engine.trainer import Trainer

    corpus = tmp / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "prose.txt").write_text(PROSE, encoding="utf-8")
    (corpus / "python.py").write_text(CODE, encoding="utf-8")
    tr = Trainer(routing_config(corpus), runs_dir=tmp / "runs")
    while not tr.done:
        tr.step()
    tr.close("finished")
    return tr
