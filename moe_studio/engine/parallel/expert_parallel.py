"""Expert parallelism: each rank of a group holds ``E / P`` of the experts, and tokens
travel to the rank that holds their expert and back (two all-to-alls per layer).

Rank ``r`` of ``P`` holds experts ``[r * E/P, (r + 1) * E/P)``: a block of consecutive
ids, so the pairs a rank sorts by expert id are already in destination order. One
forward, for the T tokens a rank holds and its router's ``topk_idx`` [T, k]:

1. Sort the T*k (token, choice) pairs by expert (stable, as ``moe_dispatch`` does) and
   count them per expert. The counts go first (an all-to-all of E integers per rank),
   so every rank knows how many rows it will receive from each source.
2. The rows go to their experts' ranks (``all_to_all_single`` with uneven splits).
3. The receiving rank orders what it got by local expert, sources in rank order, and
   so in the order of the global batch (rank 0's tokens first) as long as the global
   batch is the ranks' shards one after another. Capacity then drops exactly the
   pairs a single process would drop on the whole batch.
4. The local experts run with the same sort + grouped matmul kernels as one process.
5. The results travel back (the reverse all-to-all) and are combined with the gate
   weights where the tokens live.

Both all-to-alls are differentiable (the backward of a scatter is the reverse
scatter), so the gradients of the inputs, the gate weights and the local experts equal
those of one process running the whole batch. Splits are read on the host once per
layer (``all_to_all_single`` needs them as lists): on CUDA that is one sync per layer,
the price every expert-parallel MoE pays.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ..dispatch import DispatchResult, _compute_dtype, expert_counts
from ..expert_kernels import run_experts


class _AllToAll(torch.autograd.Function):
    """Rows of ``x`` scattered to the ranks of ``group`` (``in_splits`` rows to each),
    ``out_splits`` rows received from each; the backward sends the gradients back."""

    @staticmethod
    def forward(ctx, x: Tensor, out_splits: list[int], in_splits: list[int], group) -> Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty((sum(out_splits),) + tuple(x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        out_splits, in_splits = ctx.splits
        back = grad.new_empty((sum(in_splits),) + tuple(grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: Tensor, out_splits: list[int], in_splits: list[int], group=None) -> Tensor:
    """Differentiable ``all_to_all_single`` over the first dimension of ``x``."""
    return _AllToAll.apply(x, out_splits, in_splits, group)


def local_experts(n_experts: int, group=None) -> range:
    """The global ids of the experts this rank holds in ``group``."""
    P, r = dist.get_world_size(group), dist.get_rank(group)
    if n_experts % P:
        raise ValueError(f"parallel.expert ({P}) must divide moe.n_experts ({n_experts})")
    n = n_experts // P
    return range(r * n, (r + 1) * n)


def expert_parallel_dispatch(x: Tensor, topk_idx: Tensor, topk_weight: Tensor, w1: Tensor,
                             w2: Tensor, n_experts: int, capacity: int = 0,
                             group=None) -> DispatchResult:
    """``moe_dispatch`` with the experts spread over ``group``.

    x [T, d] this rank's tokens; topk_idx [T, k] global expert ids; topk_weight [T, k];
    w1 [E/P, d, h] and w2 [E/P, h, d] this rank's experts (:func:`local_experts`);
    capacity: pairs kept per expert counted over the whole group's batch (0 = all).
    Returns out [T, d]; ``tokens_per_expert`` [E] this rank's pairs per expert (sum over
    ranks = the batch's); ``dropped_per_expert`` [E] the pairs this rank's experts
    dropped (zero outside its experts; sum over ranks = the batch's).
    """
    P = dist.get_world_size(group)
    E = n_experts
    E_loc = w1.shape[0]
    if E_loc * P != E:
        raise ValueError(f"{P} ranks x {E_loc} local experts != n_experts ({E})")
    T, k = topk_idx.shape
    d = x.shape[-1]
    mine = local_experts(E, group)

    flat_expert = topk_idx.reshape(-1)                     # [T*k], pair p = t*k + j
    counts = expert_counts(topk_idx, E)                    # [E] this rank's pairs
    order = torch.argsort(flat_expert, stable=True)        # by expert = by destination

    # 1. counts first: recv_counts[s, e] = pairs rank s sends to my local expert e
    recv_counts = torch.empty_like(counts)
    dist.all_to_all_single(recv_counts, counts, group=group)
    recv_counts = recv_counts.view(P, E_loc)
    both = torch.stack([counts.view(P, E_loc).sum(1), recv_counts.sum(1)]).tolist()
    in_splits, out_splits = both[0], both[1]

    # 2. the rows to their experts
    dtype = _compute_dtype(x)
    recv = all_to_all(x[order // k].to(dtype), out_splits, in_splits, group)   # [N, d]

    # 3. expert-major, sources in rank order (= the global batch's order)
    row_expert = torch.repeat_interleave(
        torch.arange(E_loc, device=x.device).repeat(P), recv_counts.reshape(-1))
    perm = torch.argsort(row_expert, stable=True)           # [N]
    per_expert = recv_counts.sum(0)                         # [E_loc]
    if capacity > 0:
        block_start = per_expert.cumsum(0) - per_expert
        pos = torch.arange(perm.numel(), device=perm.device) - block_start[row_expert[perm]]
        perm = perm[pos < capacity]
        kept = per_expert.clamp(max=capacity)
    else:
        kept = per_expert
    dropped = torch.zeros(E, dtype=torch.long, device=x.device)
    dropped[mine.start:mine.stop] = per_expert - kept

    # 4. the local experts
    w1c, w2c = w1.to(dtype), w2.to(dtype)
    xs = recv[perm]
    ys = run_experts(xs, w1c, w2c, kept)
    done = ys.new_zeros(recv.shape[0], d).index_copy(0, perm, ys)   # dropped rows: 0

    # 5. back where the tokens live, weighted and summed over the k choices
    back = all_to_all(done, in_splits, out_splits, group)  # [T*k, d] in `order`
    back = back * topk_weight.reshape(-1)[order].unsqueeze(-1).to(back.dtype)
    slots = back.new_zeros(T * k, d).index_copy(0, order, back)

    # 6. which of this rank's pairs an expert took (the per-sequence drop statistics)
    pair_kept = None
    if capacity > 0:
        took = torch.zeros(recv.shape[0], dtype=torch.float32, device=x.device)
        took[perm] = 1.0
        took_back = torch.empty(T * k, dtype=torch.float32, device=x.device)
        dist.all_to_all_single(took_back, took, output_split_sizes=in_splits,
                               input_split_sizes=out_splits, group=group)
        pair_kept = torch.zeros(T * k, dtype=torch.bool, device=x.device)
        pair_kept[order] = took_back > 0
        pair_kept = pair_kept.view(T, k)
    return DispatchResult(slots.view(T, k, d).sum(dim=1), counts, dropped, pair_kept)


def shard_experts(layer, group) -> range:
    """Keep only this rank's experts of ``layer`` (an MoEFeedForward built with all
    of them, so every rank's slice holds the values one process would have): its
    ``w1``/``w2`` become [E/P, ...] parameters and its forward exchanges tokens over
    ``group``. Call before an optimizer sees the parameters. Returns the ids kept."""
    mine = local_experts(layer.n_experts, group)
    with torch.no_grad():
        layer.w1 = torch.nn.Parameter(layer.w1[mine.start:mine.stop].clone())
        layer.w2 = torch.nn.Parameter(layer.w2[mine.start:mine.stop].clone())
    layer.ep_group = group
    layer.ep_size = dist.get_world_size(group)
    return mine


def global_balancing_loss(probs: Tensor, topk_idx: Tensor, n_experts: int, group) -> Tensor:
    """The Switch loss ``E * sum_i f_i * P_i`` with ``f`` counted over every rank of
    ``group`` and ``P`` this rank's mean probabilities (probs [T, E], topk_idx [T, k],
    the same T on every rank). The mean of this over the ranks is the loss of one
    process running their whole batch (it is linear in P), and so are the gradients
    data parallelism averages: one extra all-reduce of E counts per layer."""
    counts = expert_counts(topk_idx, n_experts).to(probs.dtype)
    dist.all_reduce(counts, group=group)
    f = counts / (topk_idx.numel() * dist.get_world_size(group))
    return n_experts * torch.sum(f * probs.mean(dim=0))


@torch.no_grad()
def gather_experts(w: Tensor, group) -> Tensor:
    """Every expert of ``group`` [E, ...] from each rank's [E/P, ...] block ``w``."""
    parts = [torch.empty_like(w) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, w.detach().contiguous(), group=group)
    return torch.cat(parts)
