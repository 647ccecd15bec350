"""FLOPs per token of a built model, read off its modules.

Convention (the one ``torch.utils.flop_counter.FlopCounterMode`` and the scaling-law
papers use): only matrix products count, 2 FLOPs per multiply-add; norms, activations,
softmaxes and the embedding lookup are left out (they are O(d) per token against the
O(d^2) of the matmuls). Per token of a sequence of T tokens:

- every ``nn.Linear`` outside the experts (attention q/k/v and output, dense FFNs,
  routers, shared experts): ``2 * in * out``;
- attention scores and the weighted sum of values: ``4 * T * d_model`` per layer, over
  the whole T x T matrix as FlopCounterMode counts ``scaled_dot_product_attention``
  (the causal mask makes half of it useless work, not less work);
- the tied LM head: ``2 * d_model * vocab``;
- the experts of an MoE block: ``2 * (parameters of one expert)``, for the ``top_k``
  experts a token goes to (*active*) or for all ``n_experts`` (*total*: what a dense
  model with every expert applied to every token would cost). Any stacked expert
  weight [E, ...] counts, so gated (SwiGLU) experts with three matrices are counted
  by the same rule. Capacity drops make the real count a little lower; the nominal
  one is what compares across configs.
- expert-choice routing is the exception: there the experts pick the tokens, each
  expert runs on exactly ``C = min(N, ceil(factor * N * k / E))`` of the ``N`` tokens
  routed together (``ExpertChoiceRouter.capacity``; factor 1 when unset), whatever the
  router's probabilities, so a token costs ``E * C / N`` experts on average, not
  ``top_k`` (2.5 experts at k = 2, factor 1.25). ``N`` is the tokens of one forward:
  ``batch_tokens`` (the trainer passes batch_size x context), one sequence by default.

Training is counted as 3 x forward (the backward computes the gradient with respect
to both the input and the weights of every matmul, each as costly as the forward).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

import torch.nn as nn

from .model import CausalSelfAttention, MoEGPT
from .moe_layer import MoEFeedForward
from .routers import ExpertChoiceRouter

TRAIN_FACTOR = 3
CONVENTION = ("matmul FLOPs only, 2 per multiply-add (FlopCounterMode's convention); "
              "attention over the full T x T score matrix; training = 3 x forward")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per token of one model (one ensemble member)."""
    forward_active: float  # what one token costs, routed experts at top_k (expert
    #                        choice: at E * C / N, a fraction when C * E is not a multiple of N)
    forward_total: int     # as if every expert saw every token
    context: int           # the sequence length T the attention term was counted at
    batch_tokens: int = 0  # N, tokens per forward (expert choice's capacity); 0: not given

    @property
    def train_active(self) -> int:
        return TRAIN_FACTOR * self.forward_active

    @property
    def train_total(self) -> int:
        return TRAIN_FACTOR * self.forward_total

    def as_meta(self) -> dict:
        return {**asdict(self), "train_active": self.train_active,
                "train_total": self.train_total, "convention": CONVENTION}


def _expert_params(block: MoEFeedForward) -> int:
    """Parameters of one routed expert: the stacked [E, ...] weights divided by E."""
    E = block.n_experts
    n = sum(p.numel() for name, p in block.named_parameters(recurse=False)
            if p.dim() >= 3 and p.shape[0] == E)
    return n // E


def _active_experts(block: MoEFeedForward, n_tokens: int) -> tuple[int, int]:
    """Expert applications per token as a fraction (numerator, denominator): ``top_k``,
    or for expert choice ``E * C / N`` with ``N = n_tokens``."""
    if isinstance(block.router, ExpertChoiceRouter):
        return block.n_experts * block.router.capacity(n_tokens), n_tokens
    return min(int(getattr(block, "top_k", block.n_experts)), block.n_experts), 1


def count_flops(model: MoEGPT, context: int | None = None,
                batch_tokens: int | None = None) -> FlopCount:
    """FLOPs per token of ``model``'s forward on sequences of ``context`` tokens (the
    model's own context by default), ``batch_tokens`` tokens per forward (one sequence
    by default: it matters to expert choice only); see the module doc for what counts."""
    T = int(context or model.context)
    N = int(batch_tokens or T)
    linear = 0
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            linear += 2 * mod.in_features * mod.out_features
    attn = sum(4 * T * (m.qkv.in_features) for m in model.modules()
               if isinstance(m, CausalSelfAttention))
    head = 2 * model.tok_emb.embedding_dim * model.vocab
    active = total = linear + attn + head
    routed = Fraction(0)   # exact: E * C * per_expert / N need not be a whole number
    for block in model.moe_blocks.values():
        per_expert = 2 * _expert_params(block)
        num, den = _active_experts(block, N)
        routed += Fraction(num * per_expert, den)
        total += block.n_experts * per_expert
    active_all = active + routed
    active_out = int(active_all) if active_all.denominator == 1 else float(active_all)
    return FlopCount(forward_active=active_out, forward_total=total, context=T,
                     batch_tokens=N)


def step_flops(count: FlopCount, tokens: int, models: int, extra_forwards: int = 0) -> float:
    """Training FLOPs of one optimizer step: ``models`` members each training on
    ``tokens`` tokens, plus ``extra_forwards`` no-grad forwards of the same tokens
    (a boosting member's pass of the ensemble so far). Evaluation is not counted."""
    return float(tokens) * (models * count.train_active + extra_forwards * count.forward_active)


def achieved_flops_per_s(flops_per_token: float, tokens: float, seconds: float) -> float:
    """FLOP/s achieved when ``tokens`` tokens, each costing ``flops_per_token``, took
    ``seconds``."""
    return flops_per_token * tokens / max(seconds, 1e-9)
