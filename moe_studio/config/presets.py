"""Named starting points for experiments. Each preset is a function of nothing that
returns a fresh, valid ExperimentConfig; the default experiment is ``default()``."""
from __future__ import annotations

from typing import Callable

from .schema import ExperimentConfig

# Monitor rates of every preset: measured on the default MoE at one CPU thread,
# headroom analysis costs about 1.3 steps per measurement and routing statistics about
# 10 % of a step when taken every step, so these rates keep each under ~3 % of the step
# time (bench engine / bench precision report the figures). The schema keeps 1 / 10
# so a hand-written config measures as often as it says.
PRESET_STATS_EVERY = 10
PRESET_HEADROOM_EVERY = 50


def _base(name: str) -> ExperimentConfig:
    c = ExperimentConfig(name=name)
    c.train.stats_every = PRESET_STATS_EVERY
    c.precision.headroom_every = PRESET_HEADROOM_EVERY
    return c


def default() -> ExperimentConfig:
    """The embedded default experiment: a small top-2 MoE on the built-in corpus."""
    return mixtral_top2()


def dense_baseline() -> ExperimentConfig:
    c = _base("dense-baseline")
    c.model.moe_layers = "none"
    return c


def switch_top1() -> ExperimentConfig:
    c = _base("switch-top1")
    c.moe.top_k = 1
    c.moe.renormalize = False
    c.moe.capacity_factor = 1.25
    c.moe.capacity_group = "sequence"   # Switch counts capacity per group (sequence)
    c.moe.d_expert = 512
    c.moe.jitter = 0.01
    return c


def mixtral_top2() -> ExperimentConfig:
    c = _base("mixtral-top2")
    c.moe.top_k = 2
    c.moe.n_experts = 8
    c.moe.d_expert = 256  # two active experts of 256 = the dense baseline's 512
    return c


def soft_gating() -> ExperimentConfig:
    c = _base("soft-gating")
    c.moe.router = "soft"
    c.moe.n_experts = 4
    c.moe.d_expert = 128  # four always-active experts of 128 = the dense 512
    c.moe.aux_loss_coef = 0.0
    return c


def fine_grained() -> ExperimentConfig:
    """DeepSeekMoE's layout at the default's active parameters: 24 narrow SwiGLU experts
    (width 56), 2 of them shared, top-4 of the rest. Per MoE block a token passes
    through router 128 x 24 + 6 experts x 3 x 128 x 56 = 132,096 parameters, exactly the
    default's router 128 x 8 + 2 experts x 2 x 128 x 256 (tests/test_fine_grained.py)."""
    c = ExperimentConfig(name="fine-grained-shared")
    c.moe.n_experts = 24
    c.moe.top_k = 4
    c.moe.n_shared = 2
    c.moe.d_expert = 56
    c.moe.expert_act = "swiglu"
    return c


def deepseek_v3() -> ExperimentConfig:
    """The fine-grained layout with DeepSeek-V3's gating: sigmoid scores, a selection
    bias balancing the load instead of the loss (whose weight drops to V3's 1e-4)."""
    c = fine_grained()
    c.name = "deepseek-v3-gating"
    c.moe.router = "sigmoid"
    c.moe.aux_loss_coef = 1e-4
    return c


def expert_choice() -> ExperimentConfig:
    """The default's experts, routed the other way round: each expert takes its
    T x 2 / 8 best tokens of the batch (see the router's caveat for a causal LM)."""
    c = mixtral_top2()
    c.name = "expert-choice"
    c.moe.router = "expert_choice"
    c.moe.aux_loss_coef = 0.0
    return c


def router_collapse() -> ExperimentConfig:
    """The default with nothing holding the router back: no balancing loss, no z-loss
    and ten times the learning rate. A few experts win early, get all the tokens and
    with them all the gradient; the rest never learn and go dead (the Experts view).
    On the tiny test model 6 of 8 experts per block are dead after 40 steps, where the
    default keeps all 8 busy (tests/test_collapse.py)."""
    c = mixtral_top2()
    c.name = "router-collapse"
    c.moe.aux_loss_coef = 0.0
    c.moe.z_loss_coef = 0.0
    c.train.lr = 3e-2
    c.train.min_lr = 3e-3
    return c


def staged() -> ExperimentConfig:
    """The default trained in three stages: the experts with the router frozen (the
    router's initial, nearly uniform choice spreads the tokens), then the router with
    the experts frozen, then both; the boundaries are marked on the time axes."""
    c = mixtral_top2()
    c.name = "staged"
    c.train.stages = "router:600, experts:400, none:1000"
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
    """fp16 with the router in half precision, a very high learning rate (0.1, no weight
    decay, no clipping, no z-loss) and a loss scale that tries to grow every 50 clean
    steps: the GradScaler overflows, skips steps and backs off. A small model (d_model
    64, 2 layers, 4 experts, context 32), because fp16 matmuls on a CPU are ~100x slower
    than fp32: 400 steps take about four minutes there.

    Measured on the CPU (seed 0; the ``fp16-overflow`` sample is this preset): 5
    skipped steps, the first two (steps 12 and 13) router gradients overflowing, which
    takes the loss scale down to 2^14. The same run with ``moe.router_fp32 = True``
    (sample ``fp16-router-fp32``) also skips 5 steps, none of them the router's, and its
    scale never falls below 2^15. The difference is modest and specific to this seed:
    the gate weights are cast to the experts' fp16 before they scale the expert outputs
    (``engine/dispatch.py``), so that product and its gradient overflow alike in both runs;
    a float32 router only keeps its own matmul and softmax out of fp16. Neither run makes
    inf/NaN activations; the tied embedding / LM head limits the scale most of the time."""
    c = mixtral_top2()
    c.name = "fp16-overflow"
    c.precision.mode = "fp16"
    c.precision.growth_interval = 50
    c.moe.router_fp32 = False
    c.moe.z_loss_coef = 0.0
    c.moe.n_experts = 4
    c.moe.d_expert = 128
    c.model.d_model = 64
    c.model.n_layers = 2
    c.model.n_heads = 2
    c.data.context = 32
    c.data.batch_size = 8
    c.train.steps = 400
    c.train.warmup_steps = 30
    c.train.lr = 0.1
    c.train.min_lr = 3e-3
    c.train.weight_decay = 0.0
    c.train.grad_clip = 0.0
    c.train.eval_batches = 2
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
    c = _base("moe-vs-ensemble-moe")
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


def samme_boosting() -> ExperimentConfig:
    """AdaBoost (SAMME) over 3 dense members trained in sequence: each member's weight
    alpha from its weighted top-1 error, tokens weighted by the alphas of the members
    that missed them, the ensemble the alpha-weighted vote."""
    c = dense_baseline()
    c.name = "samme-boosting-3"
    c.model.d_model, c.model.d_ff = 64, 256
    c.ensemble.members = 3
    c.ensemble.method = "boosting"
    c.ensemble.boost_mode = "samme"
    c.ensemble.combine = "samme"
    return c


def gradient_boosting() -> ExperimentConfig:
    """Gradient boosting on logits over 3 dense members: each fits the residual of the
    sum of the earlier members' logits; the ensemble is the sum."""
    c = samme_boosting()
    c.name = "gradient-boosting-3"
    c.ensemble.boost_mode = "gradient"
    c.ensemble.combine = "sum_logit"
    return c


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {
    "Mixtral-style top-2 (default)": mixtral_top2,
    "Dense baseline": dense_baseline,
    "Switch top-1": switch_top1,
    "Classic soft gating (all experts)": soft_gating,
    "Fine-grained + 2 shared SwiGLU experts (DeepSeekMoE)": fine_grained,
    "DeepSeek-V3 gating (sigmoid, selection bias)": deepseek_v3,
    "Expert-choice routing": expert_choice,
    "Router collapse demo (no balancing, high lr)": router_collapse,
    "Staged: experts, then router, then both": staged,
    "Noisy top-2 gating": noisy_topk,
    "Aux-loss-free balancing": aux_free,
    "fp16 overflow demo": fp16_overflow_demo,
    "4-member bagging ensemble": bagging_ensemble,
    "MoE vs ensemble: MoE of 4 experts": moe_vs_ensemble_moe,
    "MoE vs ensemble: 4 dense models, same parameters": moe_vs_ensemble_dense,
    "Boosting: AdaBoost-SAMME, 3 members": samme_boosting,
    "Boosting: gradient boosting on logits, 3 members": gradient_boosting,
}


# --- the time-to-quality recipe (``moe-studio bench time-to-quality``) ----------------
# Character-level tiny Shakespeare at the shape of the widely used minimal GPT trainers:
# 4 layers, 4 heads, d 128, context 64, batch 12, dropout 0, 2,000 steps, warm-up +
# cosine. The recipe's choices: the engine's AdamW (3e-3 -> 3e-4, 100 warm-up steps,
# decay 0.1, clip 1.0), fp32 on the CPU ("auto"), routing statistics every 10 steps,
# no headroom monitor (it measures, it does not train). The MoE is the default top-2 of
# 8 experts 256 wide (the dense model's active width), balancing loss 0.01, z-loss 1e-3.

def ttq_moe() -> ExperimentConfig:
    c = mixtral_top2()
    c.name = "ttq-moe"
    c.precision.headroom = False
    return c


def ttq_dense() -> ExperimentConfig:
    c = dense_baseline()
    c.name = "ttq-dense"
    c.precision.headroom = False
    return c
