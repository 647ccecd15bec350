"""fp16 loss scaling under expert parallelism on 2 gloo ranks: an overflow in one rank's
experts makes every rank skip that step, as one process training the whole batch skips
it; the ranks' loss scales stay equal and their replicated weights identical."""
from __future__ import annotations

import json
import math

import numpy as np
import torch

from moe_studio.config import save
from moe_studio.engine.trainer import Trainer

from test_parallel import torchrun
from test_parallel_training import only_run
from tiny import tiny_config

STEPS = 8
PLANT = 7    # after the scale has come down from 2^18: a step that would be taken


def config(batch: int, **over):
    # 2^18 overflows some of the first steps' fp16 gradients on its own (the scale backs off)
    return tiny_config("fp16-ep", train__steps=STEPS, data__batch_size=batch,
                       precision__mode="fp16", precision__init_scale=2.0 ** 18,
                       train__warmup_steps=0, train__eval_every=STEPS,
                       train__snapshot_every=STEPS, moe__capacity_factor=0.0, **over)


def one_process(tmp_path):
    """Scales and moved-flags of one process on the global batch, the same inf planted."""
    t = Trainer(config(8), runs_dir=tmp_path / "one")
    model = t.models[0]
    armed = {"on": False}
    model.moe_blocks[min(model.moe_blocks)].w1.register_hook(
        lambda g: g * math.inf if armed["on"] else g)
    scales, moved = [], []
    while not t.done:
        armed["on"] = t.step_count + 1 == PLANT
        before = model.tok_emb.weight.detach().clone()
        t.step()
        scales.append(t.scalers[0].get_scale())
        moved.append(not torch.equal(before, model.tok_emb.weight.detach()))
    t.close("finished")
    return scales, moved


def test_every_rank_skips_the_step_one_rank_overflowed(tmp_path):
    toml = tmp_path / "fp16.toml"
    save(config(4, parallel__expert=2), toml)
    out = torchrun("fp16_ep_check.py", str(tmp_path / "ranks"), str(toml), str(PLANT))
    line = next(x for x in out.splitlines() if x.startswith("fp16ep "))
    r0, r1 = json.loads(line[len("fp16ep "):])
    assert r0["scales"] == r1["scales"] and r0["moved"] == r1["moved"]
    assert r0["digest"] == r1["digest"]          # the replicas did not part
    skipped = [s + 1 for s, m in enumerate(r0["moved"]) if not m]
    assert PLANT in skipped and 1 in skipped     # the planted inf and the scale's own overflow
    assert len(skipped) < STEPS - 1              # and training went on between them
    scales, moved = one_process(tmp_path)
    assert r0["scales"] == scales and r0["moved"] == moved
    run = only_run(tmp_path / "ranks")
    s = run.scalars(["precision/loss_scale"]).sort_values("step")
    np.testing.assert_array_equal(s.value.to_numpy(), scales)
    ev = run.events(["loss_scale_backoff"])
    assert sorted(ev.step.tolist()) == skipped
