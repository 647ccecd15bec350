"""Named starting points for experiments. Each preset is a function of nothing that
returns a fresh, valid ExperimentConfig; the default experiment is ``default()``."""
from __future__ import annotations

from typing import Callable

from .schema import ExperimentConfig


def default() -> ExperimentConfig:
    """The embedded default experiment: a small top-2 MoE on the built-in corpus."""
    return mixtral_top2()


def dense_baseline() -> ExperimentConfig:
    c = ExperimentConfig(name="dense-baseline")
    c.model.moe_layers = "none"
    return c


def switch_top1() -> ExperimentConfig:
    c = ExperimentConfig(name="switch-top1")
    c.moe.top_k = 1
    c.moe.renormalize = False
    c.moe.capacity_factor = 1.25
    c.moe.d_expert = 512
    c.moe.jitter = 0.01
    return c


def mixtral_top2() -> ExperimentConfig:
    c = ExperimentConfig(name="mixtral-top2")
    c.moe.top_k = 2
    c.moe.n_experts = 8
    c.moe.d_expert = 256  # two active experts of 256 = the dense baseline's 512
    return c


def soft_gating() -> ExperimentConfig:
    c = ExperimentConfig(name="soft-gating")
    c.moe.router = "soft"
    c.moe.n_experts = 4
    c.moe.d_expert = 128  # four always-active experts of 128 = the dense 512
    c.moe.aux_loss_coef = 0.0
    return c


def noisy_topk() -> ExperimentConfig:
    c = mixtral_top2()
    c.name = "noisy-top2"
    c.moe.router = "noisy_topk"
    return c


def aux_free() -> ExperimentConfig:
    c = mixtral_top2()
    c.name = "aux-free-top2"
    c.moe.router = "aux_free"
    c.moe.aux_loss_coef = 0.0
    return c


def fp16_overflow_demo() -> ExperimentConfig:
    """fp16 with the router in half precision and a high learning rate: overflows."""
    c = mixtral_top2()
    c.name = "fp16-overflow"
    c.precision.mode = "fp16"
    c.moe.router_fp32 = False
    c.moe.z_loss_coef = 0.0
    c.train.lr = 3e-2
    c.train.min_lr = 3e-3
    c.train.grad_clip = 0.0
    c.precision.headroom_every = 5
    return c


def bagging_ensemble() -> ExperimentConfig:
    c = dense_baseline()
    c.name = "bagging-4"
    c.ensemble.members = 4
    c.ensemble.method = "bagging"
    c.model.d_model = 64
    c.model.d_ff = 256
    return c


def moe_vs_ensemble_moe() -> ExperimentConfig:
    """One half of a matched pair: an MoE of 4 experts (top-2, d_expert 256, d_model 128,
    4 layers) with 1,356,032 parameters (831,744 active per token). Its partner,
    ``moe_vs_ensemble_dense``, is an ensemble of 4 dense models with 1,358,592 in all
    (``engine.params.count_params``; tests/test_ensemble.py keeps them within 1%)."""
    c = ExperimentConfig(name="moe-vs-ensemble-moe")
    c.moe.n_experts = 4
    c.moe.top_k = 2
    c.moe.d_expert = 256
    return c


def moe_vs_ensemble_dense() -> ExperimentConfig:
    """The other half: 4 dense models (seeds) of d_model 96, d_ff 208, 339,648
    parameters each, 1,358,592 together: the same parameter budget as
    ``moe_vs_ensemble_moe``, spent on 4 whole models instead of 4 experts (every token
    passes through all of them)."""
    c = dense_baseline()
    c.name = "moe-vs-ensemble-dense"
    c.ensemble.members = 4
    c.ensemble.method = "seeds"
    c.model.d_model = 96
    c.model.d_ff = 208
    return c


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {
    "Mixtral-style top-2 (default)": mixtral_top2,
    "Dense baseline": dense_baseline,
    "Switch top-1": switch_top1,
    "Classic soft gating (all experts)": soft_gating,
    "Noisy top-2 gating": noisy_topk,
    "Aux-loss-free balancing": aux_free,
    "fp16 overflow demo": fp16_overflow_demo,
    "4-member bagging ensemble": bagging_ensemble,
    "MoE vs ensemble: MoE of 4 experts": moe_vs_ensemble_moe,
    "MoE vs ensemble: 4 dense models, same parameters": moe_vs_ensemble_dense,
}
