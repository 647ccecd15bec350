"""The Mixture-of-Experts feed-forward block: router + routed experts (+ shared experts).

After every forward the layer keeps what the trainer records about it (``last``) as
detached tensors on the model's device. Nothing here calls ``.item()``: on CUDA a host
read would stall the step, so the trainer gathers all layers' numbers in one transfer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from ..config.schema import MoEConfig
from .activations import activate, in_width
from .dispatch import DispatchResult, expert_capacity, expert_choice_dispatch, moe_dispatch
from .parallel.expert_parallel import (expert_parallel_dispatch, gather_experts,
                                       global_balancing_loss)
from .routers import Router, RouterOutput, make_router


class FeedForward(nn.Module):
    """Dense two-layer MLP without biases: Linear(d, h) - GELU - Linear(h, d), or with
    ``act="swiglu"`` the gated Linear(d, 2h) - SiLU(gate) * up - Linear(h, d).

    The dense block of a non-MoE layer and the shared experts of an MoE layer.
    ``down_proj`` writes into the residual stream (the model scales its init).
    """

    def __init__(self, d_model: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.act = act
        self.up_proj = nn.Linear(d_model, in_width(hidden, act), bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d] -> [..., d]."""
        return self.down_proj(activate(self.up_proj(x), self.act))


@dataclass
class MoEStats:
    """Routing statistics of one forward, all detached tensors on the layer's device."""

    tokens_per_expert: Tensor   # [E] float32, pairs routed per expert (before drops)
    dropped_per_expert: Tensor  # [E] float32, pairs dropped over capacity
    dropped_per_row: Tensor     # [B] float32, pairs dropped from each sequence of the batch
    entropy: Tensor             # [] mean router entropy, nats
    top1_prob: Tensor           # [] mean of the largest router probability
    logit_absmean: Tensor       # [] mean |logit|
    logit_absmax: Tensor        # [] max |logit|
    aux_loss: Tensor            # [] load-balancing loss (value only)
    z_loss: Tensor              # [] router z-loss (value only)
    probs: Tensor               # [T, E] float32 router probabilities
    topk_idx: Tensor            # [T, k] int64
    topk_weight: Tensor         # [T, k] gate weights


class MoEFeedForward(nn.Module):
    """Routed feed-forward: x [B, T, d] -> [B, T, d].

    ``n_experts`` experts, each ``act(x @ w1[e]) @ w2[e]`` with hidden width
    ``moe_cfg.d_expert or d_ff``, stacked as ``w1`` [E, d, h] and ``w2`` [E, h, d]
    (``moe_cfg.expert_act = "swiglu"``: ``w1`` [E, d, 2h], gate then up).
    Tokens over an expert's capacity (``moe_cfg.capacity_factor`` > 0) get no output
    from that expert; in the model they pass through on the residual path.

    Attributes after a forward: ``aux_loss`` and ``z_loss`` (0-dim, differentiable, for
    the training objective), ``tokens_per_expert`` [E] (detached, always kept: the
    aux_free bias update needs it) and ``last`` (``MoEStats``, only when
    ``collect_stats``; otherwise None).
    """

    def __init__(self, d_model: int, moe_cfg: MoEConfig, d_ff: int):
        super().__init__()
        self.n_experts = E = moe_cfg.n_experts
        self.d_hidden = h = moe_cfg.d_expert or d_ff
        self.capacity_factor = moe_cfg.capacity_factor
        self.capacity_priority = moe_cfg.capacity_priority
        self.capacity_group = moe_cfg.capacity_group
        self.router: Router = make_router(moe_cfg, d_model)
        self.act = moe_cfg.expert_act
        self.w1 = nn.Parameter(torch.empty(E, d_model, in_width(h, self.act)))
        self.w2 = nn.Parameter(torch.empty(E, h, d_model))
        # n shared experts of width h summed are one MLP of width n * h (every hidden unit
        # acts alone), so one wider FeedForward runs them in two matmuls.
        self.n_shared = moe_cfg.n_shared
        self.shared = FeedForward(d_model, self.n_shared * h, self.act) if self.n_shared else None
        self.collect_stats = True
        self.last: MoEStats | None = None
        self.aux_loss: Tensor | None = None   # set by forward
        self.z_loss: Tensor | None = None
        self.tokens_per_expert: Tensor | None = None
        # Set by engine/parallel (torch.distributed): the ranks this layer's experts are
        # spread over (w1/w2 then hold only this rank's E / ep_size of them), and the
        # ranks whose tokens the load-balancing loss counts together.
        self.ep_group = None
        self.ep_size = 1
        self.balance_group = None
        self.replicated = False   # every rank forwards the same tokens (probes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The model re-initialises everything (with its residual scaling); this only
        # makes a stand-alone layer usable.
        nn.init.normal_(self.w1, std=0.02)
        nn.init.normal_(self.w2, std=0.02)

    def __getstate__(self):
        # The last forward's losses are non-leaf tensors, which deepcopy refuses; a copy
        # (snapshot ensembles, checkpoints of whole modules) starts without them.
        state = self.__dict__.copy()
        state.update(aux_loss=None, z_loss=None, tokens_per_expert=None, last=None)
        return state

    @property
    def top_k(self) -> int:
        return self.router.top_k

    def extra_repr(self) -> str:
        return (f"n_experts={self.n_experts}, d_hidden={self.d_hidden}, act={self.act}, "
                f"capacity_factor={self.capacity_factor}")

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        flat = x.reshape(B * T, d)
        r = self.router(flat)
        if r.expert_tokens is not None:   # validation keeps expert choice on one process
            res = expert_choice_dispatch(flat, r.expert_tokens, r.expert_weight, self.w1, self.w2)
        elif self.ep_group is not None and not self.replicated:
            # Under expert parallelism capacity counts the expert group's tokens, as one
            # process running the group's whole batch would (token order over the batch:
            # validation refuses the other capacity rules with parallel.expert > 1).
            capacity = expert_capacity(self.capacity_factor, B * T * self.ep_size, self.top_k,
                                       self.n_experts)
            res = expert_parallel_dispatch(flat, r.topk_idx, r.topk_weight, self.w1, self.w2,
                                           self.n_experts, capacity, group=self.ep_group)
        else:
            per_seq = self.capacity_group == "sequence"
            capacity = expert_capacity(self.capacity_factor, T if per_seq else B * T, self.top_k,
                                       self.n_experts)
            w1, w2 = self.w1, self.w2
            if self.ep_group is not None:
                # Every rank holds the same tokens (a probe): each runs them as one process
                # would, through all the experts, gathered (no gradient flows here).
                w1, w2 = gather_experts(w1, self.ep_group), gather_experts(w2, self.ep_group)
            res = moe_dispatch(flat, r.topk_idx, r.topk_weight, w1, w2, capacity,
                               priority=self.capacity_priority, group_size=T if per_seq else 0)
        y = res.out
        if self.shared is not None:
            y = y + self.shared(flat)

        aux = r.aux_loss
        if self.balance_group is not None:
            aux = global_balancing_loss(r.probs, r.topk_idx, self.n_experts, self.balance_group)
            r.aux_loss = aux
        self.aux_loss, self.z_loss = aux, r.z_loss
        self.tokens_per_expert = res.tokens_per_expert.detach().float()
        self.last = self._stats(r, res, B) if self.collect_stats else None
        return y.view(B, T, d)

    @torch.no_grad()
    def _stats(self, r: RouterOutput, res: DispatchResult, rows: int) -> MoEStats:
        probs = r.probs.detach()
        if res.pair_kept is None:
            dropped_per_row = probs.new_zeros(rows)
        else:
            dropped_per_row = (~res.pair_kept).reshape(rows, -1).sum(1).float()
        abs_logits = r.logits.detach().abs()
        return MoEStats(
            tokens_per_expert=self.tokens_per_expert,
            dropped_per_expert=res.dropped_per_expert.float(),
            dropped_per_row=dropped_per_row,
            entropy=torch.special.entr(probs).sum(dim=-1).mean(),
            top1_prob=probs.max(dim=-1).values.mean(),
            logit_absmean=abs_logits.mean(),
            logit_absmax=abs_logits.max(),
            aux_loss=r.aux_loss.detach(),
            z_loss=r.z_loss.detach(),
            probs=probs,
            topk_idx=r.topk_idx.detach(),
            topk_weight=r.topk_weight.detach(),
        )
