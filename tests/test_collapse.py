"""The router-collapse preset: without a balancing loss and at a high learning rate
the load concentrates on a few experts and the others go dead, while the balanced
default keeps its experts busy. Loads counted here over the validation batches."""
from __future__ import annotations

import pytest
import torch

from moe_studio.config import presets
from moe_studio.engine.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _shrunk(cfg):
    cfg.data.context, cfg.data.batch_size = 16, 4
    cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads, cfg.model.d_ff = 2, 32, 2, 64
    cfg.moe.d_expert = 32
    cfg.train.steps, cfg.train.warmup_steps, cfg.train.device = 40, 0, "cpu"
    cfg.train.eval_every = cfg.train.snapshot_every = 1000
    cfg.train.eval_batches = 4
    return cfg


def _load_shares(cfg, tmp_path) -> list[list[float]]:
    tr = Trainer(cfg, runs_dir=tmp_path)
    while not tr.done:
        tr.step()
    model = tr.models[0].eval()
    counts: dict[int, list[int]] = {i: [0] * cfg.moe.n_experts for i in model.moe_blocks}
    with torch.no_grad():
        for x, _ in tr.val_batches:
            model(torch.from_numpy(x))
            for i, blk in model.moe_blocks.items():
                for e in blk.last.topk_idx.reshape(-1).tolist():
                    counts[i][e] += 1
    tr.close(checkpoint=False)
    return [[c / sum(row) for c in row] for row in counts.values()]


def test_collapse_preset_kills_experts_that_the_default_keeps(tmp_path):
    collapsed = _load_shares(_shrunk(presets.router_collapse()), tmp_path / "c")
    balanced = _load_shares(_shrunk(presets.default()), tmp_path / "b")
    dead = [sum(s < 0.02 for s in row) for row in collapsed]
    assert all(n >= 4 for n in dead), collapsed          # measured: 6 of 8 in each block
    assert all(sum(sorted(row)[-2:]) > 0.9 for row in collapsed)   # two experts take it all
    assert all(max(row) < 0.5 for row in balanced), balanced
    assert sum(s < 0.02 for row in balanced for s in row) < sum(dead)
