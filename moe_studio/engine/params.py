"""Parameter counts from a config alone, without building the model (the setup form
updates them on every edit). ``tests/test_model.py`` checks them against
``sum(p.numel())`` of the built model."""
from __future__ import annotations

from dataclasses import dataclass

from ..config.schema import ExperimentConfig
from ..config.validate import parse_layer_set
VOCAB = 256
ACTIVATIONS = ("gelu", "swiglu")


def in_width(hidden: int, act: str) -> int:
    """Columns of an MLP's input matrix for ``hidden`` units: doubled for the gated MLP
    (gate and up projections side by side, see ``activations``)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    return 2 * hidden if act == "swiglu" else hidden


@dataclass(frozen=True)
class ParamCount:
    total: int    # every trainable parameter of one member
    active: int   # parameters a single token passes through (routed experts: top_k of them)
    members: int  # ensemble members; the run trains members x total

    @property
    def run_total(self) -> int:
        return self.total * self.members


def expert_hidden(cfg: ExperimentConfig) -> int:
    return cfg.moe.d_expert or cfg.model.d_ff


def count_params(cfg: ExperimentConfig) -> ParamCount:
    m, e = cfg.model, cfg.moe
    d = m.d_model
    embed = VOCAB * d + cfg.data.context * d          # token (tied with the LM head) + position
    norms = 2 * d                                     # final LayerNorm
    attn = 4 * d * d                                  # qkv + output projection, no bias
    block_fixed = attn + 2 * (2 * d)                  # + two LayerNorms (weight, bias)
    dense_ffn = d * (in_width(m.d_ff, m.ffn_act) + m.d_ff)
    moe_idx = set(parse_layer_set(m.moe_layers, m.n_layers))
    h = expert_hidden(cfg)
    one_expert = d * (in_width(h, e.expert_act) + h)
    router = d * e.n_experts * (2 if e.router == "noisy_topk" else 1)
    shared = e.n_shared * one_expert
    k_active = e.n_experts if e.router == "soft" else min(e.top_k, e.n_experts)
    total = embed + norms
    active = embed + norms
    for i in range(m.n_layers):
        total += block_fixed
        active += block_fixed
        if i in moe_idx:
            total += router + shared + e.n_experts * one_expert
            active += router + shared + k_active * one_expert
        else:
            total += dense_ffn
            active += dense_ffn
    return ParamCount(total=total, active=active, members=cfg.ensemble.members)
