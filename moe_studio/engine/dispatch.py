"""Sort-based dispatch: send each (token, choice) pair to its expert and combine back.

The routers decide, for T tokens, k experts each (``topk_idx`` [T, k]) and the gate
weights (``topk_weight`` [T, k]). Dispatch turns that into dense matrix work:

1. Flatten the T*k pairs (pair ``p = t * k + j``) and sort them by expert id with one
   stable argsort. Each expert's pairs now form one contiguous block, in token order.
2. Optionally drop pairs over an expert's capacity: the stable sort makes "the first
   ``capacity`` pairs of the block" mean "the earliest tokens", as in Switch / GShard.
3. Gather the tokens in that order and run every expert on its block: either one
   ``torch._grouped_mm`` call per weight matrix, or a loop of plain matmuls over the
   experts with a non-empty block. Which one is chosen at runtime (``expert_kernels``).
4. Scale by the gate weights and put each pair's result back into its (token, choice)
   slot, then sum the k slots of every token.

Step 4 uses a permutation write plus a sum over k instead of ``index_add_``: each slot
is written exactly once, so the result (and, through the gather's backward, the input
gradient) is deterministic on CUDA as well, where ``index_add_`` accumulates with atomics.

Experts are a two-layer MLP without biases, ``gelu(x @ w1[e]) @ w2[e]``, stored as
stacked parameters ``w1`` [E, d, h] and ``w2`` [E, h, d] so that grouped matmul applies;
gated (SwiGLU) experts hold gate and up projections side by side, ``w1`` [E, d, 2h]
(``activations``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .amp import autocast_dtype
from .expert_kernels import run_experts


@dataclass
class DispatchResult:
    out: Tensor                 # [T, d] combined expert output (zero rows for fully dropped tokens)
    tokens_per_expert: Tensor   # [E] int64, pairs routed to each expert, before capacity drops
    dropped_per_expert: Tensor  # [E] int64, pairs dropped because the expert was full


def expert_counts(topk_idx: Tensor, n_experts: int) -> Tensor:
    """Number of (token, choice) pairs per expert: [T, k] int64 -> [E] int64.

    ``scatter_add_`` rather than ``bincount``: bincount reads the maximum index back to
    the host to size its output, a device sync on every step on CUDA.
    """
    flat = topk_idx.reshape(-1)
    return torch.zeros(n_experts, dtype=torch.long, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat))


def expert_capacity(capacity_factor: float, n_tokens: int, top_k: int, n_experts: int) -> int:
    """Pairs each expert may take: ceil(factor * T * k / E); 0 means unlimited (dropless)."""
    if capacity_factor <= 0:
        return 0
    return max(1, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


# ---------------------------------------------------------------------------------------
# Dispatch


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the expert matmuls run in: the autocast dtype when autocast is on.

    ``torch._grouped_mm`` has no autocast rule, so both kernels cast explicitly and give
    the same result whichever is chosen.
    """
    return autocast_dtype(x.device.type) or x.dtype


def moe_dispatch(x: Tensor, topk_idx: Tensor, topk_weight: Tensor, w1: Tensor, w2: Tensor,
                 capacity: int = 0) -> DispatchResult:
    """Run the routed experts and combine their outputs with the gate weights.

    x [T, d]; topk_idx [T, k] int64 (a token never picks the same expert twice);
    topk_weight [T, k]; w1 [E, d, h] (SwiGLU [E, d, 2h]); w2 [E, h, d]; capacity: pairs kept per expert
    (0 = keep all). Returns ``DispatchResult`` with out [T, d] in the compute dtype,
    ``out[t] = sum_j topk_weight[t, j] * expert_{topk_idx[t, j]}(x[t])`` over kept pairs.
    """
    T, k = topk_idx.shape
    E = w1.shape[0]
    d = x.shape[-1]
    flat_expert = topk_idx.reshape(-1)                     # [T*k], pair p = t*k + j
    tokens_per_expert = expert_counts(topk_idx, E)         # [E]
    # Stable: inside an expert's block the pairs stay in token order, which is what
    # makes capacity dropping keep the earliest tokens.
    order = torch.argsort(flat_expert, stable=True)        # [T*k] pair ids by expert

    if capacity > 0:
        block_start = tokens_per_expert.cumsum(0) - tokens_per_expert
        pos_in_block = (torch.arange(order.numel(), device=order.device)
                        - block_start[flat_expert[order]])
        # Boolean compaction syncs on CUDA; only capacity runs pay for it.
        order = order[pos_in_block < capacity]              # [N_kept]
        kept_per_expert = tokens_per_expert.clamp(max=capacity)
    else:
        kept_per_expert = tokens_per_expert
    dropped_per_expert = tokens_per_expert - kept_per_expert

    dtype = _compute_dtype(x)
    w1c, w2c = w1.to(dtype), w2.to(dtype)
    xs = x[order // k].to(dtype)                           # [N_kept, d] grouped by expert
    ys = run_experts(xs, w1c, w2c, kept_per_expert)        # [N_kept, d]
    ys = ys * topk_weight.reshape(-1)[order].unsqueeze(-1).to(ys.dtype)

    # Put every kept pair back into its (token, choice) slot; dropped slots stay zero.
    slots = ys.new_zeros(T * k, d).index_copy(0, order, ys)
    out = slots.view(T, k, d).sum(dim=1)                   # [T, d]
    return DispatchResult(out, tokens_per_expert, dropped_per_expert)


def expert_choice_dispatch(x: Tensor, expert_tokens: Tensor, expert_weight: Tensor, w1: Tensor,
                           w2: Tensor) -> DispatchResult:
    """Expert-choice routing: expert e runs on the tokens ``expert_tokens[e]`` it chose.

    x [T, d]; expert_tokens [E, C] int64 (no token twice in a row); expert_weight [E, C];
    w1, w2 as in :func:`moe_dispatch`. The pairs are expert-major already, so there is
    nothing to sort and nothing to drop; ``out[t]`` sums ``weight * expert_e(x[t])`` over
    the experts that took t (zero for a token no expert took). ``index_add_`` puts them
    back: a token has a varying number of slots here, and on CUDA its sum is therefore
    accumulated with atomics (not bit-reproducible there).
    """
    E, C = expert_tokens.shape
    dtype = _compute_dtype(x)
    flat = expert_tokens.reshape(-1)                        # [E*C]
    counts = torch.full((E,), C, dtype=torch.long, device=x.device)
    ys = run_experts(x[flat].to(dtype), w1.to(dtype), w2.to(dtype), counts)
    ys = ys * expert_weight.reshape(-1, 1).to(ys.dtype)
    out = ys.new_zeros(x.shape[0], x.shape[-1]).index_add_(0, flat, ys)
    return DispatchResult(out, counts, torch.zeros_like(counts))
