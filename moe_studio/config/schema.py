"""The experiment schema: plain dataclasses with defaults.

A config is data. Every knob is a dataclass field whose ``metadata`` carries what a
form needs to show it (``help`` text, numeric ``min``/``max``, ``choices``), so the
GUI setup panel and the validator both read the same source of truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, asdict, is_dataclass
from typing import Any


def knob(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple[str, ...] | None = None, kind: str | None = None,
         factory: Any = None) -> Any:
    """A dataclass field with form metadata.

    ``kind`` refines how a form shows it: ``"path"`` (file or folder picker),
    ``"layers"`` (a layer-set expression), ``"log"`` (a float best edited on a log scale).
    """
    meta = {"help": help, "min": min, "max": max, "choices": choices, "kind": kind}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


ROUTERS = ("topk", "noisy_topk", "soft", "aux_free", "sigmoid", "expert_choice")
# routers whose per-expert selection bias moves after every optimizer step
BIASED_ROUTERS = ("aux_free", "sigmoid")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENSEMBLE_METHODS = ("seeds", "bagging", "snapshot", "boosting")
BOOST_MODES = ("token_weights", "samme", "gradient")
COMBINE_RULES = ("mean_prob", "mean_logit", "vote", "sum_logit", "samme")
DEVICES = ("auto", "cpu", "cuda", "mps")
HEADROOM_FORMATS = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2")
FFN_ACTS = ("gelu", "swiglu")
CAPACITY_PRIORITIES = ("first_choice", "token_order")
CAPACITY_GROUPS = ("batch", "sequence")


@dataclass
class DataConfig:
    corpus: str = knob("embedded", "Training text: 'embedded' (the built-in prose + Python corpus), "
                       "a UTF-8 text file, or a folder where each file or subfolder is one domain.",
                       kind="path")
    context: int = knob(64, "Context window in tokens (bytes) seen by the model per sequence.",
                        min=8, max=4096)
    batch_size: int = knob(12, "Sequences per training step.", min=1, max=4096)
    val_fraction: float = knob(0.1, "Share of each domain's text held out for validation "
                               "(the last part of each domain, so the split is deterministic).",
                               min=0.01, max=0.5)
    probe_text: str = knob("", "Text routed through the model for the routing heatmaps. "
                           "Empty: a fixed sample with one passage per domain.")


@dataclass
class ModelConfig:
    n_layers: int = knob(4, "Number of transformer blocks.", min=1, max=64)
    n_heads: int = knob(4, "Attention heads per block; d_model must divide by it.", min=1, max=64)
    d_model: int = knob(128, "Width of the residual stream.", min=8, max=8192)
    d_ff: int = knob(512, "Hidden width of a dense feed-forward block (and of each expert "
                     "unless moe.d_expert is set).", min=8, max=65536)
    ffn_act: str = knob("gelu", "Dense feed-forward activation: gelu (two matrices) or swiglu "
                        "(gated, SiLU(x W_gate) * x W_up, three matrices of d_ff, as in "
                        "Llama and Mixtral).", choices=FFN_ACTS)
    dropout: float = knob(0.0, "Dropout probability in attention and feed-forward outputs.",
                          min=0.0, max=0.9)
    moe_layers: str = knob("all", "Which blocks use an MoE feed-forward: 'all', 'none', "
                           "'every_other' (1, 3, 5, ...), or a list of block indices such as '1,3'.",
                           kind="layers")


@dataclass
class MoEConfig:
    n_experts: int = knob(8, "Experts per MoE block.", min=1, max=256)
    top_k: int = knob(2, "Experts each token is sent to (1 = Switch). Ignored by the soft router, "
                      "which mixes all experts.", min=1, max=256)
    router: str = knob("topk", "topk: softmax then top-k; noisy_topk: Shazeer et al. 2017 noisy "
                       "gating; soft: dense mixture of all experts; aux_free: top-k with a "
                       "per-expert bias nudged towards balance instead of an auxiliary loss; "
                       "sigmoid: DeepSeek-V3, sigmoid scores, that bias used only to choose, "
                       "weights normalised over the chosen; expert_choice: each expert takes "
                       "its top tokens of the batch (capacity_factor x T x top_k / E each). "
                       "Caveat for a causal LM: with expert_choice a token's experts depend on "
                       "later tokens of the batch (a peek at the future), and generating one "
                       "token at a time routes differently from training.",
                       choices=ROUTERS)
    d_expert: int = knob(0, "Hidden width of each expert; 0 means model.d_ff.", min=0, max=65536)
    expert_act: str = knob("gelu", "Expert (and shared expert) activation: gelu, or swiglu, the "
                           "gated MLP of Mixtral, DeepSeekMoE, Qwen-MoE and OLMoE (1.5x the "
                           "parameters of a gelu expert of the same width).", choices=FFN_ACTS)
    renormalize: bool = knob(True, "Rescale the chosen top-k gate weights to sum to 1.")
    jitter: float = knob(0.0, "Multiplicative uniform noise on the router input during training "
                         "(Switch Transformer jitter, e.g. 0.01).", min=0.0, max=1.0)
    router_fp32: bool = knob(True, "Compute the router in float32 even under fp16/bf16 autocast "
                             "(selective precision).")
    n_shared: int = knob(0, "Always-on shared experts next to the routed ones (DeepSeekMoE), each "
                         "as wide as a routed expert; 0 = none.", min=0, max=64)
    capacity_factor: float = knob(0.0, "Expert capacity = factor x tokens x top_k / n_experts; "
                                  "tokens over capacity are dropped and pass through the residual. "
                                  "0 = dropless.", min=0.0, max=64.0)
    capacity_priority: str = knob("first_choice", "Which pairs a full expert keeps when top_k >= 2: "
                                  "first_choice serves every token's first choice before any "
                                  "second choice (GShard, fairseq); token_order walks the tokens "
                                  "in order, a token's second choice before the next token's first.",
                                  choices=CAPACITY_PRIORITIES)
    capacity_group: str = knob("batch", "Tokens over which capacity is counted: batch (the whole "
                               "batch, so later sequences lose more tokens) or sequence (each "
                               "sequence its own capacity, as Switch counts it per group).",
                               choices=CAPACITY_GROUPS)
    aux_loss_coef: float = knob(0.01, "Weight of the Switch load-balancing loss "
                                "E * sum_i f_i * P_i.", min=0.0, max=10.0, kind="log")
    z_loss_coef: float = knob(1e-3, "Weight of the ST-MoE router z-loss mean(logsumexp(logits)^2).",
                              min=0.0, max=10.0, kind="log")
    bias_update_rate: float = knob(1e-3, "aux_free and sigmoid routers: step by which each expert's bias moves "
                                   "against the sign of its load error after every step.",
                                   min=0.0, max=1.0, kind="log")
    noise_eps: float = knob(1e-2, "noisy_topk router: floor added to the learned noise scale.",
                            min=0.0, max=10.0)


@dataclass
class PrecisionConfig:
    mode: str = knob("auto", "Training precision: auto (bf16 autocast on a GPU that supports "
                     "it, else fp32), fp32, bf16 autocast, or fp16 autocast with dynamic loss "
                     "scaling.", choices=PRECISIONS)
    init_scale: float = knob(65536.0, "fp16: initial loss scale.", min=1.0, max=2.0 ** 32)
    growth_factor: float = knob(2.0, "fp16: factor the loss scale grows by after growth_interval "
                                "clean steps.", min=1.0, max=16.0)
    backoff_factor: float = knob(0.5, "fp16: factor the loss scale shrinks by after an inf/NaN "
                                 "gradient (the step is skipped).", min=0.01, max=0.99)
    growth_interval: int = knob(2000, "fp16: clean steps before the loss scale grows.",
                                min=1, max=1_000_000)
    headroom: bool = knob(True, "Measure per-module how close activations, gradients and "
                          "weights come to the limits of fp16, bf16 and fp8.")
    headroom_every: int = knob(10, "Steps between headroom measurements.", min=1, max=100_000)
    stop_on_nan: bool = knob(False, "Stop training at the first non-finite loss or gradient.")


@dataclass
class EnsembleConfig:
    members: int = knob(1, "Models trained together in one run (1 = no ensemble).", min=1, max=16)
    method: str = knob("seeds", "Diversity: seeds (different initialisations), bagging (bootstrap "
                       "resample of training windows per member), snapshot (cyclic learning "
                       "rate; members are snapshots), boosting (members in sequence, tokens "
                       "weighted by the ensemble-so-far's loss).", choices=ENSEMBLE_METHODS)
    boost_mode: str = knob("token_weights", "Boosting: token_weights (tokens weighted by "
                           "exp(beta x the ensemble-so-far's loss)), samme (AdaBoost for many "
                           "classes: member weights alpha from weighted error, tokens weighted "
                           "by the alphas of the members that missed them; combine = samme), "
                           "gradient (gradient boosting on logits: each member fits the "
                           "residual of the sum so far; combine = sum_logit).",
                           choices=BOOST_MODES)
    boost_beta: float = knob(0.5, "Boosting token_weights: beta in exp(beta x loss); 1 = the "
                             "exact mixture gradient, heavier-tailed.", min=0.0, max=10.0)
    combine: str = knob("mean_prob", "Rule for the run's headline ensemble val/loss and "
                        "val/acc: mean_prob, mean_logit, vote, sum_logit (gradient boosting), "
                        "samme (alpha-weighted vote; boosting with boost_mode samme).",
                        choices=COMBINE_RULES)


@dataclass
class TrainConfig:
    steps: int = knob(2000, "Optimizer steps.", min=1, max=10_000_000)
    lr: float = knob(3e-3, "Peak learning rate (AdamW).", min=0.0, max=10.0, kind="log")
    min_lr: float = knob(3e-4, "Learning rate at the end of the cosine decay.", min=0.0, max=10.0,
                         kind="log")
    warmup_steps: int = knob(100, "Linear warm-up steps before the cosine decay.",
                             min=0, max=10_000_000)
    weight_decay: float = knob(0.1, "AdamW weight decay (not applied to norms and biases).",
                               min=0.0, max=10.0)
    grad_clip: float = knob(1.0, "Clip the global gradient norm to this value; 0 = off.",
                            min=0.0, max=1e6)
    seed: int = knob(0, "Random seed for initialisation, batches and routing noise.",
                     min=0, max=2 ** 31 - 1)
    device: str = knob("auto", "auto picks cuda, then mps, then cpu.", choices=DEVICES)
    eval_every: int = knob(100, "Steps between validation evaluations.", min=1, max=10_000_000)
    eval_batches: int = knob(8, "Validation batches per evaluation.", min=1, max=10_000)
    log_every: int = knob(1, "Steps between recorded training statistics.", min=1, max=100_000)
    snapshot_every: int = knob(50, "Steps between routing snapshots of the probe text and "
                               "router-probability histograms.", min=1, max=10_000_000)
    checkpoint_every: int = knob(0, "Steps between checkpoints; 0 = only at the end or on stop.",
                                 min=0, max=10_000_000)
    collect_stats: bool = knob(True, "Record per-layer routing statistics every log step.")
    stages: str = knob("", "Training in stages, each freezing parts for some steps: what:steps items, "
                       "e.g. 'router:300, experts:200, none:500' trains the experts first (router "
                       "frozen), then the router (experts frozen), then both. Parts: router, "
                       "experts, attention, embeddings, joined by +. Empty: one stage, nothing "
                       "frozen; after the last stage nothing is frozen.")
    compile: str = knob("auto", "torch.compile the training forward: auto = on CUDA only "
                        "(on the CPU compiling takes minutes and gained nothing measured); "
                        "falls back to eager, recorded, if compiling fails.",
                        choices=("auto", "on", "off"))
    stats_every: int = knob(1, "Routing statistics on every this many steps (of those that "
                            "log); they cost ~10 % of an MoE step when taken every step.",
                            min=1, max=100_000)


@dataclass
class ParallelConfig:
    processes: int = knob(1, "Local processes to train on (torch.distributed.run starts them; "
                          "1 = one process). On a cluster, start the ranks with torchrun instead.",
                          min=1, max=64)
    data: str = knob("auto", "Data-parallel size: how many copies of each expert there are. "
                     "'auto' = world size / parallel.expert. Every rank reads its own shard, so "
                     "a step sees data.batch_size x world size sequences.")
    expert: int = knob(1, "Expert-parallel size: the ranks each MoE layer's experts are spread "
                       "over (each holds moe.n_experts / expert of them).", min=1, max=256)
    timeout_s: float = knob(120.0, "Seconds a rank waits for the others in a collective "
                            "before giving up (a dead or stuck rank ends the run).",
                            min=5.0, max=86400.0)


@dataclass
class ExperimentConfig:
    name: str = knob("default", "A short name for the run; used in the run folder name.")
    data: DataConfig = knob(None, "", factory=DataConfig)
    model: ModelConfig = knob(None, "", factory=ModelConfig)
    moe: MoEConfig = knob(None, "", factory=MoEConfig)
    precision: PrecisionConfig = knob(None, "", factory=PrecisionConfig)
    ensemble: EnsembleConfig = knob(None, "", factory=EnsembleConfig)
    train: TrainConfig = knob(None, "", factory=TrainConfig)
    parallel: ParallelConfig = knob(None, "", factory=ParallelConfig)


SECTIONS = ("data", "model", "moe", "precision", "ensemble", "train", "parallel")


def section_fields(section: str):
    """The dataclass fields of one config section, in declaration order."""
    cls = {f.name: f for f in fields(ExperimentConfig)}[section].default_factory
    return fields(cls)


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as nested plain dicts (section -> key -> value)."""
    return asdict(cfg)


def is_section(obj: Any) -> bool:
    return is_dataclass(obj) and not isinstance(obj, type)
