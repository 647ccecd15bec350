"""What a config needs in memory, estimated from the config alone before anything is
allocated, so a run that cannot fit is refused with a sentence instead of dying in an
allocator (or the OOM killer) minutes later.

The estimate is deliberately a lower bound: only terms that certainly exist, at their
smallest size (float32 training state, the activations a backward pass must keep, the
fixed evaluation batches). A config refused here cannot run on the machine; one that
passes may still be tight.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..config.schema import ExperimentConfig
from ..config.validate import ConfigError, parse_layer_set
from .params import VOCAB, count_params, expert_hidden

_F32 = 4
_I64 = 8


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per term; ``total`` is their sum."""
    terms: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.terms.values())

    @property
    def largest(self) -> tuple[str, int]:
        return max(self.terms.items(), key=lambda kv: kv[1])


def corpus_bytes(spec: str) -> int:
    """Size in bytes of the corpus file, or of the files in a corpus folder (0 for the
    embedded corpus, or what cannot be measured: loading it will say why)."""
    spec = spec.strip()
    if not spec or spec == "embedded":
        return 0
    try:
        p = os.path.expanduser(spec)
        if os.path.isfile(p):
            return os.path.getsize(p)
        total = 0
        for root, _dirs, files in os.walk(p):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
        return total
    except (OSError, ValueError, RuntimeError):
        return 0


def estimate(cfg: ExperimentConfig, corpus_size: int = 0) -> MemoryEstimate:
    """A lower bound of the memory (bytes) a training run of ``cfg`` needs.

    - parameters: weights, gradients and AdamW's two moments, float32, per member
      (16 bytes per parameter)
    - activations: per block the residual stream, attention q/k/v/output and the
      feed-forward hidden layer (each token's top_k experts) kept for the backward pass,
      plus the logits and their gradient, for one batch of every member
    - evaluation batches: the fixed validation windows (int64 inputs and targets),
      built once at start
    - corpus: ``corpus_size`` bytes of text held as the bytes read, the uint8 tokens and
      their uint8 domain labels; bagging adds each member's bootstrap window starts
      (int64 per token)
    """
    p = count_params(cfg)
    m, d = cfg.model, cfg.data
    members = cfg.ensemble.members
    tokens = d.batch_size * d.context
    moe_blocks = set(parse_layer_set(m.moe_layers, m.n_layers))
    h_routed = expert_hidden(cfg) * (cfg.moe.n_experts if cfg.moe.router == "soft" else cfg.moe.top_k)
    per_token = 0
    for b in range(m.n_layers):
        hidden = h_routed if b in moe_blocks else m.d_ff
        per_token += 6 * m.d_model + 2 * hidden  # x, ln, q, k, v, attn out; ffn in + act
    activations = members * tokens * (per_token + 2 * VOCAB) * _F32
    bagging = cfg.ensemble.method == "bagging" and members > 1
    return MemoryEstimate({
        "parameters and optimizer state": members * p.total * 4 * _F32,
        "activations": activations,
        "evaluation batches": 2 * cfg.train.eval_batches * tokens * _I64,
        "corpus": corpus_size * (3 + (members * _I64 if bagging else 0)),
    })


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def check_fits(cfg: ExperimentConfig, available: int | None = None, where: str = "this machine") -> None:
    """Raise ConfigError when ``cfg`` needs more than ``available`` bytes (default: the
    machine's physical memory), naming the largest term and the memory there is."""
    available = machine_memory() if available is None else available
    if not available:
        return
    est = estimate(cfg, corpus_bytes(cfg.data.corpus))
    if est.total <= available:
        return
    term, size = est.largest
    key = {"parameters and optimizer state": "model size / ensemble.members",
           "activations": "data.batch_size x data.context",
           "evaluation batches": "train.eval_batches x data.batch_size x data.context",
           "corpus": "the corpus (data.corpus) or, for bagging, ensemble.members"}[term]
    raise ConfigError("memory", f"this config needs at least {fmt_bytes(est.total)} of memory, "
                                f"{where} has {fmt_bytes(available)}; the largest part is "
                                f"{term}, {fmt_bytes(size)}: reduce {key}")


def fit_problems(cfg: ExperimentConfig, available: int | None = None) -> list[ConfigError]:
    """:func:`check_fits` as a list of problems (empty: it fits), for forms that show
    every problem at once before anything starts."""
    try:
        check_fits(cfg, available)
    except ConfigError as e:
        return [e]
    return []
