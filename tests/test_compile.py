"""train.compile: the compiled training path gives the eager losses, and a compiler
failure falls back to eager, recorded.

The compiled path is exercised with dynamo's "eager" backend (graph capture, guards and
graph breaks, without inductor's code generation): inductor takes minutes per model on
this CPU, too long for a test; the backend is one setting (MOE_STUDIO_COMPILE_BACKEND).
"""
import tempfile

import numpy as np
import pytest
import torch

from moe_studio.engine import compile as engine_compile
from moe_studio.engine.trainer import Trainer
from tiny import tiny_config

STEPS = 4


def _losses(cfg) -> tuple[list[float], "Trainer"]:
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, runs_dir=d)
        out = []
        for _ in range(STEPS):
            tr.step()
            out.append(tr.recorder.last_loss)
        tr.close("stopped", checkpoint=False)
    return out, tr


def _cfg(compile_mode: str, **over):
    return tiny_config(train__steps=STEPS, train__eval_every=100, train__snapshot_every=100,
                       precision__headroom=False, train__compile=compile_mode, **over)


@pytest.mark.parametrize("setting, device, expect", [
    ("auto", "cuda", True), ("auto", "cpu", False), ("on", "cpu", True), ("off", "cuda", False)])
def test_auto_compiles_on_cuda_only(setting, device, expect):
    assert engine_compile.compile_wanted(setting, torch.device(device)) is expect


@pytest.mark.parametrize("moe_layers", ["all", "none"])
def test_compiled_and_eager_training_give_the_same_losses(monkeypatch, moe_layers):
    monkeypatch.setattr(engine_compile, "BACKEND", "eager")
    eager, _ = _losses(_cfg("off", model__moe_layers=moe_layers))
    compiled, tr = _losses(_cfg("on", model__moe_layers=moe_layers))
    assert tr.compiled.active and tr.compiled.reason == "" and tr.compiled.seconds > 0
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def test_a_compiler_failure_falls_back_to_eager_with_the_reason(monkeypatch):
    def broken(self, *a, **kw):
        raise RuntimeError("no working C++ compiler\nfound")

    monkeypatch.setattr(torch.nn.Module, "compile", broken)
    eager, _ = _losses(_cfg("off"))
    fell_back, tr = _losses(_cfg("on"))
    assert not tr.compiled.active
    assert tr.compiled.reason == ("compile failed, training eager: RuntimeError: "
                                  "no working C++ compiler found")
    assert fell_back == eager     # eager again, bit for bit


def test_a_precision_monitor_blocks_compilation_with_a_reason():
    cfg = _cfg("on")
    cfg.precision.headroom = True
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, runs_dir=d)
        tr.close("stopped", checkpoint=False)
    assert not tr.compiled.active and "precision monitor" in tr.compiled.reason
