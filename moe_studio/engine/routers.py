"""Routers: for every token, which experts it goes to and with what gate weight.

All routers share one linear gate ``d_model -> n_experts`` (no bias) and differ in how
they turn its logits into choices and weights:

- ``topk``: softmax, then the k most probable experts (k = 1 is the Switch router);
  the kept weights are optionally renormalised to sum to 1.
- ``noisy_topk`` (Shazeer et al. 2017): during training, Gaussian noise with a learned,
  per-token, per-expert scale is added to the logits before the top-k; the weights are a
  softmax over only the k kept (noisy) logits.
- ``soft``: a dense mixture, every expert weighted by its softmax probability (k = E).
- ``aux_free`` (DeepSeek-V3): a per-expert bias, nudged towards balance after every
  optimizer step, is added to the scores only to choose the experts; the weights come
  from the unbiased probabilities, so the bias never enters the gradient.
- ``sigmoid`` (DeepSeek-V3 in full): independent sigmoid scores instead of a softmax,
  the same selection bias, and the weights the chosen scores normalised to sum to 1.
- ``expert_choice`` (Zhou et al. 2022): the choice is turned around, each expert takes
  the tokens of the batch it scores highest, a fixed number per expert; a token may
  get several experts or none.

Options common to all: multiplicative input jitter during training (Switch), and the
router matmul + softmax in float32 even under autocast (``router_fp32``): logits of a
few hundred lose their ordering in bf16, and a softmax of them overflows in fp16.

Every random draw uses the global RNG, so ``torch.manual_seed`` makes training
reproducible.

In float32 on the CPU the ``topk`` and ``aux_free`` routers' softmax, choice, gate
weights and the logsumexp of the z-loss are one native pass each way (``native_moe.route_topk``; top-k
ties go to the lower expert id there, as a stable sort would).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config.schema import ROUTERS, MoEConfig
from . import native_moe
from .dispatch import expert_capacity, expert_counts


@dataclass
class RouterOutput:
    logits: Tensor       # [T, E] float32, the gate's logits (noisy_topk: without the noise)
    probs: Tensor        # [T, E] float32, softmax of the logits the choice was made on
    topk_idx: Tensor     # [T, k] int64, chosen experts, in decreasing order of score
    topk_weight: Tensor  # [T, k] gate weights that combine the chosen experts' outputs
    aux_loss: Tensor     # [] Switch load-balancing loss E * sum_i f_i * P_i
    z_loss: Tensor       # [] ST-MoE router z-loss mean(logsumexp(logits)^2)
    # expert_choice only: [E, C] the tokens each expert took, best first, and their
    # weights; topk_idx / topk_weight then describe, per token, its k heaviest experts
    # for the statistics (weight 0 where fewer than k experts took it).
    expert_tokens: Tensor | None = None
    expert_weight: Tensor | None = None


class Routed(NamedTuple):
    """What a router's ``_route`` returns."""

    logits: Tensor
    probs: Tensor
    topk_idx: Tensor
    topk_weight: Tensor
    lse: Tensor | None = None            # [T] logsumexp of the logits, where computed anyway
    expert_tokens: Tensor | None = None  # expert choice only, as in RouterOutput
    expert_weight: Tensor | None = None


def load_balancing_loss(probs: Tensor, topk_idx: Tensor, n_experts: int) -> Tensor:
    """Switch Transformer load-balancing loss ``E * sum_i f_i * P_i``.

    probs [T, E]; topk_idx [T, k]. f_i is the fraction of the T*k token choices sent to
    expert i (counts, no gradient), P_i the mean router probability of expert i. Equals
    1 when routing is uniform, E when one expert takes everything with certainty.
    """
    f = expert_counts(topk_idx, n_experts).to(probs.dtype) / topk_idx.numel()
    P = probs.mean(dim=0)
    return n_experts * torch.sum(f * P)


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss ``mean_t(logsumexp_i(logits[t, i])^2)``: logits [T, E] -> [].

    Keeps the logits small, so that the router's softmax stays well inside the range of
    low-precision formats.
    """
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


class Router(nn.Module):
    """Common part of all routers: the gate, jitter, precision and the two losses.

    Subclasses implement ``_route(x)``, called with the (jittered) router input inside
    the precision context, returning (logits, probs, topk_idx, topk_weight).
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, *, jitter: float = 0.0,
                 fp32: bool = True):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k ({top_k}) must be between 1 and n_experts ({n_experts})")
        self.n_experts = n_experts
        self.top_k = top_k
        self.jitter = jitter
        self.fp32 = fp32
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, top_k={self.top_k}, jitter={self.jitter}, fp32={self.fp32}"

    def forward(self, x: Tensor) -> RouterOutput:
        """x [T, d_model] -> RouterOutput for the T tokens."""
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        if self.fp32:
            ctx = torch.autocast(device_type=x.device.type, enabled=False)
            x = x.float()
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            r = self._route(x)
        logits, probs = r.logits.float(), r.probs.float()
        choice = r.expert_tokens is not None
        return RouterOutput(
            logits=logits,
            probs=probs,
            topk_idx=r.topk_idx,
            topk_weight=r.topk_weight,
            # expert choice is balanced by construction: no balancing loss to add
            aux_loss=(probs.new_zeros(()) if choice
                      else load_balancing_loss(probs, r.topk_idx, self.n_experts)),
            z_loss=router_z_loss(logits) if r.lse is None else r.lse.float().square().mean(),
            expert_tokens=r.expert_tokens,
            expert_weight=r.expert_weight,
        )

    def _route(self, x: Tensor) -> Routed:
        """The logits, probabilities, choices and gate weights of the tokens x."""
        raise NotImplementedError

    def _native_softmax_topk(self, logits: Tensor, renormalize: bool,
                             bias: Tensor | None = None) -> Routed | None:
        """Softmax, top-k (by logit, or by probability + ``bias``), gate weights and
        logsumexp as one native pass each way, where it applies (float32 on the CPU,
        finite logits); None: the caller's torch path."""
        if not native_moe.applies(logits, *([] if bias is None else [bias])):
            return None
        got = native_moe.route_topk(logits, self.top_k, renormalize, bias=bias)
        return None if got is None else Routed(logits, *got)

    @staticmethod
    def _project(linear: nn.Linear, x: Tensor) -> Tensor:
        """x @ W.T in the dtype of x: float32 under ``fp32`` even if the model's weights
        were cast to half precision; otherwise whatever autocast makes of it."""
        return F.linear(x, linear.weight.to(x.dtype))


class TopKRouter(Router):
    """Softmax over all experts, then the k most probable (Switch for k = 1, Mixtral k = 2).

    With ``renormalize`` the k kept probabilities are rescaled to sum to 1. Note that
    for k = 1 this makes every weight exactly 1, and the gate then learns only through
    the auxiliary losses: Switch keeps the raw probability (``renormalize = False``).
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, *, renormalize: bool = True,
                 **kw):
        super().__init__(d_model, n_experts, top_k, **kw)
        self.renormalize = renormalize

    def _route(self, x):
        logits = self._project(self.gate, x)
        native = self._native_softmax_topk(logits, self.renormalize)
        if native is not None:
            return native
        probs = logits.softmax(dim=-1)
        weight, idx = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weight = weight / weight.sum(dim=-1, keepdim=True)
        return Routed(logits, probs, idx, weight)


class NoisyTopKRouter(Router):
    """Shazeer et al. 2017 noisy top-k gating.

    Training: H = x W_g + N(0, 1) * (softplus(x W_noise) + noise_eps); eval: H = x W_g.
    The top k of H are kept and their weights are softmax over those k values only
    (so they always sum to 1). ``probs`` is softmax(H) over all experts, i.e. the
    distribution the choice was actually drawn from. The paper's smooth load estimate
    is not implemented; the Switch loss on softmax(H) balances instead.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, *, noise_eps: float = 1e-2,
                 **kw):
        super().__init__(d_model, n_experts, top_k, **kw)
        self.noise_eps = noise_eps
        self.noise = nn.Linear(d_model, n_experts, bias=False)

    def _route(self, x):
        clean = self._project(self.gate, x)
        if self.training:
            std = F.softplus(self._project(self.noise, x)) + self.noise_eps
            noisy = clean + torch.randn_like(clean) * std
        else:
            noisy = clean
        top_logits, idx = noisy.topk(self.top_k, dim=-1)
        weight = top_logits.softmax(dim=-1)
        return Routed(clean, noisy.softmax(dim=-1), idx, weight)


class SoftRouter(Router):
    """Dense gating: every token goes to all E experts, weighted by its softmax probability."""

    def __init__(self, d_model: int, n_experts: int, **kw):
        super().__init__(d_model, n_experts, n_experts, **kw)

    def _route(self, x):
        logits = self._project(self.gate, x)
        probs = logits.softmax(dim=-1)
        idx = torch.arange(self.n_experts, device=x.device).expand(x.shape[0], -1)
        return Routed(logits, probs, idx, probs)


class AuxFreeRouter(Router):
    """DeepSeek-V3 auxiliary-loss-free balancing on top of softmax top-k.

    The experts are chosen by top-k of ``probs + bias``; the weights are the unbiased
    ``probs`` of the chosen experts (renormalised if asked). ``bias`` [E] is a buffer,
    not a parameter: ``update_bias`` moves it after each optimizer step, raising
    under-loaded experts and lowering over-loaded ones.
    """

    bias: Tensor

    def __init__(self, d_model: int, n_experts: int, top_k: int, *, renormalize: bool = True,
                 bias_update_rate: float = 1e-3, **kw):
        super().__init__(d_model, n_experts, top_k, **kw)
        self.renormalize = renormalize
        self.bias_update_rate = bias_update_rate
        self.register_buffer("bias", torch.zeros(n_experts))

    def _route(self, x):
        logits = self._project(self.gate, x)
        native = self._native_softmax_topk(logits, self.renormalize, bias=self.bias)
        if native is not None:
            return native
        probs = logits.softmax(dim=-1)
        with torch.no_grad():
            idx = (probs.float() + self.bias).topk(self.top_k, dim=-1).indices
        weight = probs.gather(-1, idx)
        if self.renormalize:
            weight = weight / weight.sum(dim=-1, keepdim=True)
        return Routed(logits, probs, idx, weight)

    @torch.no_grad()
    def update_bias(self, tokens_per_expert: Tensor) -> None:
        """bias_i += rate * sign(mean load - load_i); tokens_per_expert [E] (any dtype)."""
        load = tokens_per_expert.to(self.bias.device, torch.float32)
        self.bias.add_(torch.sign(load.mean() - load), alpha=self.bias_update_rate)


class SigmoidRouter(AuxFreeRouter):
    """DeepSeek-V3 gating: scores ``s = sigmoid(logits)``, each expert judged on its own
    rather than against the others; the top-k of ``s + bias`` are chosen (the bias of
    aux-loss-free balancing, used only to choose), and the weights are the chosen
    unbiased scores divided by their sum (``renormalize``; without it the raw scores).

    ``probs`` are the scores normalised over all experts (``s / sum(s)``), the
    distribution DeepSeek-V3's balance loss and the statistics use.
    """

    def _route(self, x):
        logits = self._project(self.gate, x)
        scores = torch.sigmoid(logits)
        with torch.no_grad():
            idx = (scores.float() + self.bias).topk(self.top_k, dim=-1).indices
        weight = scores.gather(-1, idx)
        if self.renormalize:
            weight = weight / weight.sum(dim=-1, keepdim=True)
        return Routed(logits, scores / scores.sum(dim=-1, keepdim=True), idx, weight)


class ExpertChoiceRouter(Router):
    """Expert-choice routing (Zhou et al. 2022): softmax over experts per token, then
    every expert takes the ``C`` tokens of the batch with its highest probability, with
    that probability as weight. ``C = ceil(factor * T * k / E)`` (``factor`` the
    capacity factor, 1 when unset), so on average a token gets k experts.

    Which experts a token gets depends on the other tokens of the batch, later positions
    of its own sequence included: a causal language model peeks at the future this way,
    and at generation time (one token at a time) the choice differs from training.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, *, capacity_factor: float = 0.0,
                 **kw):
        super().__init__(d_model, n_experts, top_k, **kw)
        self.capacity_factor = capacity_factor

    def capacity(self, n_tokens: int) -> int:
        factor = self.capacity_factor if self.capacity_factor > 0 else 1.0
        return min(n_tokens, expert_capacity(factor, n_tokens, self.top_k, self.n_experts))

    def _route(self, x):
        logits = self._project(self.gate, x)
        probs = logits.softmax(dim=-1)                               # [T, E]
        weight_ec, tokens = probs.t().topk(self.capacity(x.shape[0]), dim=-1)   # [E, C]
        with torch.no_grad():   # per token, its k heaviest experts, for the statistics
            combine = probs.new_zeros(probs.shape).scatter_(
                0, tokens.t(), weight_ec.detach().t())               # [T, E] weight or 0
            weight, idx = combine.topk(self.top_k, dim=-1)
        return Routed(logits, probs, idx, weight, expert_tokens=tokens, expert_weight=weight_ec)


def make_router(moe_cfg: MoEConfig, d_model: int) -> Router:
    """The router named by ``moe_cfg.router``, configured from the same section."""
    common = dict(jitter=moe_cfg.jitter, fp32=moe_cfg.router_fp32)
    E, k = moe_cfg.n_experts, moe_cfg.top_k
    if moe_cfg.router == "topk":
        return TopKRouter(d_model, E, k, renormalize=moe_cfg.renormalize, **common)
    if moe_cfg.router == "noisy_topk":
        return NoisyTopKRouter(d_model, E, k, noise_eps=moe_cfg.noise_eps, **common)
    if moe_cfg.router == "soft":
        return SoftRouter(d_model, E, **common)
    if moe_cfg.router in ("aux_free", "sigmoid"):
        cls = AuxFreeRouter if moe_cfg.router == "aux_free" else SigmoidRouter
        return cls(d_model, E, k, renormalize=moe_cfg.renormalize,
                   bias_update_rate=moe_cfg.bias_update_rate, **common)
    if moe_cfg.router == "expert_choice":
        return ExpertChoiceRouter(d_model, E, k, capacity_factor=moe_cfg.capacity_factor, **common)
    raise ValueError(f"moe.router ({moe_cfg.router!r}) must be one of: {', '.join(ROUTERS)}")
