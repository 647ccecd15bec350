"""Sort-based dispatch: send each (token, choice) pair to its expert and combine back.

The routers decide, for T tokens, k experts each (``topk_idx`` [T, k]) and the gate
weights (``topk_weight`` [T, k]). Dispatch turns that into dense matrix work:

1. Flatten the T*k pairs (pair ``p = t * k + j``) and sort them by expert id with one
   stable argsort. Each expert's pairs now form one contiguous block, in token order.
2. Optionally drop pairs over an expert's capacity: the stable sort makes "the first
   ``capacity`` pairs of the block" mean "the earliest tokens", as in Switch / GShard.
3. Gather the tokens in that order and run every expert on its block: either one
   ``torch._grouped_mm`` call per weight matrix, or a loop of plain matmuls over the
   experts with a non-empty block. Which one is chosen at runtime (see ``expert_kernel``).
4. Scale by the gate weights and put each pair's result back into its (token, choice)
   slot, then sum the k slots of every token.

Step 4 uses a permutation write plus a sum over k instead of ``index_add_``: each slot
is written exactly once, so the result (and, through the gather's backward, the input
gradient) is deterministic on CUDA as well, where ``index_add_`` accumulates with atomics.

Experts are a two-layer MLP without biases, ``gelu(x @ w1[e]) @ w2[e]``, stored as
stacked parameters ``w1`` [E, d, h] and ``w2`` [E, h, d] so that grouped matmul applies.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

KERNELS = ("auto", "loop", "grouped")


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
# Expert kernels


def _mlp_loop(xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> Tensor:
    """Experts on contiguous blocks, one pair of matmuls per non-empty expert.

    xs [N, d] sorted by expert, counts [E] (sum N) -> [N, d]. Reads ``counts`` on the
    host to split the blocks (one device sync on CUDA).
    """
    sizes = counts.tolist()
    # unbind, not w1[e]: the backward of each w1[e] would allocate and add a full
    # [E, d, h] zero gradient per expert; unbind's backward stacks the E slices once.
    w1s, w2s = w1.unbind(0), w2.unbind(0)
    outs = [F.gelu(block @ w1s[e]) @ w2s[e]
            for e, block in enumerate(xs.split(sizes)) if sizes[e]]
    if not outs:
        return xs.new_zeros(0, w2.shape[-1])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _mlp_grouped(xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> Tensor:
    """The same computation as ``_mlp_loop`` with two ``torch._grouped_mm`` calls.

    ``offs`` holds the int32 end offset of each expert's block; nothing is read back to
    the host, so on CUDA the whole dispatch runs without a sync when nothing is dropped.
    """
    offs = counts.cumsum(0).to(torch.int32)
    hidden = F.gelu(torch._grouped_mm(xs, w1, offs=offs))
    return torch._grouped_mm(hidden, w2, offs=offs)


_MLP = {"loop": _mlp_loop, "grouped": _mlp_grouped}

# "auto" (measure once per shape, keep the faster), or force "loop" / "grouped".
_kernel_setting = os.environ.get("MOE_STUDIO_EXPERT_KERNEL", "auto")
_grouped_works: dict[tuple, bool] = {}
_auto_choice: dict[tuple, str] = {}


def set_expert_kernel(name: str) -> None:
    """Choose the expert kernel for every later dispatch: 'auto', 'loop' or 'grouped'.

    'grouped' still falls back to 'loop' where ``torch._grouped_mm`` cannot run.
    The environment variable MOE_STUDIO_EXPERT_KERNEL sets the initial value.
    """
    global _kernel_setting
    if name not in KERNELS:
        raise ValueError(f"expert kernel must be one of {', '.join(KERNELS)}, got {name!r}")
    _kernel_setting = name
    _auto_choice.clear()


def kernel_choices() -> list[dict]:
    """What 'auto' has chosen so far, one dict per measured shape (for benchmarks/logs)."""
    names = ("device", "index", "dtype", "n_experts", "d_model", "d_hidden", "size_bucket",
             "backward")
    return [{**dict(zip(names, key)), "dtype": str(key[2]), "kernel": choice}
            for key, choice in _auto_choice.items()]


def grouped_mm_works(device: torch.device, dtype: torch.dtype, d: int, h: int) -> bool:
    """Whether ``torch._grouped_mm`` runs forward and backward for these weights, and
    agrees with the loop (cached). Support depends on the build, the device (on CUDA
    e.g. the compute capability), the dtype and the alignment of the widths."""
    key = (device.type, device.index, dtype, d, h)
    if key not in _grouped_works:
        _grouped_works[key] = _probe_grouped(device, dtype, d, h)
    return _grouped_works[key]


@contextlib.contextmanager
def _clean_context(device: torch.device):
    """Neither inference mode nor autocast, whatever the caller runs under."""
    with torch.inference_mode(False), torch.autocast(device.type, enabled=False):
        yield


def _probe_grouped(device: torch.device, dtype: torch.dtype, d: int, h: int) -> bool:
    if not hasattr(torch, "_grouped_mm"):
        return False
    # Deterministic inputs (no RNG: a probe must not shift the training random stream).
    # Three experts, the middle one empty, because empty groups are the edge case.
    n = 16
    xs = torch.linspace(-1, 1, n * d, device=device).reshape(n, d).to(dtype)
    w1 = torch.linspace(-0.1, 0.1, 3 * d * h, device=device).reshape(3, d, h).to(dtype)
    w2 = torch.linspace(0.1, -0.1, 3 * h * d, device=device).reshape(3, h, d).to(dtype)
    counts = torch.tensor([10, 0, n - 10], device=device)
    try:
        # The answer must not depend on the caller's context: inference mode would forbid
        # the backward, and autocast would turn the float32 reference into a bf16 one.
        with _clean_context(device), torch.enable_grad():
            ins = [t.clone().requires_grad_() for t in (xs, w1, w2)]
            out = _mlp_grouped(*ins, counts)
            out.backward(torch.ones_like(out))
        with _clean_context(device), torch.no_grad():
            ref = _mlp_loop(xs.float(), w1.float(), w2.float(), counts)
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        return bool(torch.allclose(out.float(), ref, atol=tol, rtol=tol)
                    and all(t.grad is not None and torch.isfinite(t.grad).all() for t in ins))
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _time_kernel(fn, xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor, backward: bool) -> float:
    """Seconds for one call of ``fn`` on copies of the real inputs (forward + backward
    when ``backward``)."""
    with _clean_context(xs.device), torch.enable_grad():
        ins = [t.detach().clone().requires_grad_(backward) for t in (xs, w1, w2)]
        _sync(xs.device)
        start = time.perf_counter()
        out = fn(*ins, counts)
        if backward:
            out.backward(torch.ones_like(out))
        _sync(xs.device)
    return time.perf_counter() - start


def expert_kernel(xs: Tensor, w1: Tensor, w2: Tensor, counts: Tensor) -> str:
    """'grouped' or 'loop' for this dispatch.

    Under 'auto' the first dispatch of each (device, dtype, E, d, h, size bucket, grad
    on/off) times both kernels on its own data (forward + backward when autograd is
    on, as in training), interleaved, and keeps the faster;
    ``torch._grouped_mm`` is only a candidate where ``grouped_mm_works``. The grouped
    kernel wins on GPUs (no host sync, one launch); on CPU the two are close.

    The choice is fixed for the rest of the process, so a run is deterministic; two
    processes may choose differently where the timings are close (on CUDA the kernels
    agree to rounding, not bit for bit). Set MOE_STUDIO_EXPERT_KERNEL to pin it.
    """
    E, d, h = w1.shape
    if _kernel_setting == "loop" or not grouped_mm_works(xs.device, xs.dtype, d, h):
        return "loop"
    if _kernel_setting == "grouped":
        return "grouped"
    backward = torch.is_grad_enabled()
    key = (xs.device.type, xs.device.index, xs.dtype, E, d, h, xs.shape[0].bit_length(), backward)
    if key not in _auto_choice:
        best = {"loop": math.inf, "grouped": math.inf}
        for _ in range(3):  # the first round doubles as warm-up; keep each kernel's best
            for name, fn in _MLP.items():
                best[name] = min(best[name], _time_kernel(fn, xs, w1, w2, counts, backward))
        _auto_choice[key] = min(best, key=best.get)
    return _auto_choice[key]


# ---------------------------------------------------------------------------------------
# Dispatch


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the expert matmuls run in: the autocast dtype when autocast is on.

    ``torch._grouped_mm`` has no autocast rule, so both kernels cast explicitly and give
    the same result whichever is chosen.
    """
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def moe_dispatch(x: Tensor, topk_idx: Tensor, topk_weight: Tensor, w1: Tensor, w2: Tensor,
                 capacity: int = 0) -> DispatchResult:
    """Run the routed experts and combine their outputs with the gate weights.

    x [T, d]; topk_idx [T, k] int64 (a token never picks the same expert twice);
    topk_weight [T, k]; w1 [E, d, h]; w2 [E, h, d]; capacity: pairs kept per expert
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
    kernel = expert_kernel(xs, w1c, w2c, kept_per_expert)
    ys = _MLP[kernel](xs, w1c, w2c, kept_per_expert)       # [N_kept, d]
    ys = ys * topk_weight.reshape(-1)[order].unsqueeze(-1).to(ys.dtype)

    # Put every kept pair back into its (token, choice) slot; dropped slots stay zero.
    slots = ys.new_zeros(T * k, d).index_copy(0, order, ys)
    out = slots.view(T, k, d).sum(dim=1)                   # [T, d]
    return DispatchResult(out, tokens_per_expert, dropped_per_expert)
