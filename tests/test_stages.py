"""Staged training: each stage's frozen parameters stay bit-identical while the others
move, boundaries are recorded (run meta and events), and bad stage lists get one-line
messages naming train.stages."""
from __future__ import annotations

import pytest
import torch

from moe_studio.config import ConfigError, problems
from moe_studio.engine.trainer import Trainer
from moe_studio.store.reader import open_run
from tiny import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before, after, pick):
    return {n: not torch.equal(before[n], after[n]) for n in before if pick(n)}


def test_stages_freeze_what_they_name_and_are_recorded(tmp_path):
    cfg = tiny_config(train__stages="router:2, experts+attention:2, none:1", train__steps=6,
                      moe__router="aux_free", train__warmup_steps=0)
    tr = Trainer(cfg, runs_dir=tmp_path)
    model = tr.models[0]
    is_router = lambda n: ".router." in n                       # noqa: E731
    is_expert = lambda n: n.endswith((".ffn.w1", ".ffn.w2"))    # noqa: E731
    is_attn = lambda n: ".attn." in n                           # noqa: E731
    bias = model.router_biases().clone()

    s0 = _snapshot(model)
    tr.step(), tr.step()
    s1 = _snapshot(model)
    assert not any(_changed(s0, s1, is_router).values())        # router frozen ...
    assert torch.equal(model.router_biases(), bias)             # ... its bias too
    assert all(_changed(s0, s1, is_expert).values())
    tr.step(), tr.step()
    s2 = _snapshot(model)
    assert not any(_changed(s1, s2, is_expert).values())
    assert not any(_changed(s1, s2, is_attn).values())
    assert all(_changed(s1, s2, is_router).values())
    tr.step(), tr.step()
    s3 = _snapshot(model)
    assert all(_changed(s2, s3, lambda n: is_expert(n) or is_attn(n) or is_router(n)).values())
    tr.close(checkpoint=False)

    run = open_run(tr.run_dir)
    assert run.meta["stages"] == [{"start": 0, "end": 2, "freeze": ["router"]},
                                  {"start": 2, "end": 4, "freeze": ["experts", "attention"]},
                                  {"start": 4, "end": 5, "freeze": []}]
    ev = run.events(["stage"])
    assert ev["step"].tolist() == [0, 2, 4, 5]


@pytest.mark.parametrize("text, fragment", [
    ("router", "must be what:steps"),
    ("router:x", "not a whole number"),
    ("router:0", "at least 1 step"),
    ("gate:10", "freezes 'gate'"),
    ("router:10, none:10", "more than train.steps"),
])
def test_bad_stages_are_named(text, fragment):
    errs = problems(tiny_config(train__stages=text, train__steps=12))
    assert len(errs) == 1 and isinstance(errs[0], ConfigError)
    assert errs[0].path == "train.stages" and fragment in errs[0].message
