"""GPU defaults without a GPU: "auto" precision resolves per device (the capability
check mocked), TF32 only on CUDA, and a CPU run stores the precision it trained in."""
import tempfile

import pytest
import torch

from moe_studio.config import ExperimentConfig
from moe_studio.engine import amp
from moe_studio.engine.trainer import Trainer
from tiny import tiny_config


@pytest.mark.parametrize("device, bf16_ok, expect", [
    ("cuda", True, "bf16"),     # Ampere and later
    ("cuda", False, "fp32"),    # older GPUs: no bf16
    ("cpu", True, "fp32"),      # bf16 matmuls are slow on most CPUs
    ("mps", True, "fp32"),      # no bf16 autocast on mps
])
def test_auto_precision_resolves_per_device(monkeypatch, device, bf16_ok, expect):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert amp.resolve_precision("auto", torch.device(device)) == expect
    for explicit in ("fp32", "bf16", "fp16"):
        assert amp.resolve_precision(explicit, torch.device(device)) == explicit


def test_auto_is_the_default_precision():
    assert ExperimentConfig().precision.mode == "auto"


def test_tf32_is_switched_on_for_cuda_only():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        assert amp.device_defaults(torch.device("cpu")) == {}
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert amp.device_defaults(torch.device("cuda")) == {"tf32": True}
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_a_cpu_run_with_auto_precision_trains_and_stores_fp32():
    cfg = tiny_config(train__steps=2, precision__mode="auto", precision__headroom=False)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, runs_dir=d)
        tr.step()
        tr.close("stopped", checkpoint=False)
    assert tr.config.precision.mode == "fp32" and tr.precision == "fp32"
    assert not tr.scalers[0].is_enabled()
    assert cfg.precision.mode == "auto"      # the caller's config is left as it was
