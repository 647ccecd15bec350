"""Sort-based dispatch: send each (token, choice) pair to its expert and combine back.

The routers decide, for T tokens, k experts each (``topk_idx`` [T, k]) and the gate
weights (``topk_weight`` [T, k]). Dispatch turns that into dense matrix work:

1. Flatten the T*k pairs (pair ``p = t * k + j``) and sort them by expert id with one
   stable argsort. Each expert's pairs now form one contiguous block, in token order.
2. Optionally drop pairs over an expert's capacity, counted per group of tokens (a
   sequence, as Switch counts it, or the whole batch). Which pairs an expert keeps is
   set by the order the pairs are sorted in: ``first_choice`` (GShard, fairseq) lays
   the pairs out choice-major, so every token's first choice is served before any
   token's second choice; ``token_order`` token-major, so a token's second choice
   outranks the next token's first. With k = 1 the two are the same.
3. Gather the tokens in that order and run every expert on its block: either one
   ``torch._grouped_mm`` call per weight matrix, or a loop of plain matmuls over the
   experts with a non-empty block. Which one is chosen at runtime (``expert_kernels``).
4. Scale by the gate weights and put each pair's result back into its (token, choice)
   slot, then sum the k slots of every token.

Step 4 uses a permutation write plus a sum over k instead of ``index_add_``: each slot
is written exactly once, so the result (and, through the gather's backward, the input
gradient) is deterministic on CUDA as well, where ``index_add_`` accumulates with atomics.

In float32 on the CPU without capacity limits, steps 1, 3 and 4 run as native passes
(``native_moe``: a counting sort, a row gather, a fused gated combine, each with its own
backward) instead of a dozen torch kernels each way.

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

from . import native_moe
from .amp import autocast_dtype
from .expert_kernels import run_experts


@dataclass
class DispatchResult:
    out: Tensor                 # [T, d] combined expert output (zero rows for fully dropped tokens)
    tokens_per_expert: Tensor   # [E] int64, pairs routed to each expert, before capacity drops
    dropped_per_expert: Tensor  # [E] int64, pairs dropped because the expert was full
    pair_kept: Tensor | None = None  # [T, k] bool, which pairs an expert took (None: all)


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


PRIORITIES = ("first_choice", "token_order")


def _capacity_order(flat_expert: Tensor, T: int, k: int, E: int, capacity: int,
                    priority: str, group_size: int) -> tuple[Tensor, Tensor]:
    """The kept pair ids, sorted by expert, and the kept pairs per expert [E].

    Each pair falls in a bucket (expert, group); buckets are laid out expert-major so
    that every expert's pairs stay one block, and inside a bucket the pairs keep the
    priority order they were listed in. A bucket keeps its first ``capacity`` pairs.
    """
    if priority not in PRIORITIES:
        raise ValueError(f"capacity priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    device = flat_expert.device
    pairs = torch.arange(T * k, device=device)
    if priority == "first_choice":
        pairs = pairs.view(T, k).t().reshape(-1)            # all first choices, then all second ...
    size = group_size if group_size > 0 else T
    if T % size:
        raise ValueError(f"{T} tokens do not split into capacity groups of {size}")
    G = T // size
    bucket = flat_expert * G + (torch.arange(T * k, device=device) // k) // size   # [T*k]
    order = pairs[torch.argsort(bucket[pairs], stable=True)]
    per_bucket = torch.zeros(E * G, dtype=torch.long, device=device).scatter_add_(
        0, bucket, torch.ones_like(bucket))
    start = per_bucket.cumsum(0) - per_bucket
    pos = torch.arange(order.numel(), device=device) - start[bucket[order]]
    # Boolean compaction syncs on CUDA; only capacity runs pay for it.
    order = order[pos < capacity]
    return order, per_bucket.clamp(max=capacity).view(E, G).sum(1)


def moe_dispatch(x: Tensor, topk_idx: Tensor, topk_weight: Tensor, w1: Tensor, w2: Tensor,
                 capacity: int = 0, *, priority: str = "token_order",
                 group_size: int = 0) -> DispatchResult:
    """Run the routed experts and combine their outputs with the gate weights.

    x [T, d]; topk_idx [T, k] int64 (a token never picks the same expert twice);
    topk_weight [T, k]; w1 [E, d, h] (SwiGLU [E, d, 2h]); w2 [E, h, d]; capacity: pairs kept per expert
    (0 = keep all), per group of ``group_size`` consecutive tokens (0 = all T); priority:
    which pairs a full expert keeps, ``first_choice`` or ``token_order`` (the default
    here, for callers that predate the choice; ``MoEFeedForward`` passes the config's).
    Returns ``DispatchResult`` with out [T, d] in the compute dtype,
    ``out[t] = sum_j topk_weight[t, j] * expert_{topk_idx[t, j]}(x[t])`` over kept pairs.
    """
    T, k = topk_idx.shape
    E = w1.shape[0]
    d = x.shape[-1]
    if capacity <= 0 and native_moe.applies(x, topk_weight, w1, w2):
        # float32 on the CPU, dropless: the sort, the gather and the gated combine as
        # one native pass each (and one back), the same numbers to float rounding
        order, pos, counts = native_moe.sort_pairs(topk_idx, E)
        ys = run_experts(native_moe.gather_rows(x, order, pos, k), w1, w2, counts)
        return DispatchResult(native_moe.combine(ys, topk_weight, pos), counts,
                              torch.zeros_like(counts))
    flat_expert = topk_idx.reshape(-1)                     # [T*k], pair p = t*k + j
    tokens_per_expert = expert_counts(topk_idx, E)         # [E]
    pair_kept = None
    if capacity > 0:
        order, kept_per_expert = _capacity_order(flat_expert, T, k, E, capacity, priority,
                                                 group_size)
        pair_kept = torch.zeros(T * k, dtype=torch.bool, device=x.device).index_fill_(
            0, order, True).view(T, k)
    else:
        order = torch.argsort(flat_expert, stable=True)    # [T*k] pair ids by expert
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
    return DispatchResult(out, tokens_per_expert, dropped_per_expert, pair_kept)


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
