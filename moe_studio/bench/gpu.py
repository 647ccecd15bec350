"""``moe-studio bench gpu``: tokens/s and model FLOPs utilisation (MFU) of a
~50 M-parameter MoE training in bf16 on one GPU, beside the dense model of equal active
parameters, through the real ``Trainer`` with its GPU defaults (precision "auto" = bf16
autocast, TF32, fused AdamW, compile "auto" = on, routing statistics at the presets'
rate, store writes).

MFU = achieved training FLOP/s / the GPU's peak dense bf16 rate. Training FLOPs per token
are the model's own count (``engine/flops.py``: matmuls only, 2 per multiply-add,
training = 3 x forward, active experts only), the convention of the scaling-law papers
and of nanoGPT/PaLM MFU. Two peaks are given: the datasheet's (where the GPU is in
``DATASHEET_BF16``) and the rate this run measured for one large bf16 matmul (what the
card reaches on the one operation it is best at), so the figure reads against both.

The two trainers take turns in blocks of steps after their warm-up (the compile time is
reported on its own), so anything else on the machine slows both alike. On a machine
without CUDA, ``--quick`` runs the same code on the CPU at tiny sizes (a smoke test);
without ``--quick`` it says a GPU is needed.
"""
from __future__ import annotations

import statistics
import tempfile
import time

import torch

from ..config import presets
from ..engine import expert_kernels
from ._common import SPARE_STEPS, Unavailable, load_average, ratio_ci, say

MFU_GOAL = 0.30
# Peak dense bf16 tensor-core FLOP/s by the vendors' datasheets (SXM parts, no sparsity).
DATASHEET_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12,
                  "A10": 125e12, "L4": 121e12, "RTX 4090": 165e12}

# The ~50 M-parameter MoE: 8 blocks, d_model 512, 8 heads, every block an MoE of 8 GELU
# experts 640 wide, top-2, context 1,024, 32 sequences per step (32,768 tokens).
FULL = dict(n_layers=8, d_model=512, n_heads=8, d_expert=640, context=1024, batch=32)
QUICK = dict(n_layers=2, d_model=64, n_heads=4, d_expert=64, context=32, batch=4)


def _configs(shape: dict, device: str, steps: int) -> dict:
    def common(c):
        c.model.n_layers, c.model.d_model, c.model.n_heads = (
            shape["n_layers"], shape["d_model"], shape["n_heads"])
        c.data.context, c.data.batch_size = shape["context"], shape["batch"]
        c.train.device = device
        c.train.steps = steps + SPARE_STEPS
        c.train.warmup_steps = 1
        c.train.eval_every = 10 ** 6
        c.train.snapshot_every = 10 ** 6
        c.train.checkpoint_every = 0
        c.precision.headroom = False    # measured on its own by ``bench precision``
        return c

    moe = common(presets.mixtral_top2())
    moe.moe.d_expert = shape["d_expert"]
    moe.model.d_ff = moe.moe.top_k * shape["d_expert"]
    moe.train.stats_every = 10
    dense = common(presets.dense_baseline())
    dense.model.d_ff = moe.model.d_ff        # equal active parameters
    return {"moe": moe, "dense": dense}


def _matmul_peak(device: torch.device, n: int) -> float:
    """FLOP/s of one n x n x n bf16 matmul on ``device`` (mean of ten after three warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 10 * 2 * n ** 3 / (time.perf_counter() - t0)


def datasheet_peak(name: str) -> float | None:
    """The datasheet bf16 peak of the GPU called ``name`` (None when not in the table)."""
    for key, flops in DATASHEET_BF16.items():
        if key.lower() in name.lower():
            return flops
    return None


def run(json_out: bool = True, quick: bool = False, steps: int | None = None) -> dict:
    from ..engine.trainer import Trainer

    cuda = torch.cuda.is_available()
    if not cuda and not quick:
        raise Unavailable("bench gpu needs a CUDA GPU (--quick runs it on the CPU at tiny sizes)")
    device = torch.device("cuda" if cuda else "cpu")
    shape = QUICK if quick else FULL
    block = 2 if quick else 10
    rounds = 2 if quick else (max(1, steps // block) if steps else 6)
    warmup = 2 if quick else 5
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    say(f"bench gpu: {name}, measuring the bf16 matmul peak")
    measured_peak = _matmul_peak(device, 256 if quick else 8192)
    sheet = datasheet_peak(name) if cuda else None
    load_before = load_average()
    out: dict = {"benchmark": "gpu", "device": name, "torch": torch.__version__,
                 "shape": shape, "tokens_per_step": shape["context"] * shape["batch"],
                 "steps_per_block": block, "rounds": rounds,
                 "peak_bf16_flops": {"datasheet": sheet, "measured_matmul": round(measured_peak)}}
    times: dict[str, list[float]] = {}
    info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as runs:
        trainers = {}
        try:
            for key, cfg in _configs(shape, device.type, warmup + block * rounds).items():
                say(f"bench gpu: building and compiling the {key} model")
                t0 = time.perf_counter()
                tr = Trainer(cfg, runs_dir=runs)
                build_s = time.perf_counter() - t0
                trainers[key] = tr
                t0 = time.perf_counter()
                for _ in range(warmup):
                    tr.step()
                info[key] = {
                    "params_total": tr.params.total, "params_active": tr.params.active,
                    "train_flops_per_token": tr.flops.train_active,
                    "precision": tr.config.precision.mode,   # what "auto" resolved to
                    "compiled": tr.compiled.active,
                    "compile_s": round(tr.compiled.seconds, 1),
                    "build_s": round(build_s, 1),
                    "warmup_s": round(time.perf_counter() - t0, 1)}
                times[key] = []
            for r in range(rounds):
                for key, tr in trainers.items():
                    t0 = time.perf_counter()
                    for _ in range(block):
                        tr.step()     # the trainer synchronises the GPU at each step's end
                    times[key].append((time.perf_counter() - t0) / block)
                say(f"bench gpu: round {r + 1}/{rounds}")
            if cuda:
                out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
        finally:
            for tr in trainers.values():
                tr.close("stopped")
    tokens = out["tokens_per_step"]
    for key, ts in times.items():
        step_s = statistics.median(ts)
        achieved = info[key]["train_flops_per_token"] * tokens / step_s
        info[key].update({
            "step_ms": round(1e3 * step_s, 2), "tokens_per_s": round(tokens / step_s),
            "achieved_tflops": round(achieved / 1e12, 1),
            "mfu_datasheet": round(achieved / sheet, 4) if sheet else None,
            "mfu_measured_peak": round(achieved / measured_peak, 4)})
    out["models"] = info
    out["moe_step_over_dense"] = round(ratio_ci(times["moe"], times["dense"])["median"], 3)
    out["expert_kernels_run"] = expert_kernels.kernels_run()
    out["load_avg_1m"] = [(la or [None])[0] for la in (load_before, load_average())]
    mfu = info["moe"]["mfu_datasheet"]
    out["budgets"] = {f"moe mfu >= {MFU_GOAL}": {
        "value": mfu, "verdict": ("n/a (GPU not in the datasheet table)" if mfu is None
                                  else "ok" if mfu >= MFU_GOAL else "missed")}}
    if not json_out:
        for k, v in out.items():
            print(f"{k}: {v}")
    return out
