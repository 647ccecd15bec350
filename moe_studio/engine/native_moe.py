"""The routing bookkeeping of a dropless top-k MoE layer as four autograd nodes over the
native kernel (``_native/moe_kernel.c``), for float32 on the CPU.

Around the expert matmuls, a routed layer does a dozen small operations per direction:
the router's softmax, top-k, renormalisation and logsumexp; the sort of the (token,
choice) pairs by expert; the gather of their rows; the gated combine back into token
order. In torch each is its own kernel and its own sweep over memory; at the trainer's
shape they cost about as much as everything else the MoE layer adds over a dense FFN.
Here each is one native pass with a hand-written backward:

- :func:`route_topk` logits [T, E] -> probs, top-k ids and gate weights, logsumexp
  (the choice optionally by probability plus a per-expert bias: aux-loss-free);
- :func:`sort_pairs` the pairs' expert ids -> their sorted order, positions, counts;
- :func:`gather_rows` / :func:`combine` the rows in that order, and back.

The torch path (``routers.TopKRouter``, ``dispatch.moe_dispatch``) stays the reference
and runs wherever this one does not: other devices and dtypes, autocast, capacity
limits, torch.compile's tracing, ``MOE_STUDIO_NATIVE=0``, no C compiler at install, and
a step whose logits hold NaN or inf. The two agree to float32 rounding
(``tests/test_native_moe.py``); top-k ties go to the lower expert id on both.
"""
from __future__ import annotations

import ctypes
import torch
from torch import Tensor

from . import _native
from ._native import ptr

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
# forward passes run natively since the process started: what a benchmark reports
_CALLS = {"route": 0, "dispatch": 0}


def _declare(lib: ctypes.CDLL) -> None:
    lib.moe_route_topk.argtypes = [_P, _I64, _I64, _I64, ctypes.c_int, _P, _P, _P, _P, _P]
    lib.moe_route_topk.restype = ctypes.c_int
    lib.moe_route_topk_backward.argtypes = [_P] * 6 + [_I64, _I64, _I64, ctypes.c_int, _P]
    lib.moe_route_topk_backward.restype = None
    lib.moe_sort_pairs.argtypes = [_P, _I64, _I64, _P, _P, _P, _P]
    lib.moe_sort_pairs.restype = ctypes.c_int
    lib.moe_gather_rows.argtypes = [_P, _P, _I64, _I64, _I64, _P]
    lib.moe_gather_rows.restype = None
    lib.moe_gather_rows_backward.argtypes = [_P, _P, _I64, _I64, _I64, _P]
    lib.moe_gather_rows_backward.restype = None
    lib.moe_combine.argtypes = [_P, _P, _P, _I64, _I64, _I64, _P]
    lib.moe_combine.restype = None
    lib.moe_combine_backward.argtypes = [_P, _P, _P, _P, _I64, _I64, _I64, _P, _P]
    lib.moe_combine_backward.restype = None


_MOE = _native.Library("_moe", _declare)


def _lib() -> ctypes.CDLL:
    lib = _MOE.lib
    if lib is None:
        raise RuntimeError("the native MoE kernel is not built or not enabled here "
                           "(check native_moe.applies first)")
    return lib


def available() -> bool:
    """Whether the native MoE kernel is built and loads here."""
    return _MOE.lib is not None


def library_name() -> str | None:
    """``_moe_avx2``, ``_moe`` or None."""
    return _MOE.name


def applies(*tensors: Tensor) -> bool:
    """Whether the native path may run on these tensors now: all float32 (or integer) on
    the CPU, no autocast to a lower precision, not inside torch.compile's tracing, and
    the library loaded."""
    if torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32):
            return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return available()


def report() -> dict:
    """The library in use and how many router and dispatch forwards it has run (the
    benchmarks name what actually ran, not the setting)."""
    return {"library": library_name(), "route_calls": _CALLS["route"],
            "dispatch_calls": _CALLS["dispatch"]}


def _c(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


class _RouteTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, k: int, renorm: bool, bias: Tensor | None):
        T, E = logits.shape
        lg = logits.detach().contiguous()
        bias = None if bias is None else bias.detach().contiguous()
        probs = torch.empty_like(lg)
        idx = torch.empty(T, k, dtype=torch.long)
        weight = torch.empty(T, k, dtype=torch.float32)
        lse = torch.empty(T, dtype=torch.float32)
        if _lib().moe_route_topk(lg.data_ptr(), T, E, k, int(renorm), ptr(bias),
                               probs.data_ptr(), idx.data_ptr(), weight.data_ptr(),
                               lse.data_ptr()):
            raise _NotFinite
        ctx.save_for_backward(probs, idx, weight)
        ctx.renorm = renorm
        _CALLS["route"] += 1
        ctx.mark_non_differentiable(idx)
        return probs, idx, weight, lse

    @staticmethod
    def backward(ctx, gprobs, _gidx, gweight, glse):
        probs, idx, weight = ctx.saved_tensors
        T, E = probs.shape
        gprobs, gweight, glse = _c(gprobs), _c(gweight), _c(glse)
        glogits = torch.empty_like(probs)
        _lib().moe_route_topk_backward(probs.data_ptr(), idx.data_ptr(), weight.data_ptr(),
                                     ptr(gprobs), ptr(gweight), ptr(glse), T, E,
                                     idx.shape[1], int(ctx.renorm), glogits.data_ptr())
        return glogits, None, None, None


class _NotFinite(Exception):
    """The logits hold NaN or inf: the torch path handles this step."""


def route_topk(logits: Tensor, k: int, renorm: bool,
               bias: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Softmax router with top-k choice: logits [T, E] float32 -> (probs [T, E], idx [T, k]
    int64 largest first, weight [T, k], lse [T]), differentiable in the logits through
    probs, weight and lse; None when the logits hold NaN or inf (take the torch path).
    ``bias`` [E] (aux-loss-free balancing): the choice is by ``probs + bias``, the
    weights stay the unbiased probabilities."""
    try:
        return _RouteTopK.apply(logits, k, renorm, bias)
    except _NotFinite:
        return None


def sort_pairs(topk_idx: Tensor, n_experts: int) -> tuple[Tensor, Tensor, Tensor]:
    """topk_idx [T, k] -> (order [T k] pair ids by expert, stable; pos [T k] where pair
    p sits in order; counts [E] pairs per expert). Raises ValueError on an id outside
    [0, E)."""
    flat = topk_idx.reshape(-1).contiguous()
    P = flat.numel()
    order = torch.empty(P, dtype=torch.long)
    pos = torch.empty(P, dtype=torch.long)
    counts = torch.empty(n_experts, dtype=torch.long)
    start = torch.empty(n_experts, dtype=torch.long)
    if _lib().moe_sort_pairs(flat.data_ptr(), P, n_experts, order.data_ptr(), pos.data_ptr(),
                           counts.data_ptr(), start.data_ptr()):
        raise ValueError(f"an expert id outside 0..{n_experts - 1} in the router's choice")
    _CALLS["dispatch"] += 1
    return order, pos, counts


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, order: Tensor, pos: Tensor, k: int):
        xc = x.detach().contiguous()
        P, d = order.numel(), x.shape[1]
        xs = torch.empty(P, d, dtype=x.dtype)
        _lib().moe_gather_rows(xc.data_ptr(), order.data_ptr(), P, k, d, xs.data_ptr())
        ctx.save_for_backward(pos)
        ctx.k, ctx.T = k, x.shape[0]
        return xs

    @staticmethod
    def backward(ctx, gxs):
        (pos,) = ctx.saved_tensors
        gxs = gxs.contiguous()
        gx = torch.empty(ctx.T, gxs.shape[1], dtype=gxs.dtype)
        _lib().moe_gather_rows_backward(gxs.data_ptr(), pos.data_ptr(), ctx.T, ctx.k,
                                      gxs.shape[1], gx.data_ptr())
        return gx, None, None, None


def gather_rows(x: Tensor, order: Tensor, pos: Tensor, k: int) -> Tensor:
    """x [T, d] -> [T k, d], row i = x[order[i] // k]; its backward sums each token's k
    row gradients (no scatter)."""
    return _Gather.apply(x, order, pos, k)


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ys: Tensor, weight: Tensor, pos: Tensor):
        T, k = weight.shape
        ysc, wc = ys.detach().contiguous(), weight.detach().contiguous()
        out = torch.empty(T, ys.shape[1], dtype=ys.dtype)
        _lib().moe_combine(ysc.data_ptr(), pos.data_ptr(), wc.data_ptr(), T, k, ys.shape[1],
                         out.data_ptr())
        ctx.save_for_backward(ysc, wc, pos)
        return out

    @staticmethod
    def backward(ctx, gout):
        ys, w, pos = ctx.saved_tensors
        T, k = w.shape
        gout = gout.contiguous()
        gys = torch.empty_like(ys)
        gw = torch.empty_like(w) if ctx.needs_input_grad[1] else None
        _lib().moe_combine_backward(ys.data_ptr(), pos.data_ptr(), w.data_ptr(), gout.data_ptr(),
                                  T, k, ys.shape[1], gys.data_ptr(), ptr(gw))
        return gys, gw, None


def combine(ys: Tensor, weight: Tensor, pos: Tensor) -> Tensor:
    """ys [T k, d] (sorted order), weight [T, k] -> out [T, d] with
    ``out[t] = sum_j weight[t, j] * ys[pos[t k + j]]``, differentiable in ys and weight."""
    return _Combine.apply(ys, weight, pos)
