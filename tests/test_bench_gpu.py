"""``bench gpu`` (tokens/s and MFU of a ~50 M-parameter MoE in bf16): its arithmetic,
checked on the CPU at tiny sizes, and its one-line refusal without a GPU."""
import subprocess
import sys

import pytest
import torch

from moe_studio.bench import gpu
from moe_studio.engine.flops import count_flops
from moe_studio.engine.model import MoEGPT


def test_full_shape_is_a_50m_moe_with_a_dense_twin_of_equal_active_parameters():
    cfgs = gpu._configs(gpu.FULL, "cpu", 10)
    moe, dense = (MoEGPT(cfgs[k].model, cfgs[k].moe, context=cfgs[k].data.context)
                  for k in ("moe", "dense"))
    total = sum(p.numel() for p in moe.parameters())
    assert 45e6 < total < 55e6
    fm, fd = count_flops(moe, gpu.FULL["context"]), count_flops(dense, gpu.FULL["context"])
    assert fm.forward_active == pytest.approx(fd.forward_active, rel=0.01)   # router only
    s = gpu.FULL   # the six idle experts of each layer: two matrices d x h each, 2 FLOPs per MAC
    idle = s["n_layers"] * 6 * 2 * (2 * s["d_model"] * s["d_expert"])
    assert fm.forward_total - fm.forward_active == idle


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run")
def test_quick_run_reports_mfu_as_achieved_over_peak():
    r = gpu.run(json_out=True, quick=True)
    tokens = r["tokens_per_step"]
    for m in r["models"].values():
        achieved = m["train_flops_per_token"] * tokens / (m["step_ms"] / 1e3)
        # step_ms is rounded to 0.01 ms: tokens/s agrees within what that rounding allows
        slack = tokens / ((m["step_ms"] - 0.005) / 1e3) - tokens / (m["step_ms"] / 1e3)
        assert m["tokens_per_s"] == pytest.approx(tokens / (m["step_ms"] / 1e3), abs=slack + 1)
        mfu = achieved / r["peak_bf16_flops"]["measured_matmul"]
        # reported to 4 decimals, from the unrounded step time
        assert m["mfu_measured_peak"] == pytest.approx(mfu, abs=5e-5 + mfu * 0.006 / m["step_ms"])
        assert m["mfu_datasheet"] is None          # a CPU has no datasheet entry
    assert r["budgets"]["moe mfu >= 0.3"]["value"] is None


def test_datasheet_peak_matches_names_as_torch_reports_them():
    assert gpu.datasheet_peak("NVIDIA H200") == gpu.datasheet_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert gpu.datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu.datasheet_peak("Some Future GPU") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_a_gpu_the_cli_says_so_in_one_line():
    p = subprocess.run([sys.executable, "-m", "moe_studio", "bench", "gpu"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        "moe-studio bench gpu: bench gpu needs a CUDA GPU (--quick runs it on the CPU at tiny sizes)")
