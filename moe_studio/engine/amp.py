"""Mixed precision, one definition for training, evaluation and probes.

``precision.mode`` is "auto", "fp32", "bf16" or "fp16". bf16 and fp16 run the forward
under ``torch.autocast`` (matmuls in the low format, reductions and the loss in
float32); fp16 also scales the loss (``GradScaler``) so that small gradients survive the
cast. "auto" is resolved once per run (:func:`resolve_precision`) before anything is
built, so the run's stored config names the precision it trained in.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from ..config.schema import PrecisionConfig


def resolve_precision(mode: str, device: torch.device) -> str:
    """The concrete precision for ``mode`` on ``device``: "auto" is bf16 on CUDA where
    the GPU supports it (compute capability 8.0 and later), fp32 elsewhere (bf16 matmuls
    are slow on most CPUs, and mps has no bf16 autocast); other modes as they are."""
    if mode != "auto":
        return mode
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def device_defaults(device: torch.device) -> dict:
    """What a run on ``device`` sets for speed, process-wide: TF32 matmuls on CUDA
    (float32 work that stays outside autocast). Returns what it set, for the run's meta."""
    if device.type != "cuda":
        return {}
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return {"tf32": True}


def autocast(device: torch.device, mode: str):
    """The context a forward pass of precision ``mode`` runs under on ``device``."""
    if mode == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` right now (whatever the caller
    set up), or None when autocast is off there."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class AgreedGradScaler(torch.amp.GradScaler):
    """A GradScaler whose ranks (``group``) skip the same steps: ``unscale_`` finds
    inf/NaN in this rank's gradients, then takes the maximum of the flags over the
    group, so every rank skips (and backs off its scale) when any overflowed.

    torch's ``ShardedGradScaler`` all-reduces the same flags, but its flag has shape
    [1] where the fused AdamW the engine uses expects the scalar GradScaler passes
    (torch 2.13: "output with shape [] doesn't match the broadcast shape [1]"). The
    flags live where GradScaler keeps them, ``_per_optimizer_states[id(opt)]
    ["found_inf_per_device"]`` (what ShardedGradScaler reduces too); the trainer
    always calls ``unscale_`` before ``step``, so ``step`` and ``update`` read them
    reduced."""

    def __init__(self, device: str, group, **kw):
        super().__init__(device, **kw)
        self.group = group

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        super().unscale_(optimizer)
        if not self.is_enabled():
            return
        import torch.distributed as dist
        for flag in self._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)


def grad_scaler(device: torch.device, p: PrecisionConfig, group=None) -> torch.amp.GradScaler:
    """A loss scaler with the run's settings; a no-op (``is_enabled()`` False) unless
    the mode is fp16. ``group``: the process group of a distributed run, whose ranks
    must skip the same steps (:class:`AgreedGradScaler`). Each rank's scaler finds
    inf/NaN only in the gradients it holds, and under expert parallelism those differ
    (each rank has its own experts'): a rank whose expert overflowed would skip a step
    its peers take, and the replicated weights and the loss scales would part."""
    kw = dict(init_scale=p.init_scale, growth_factor=p.growth_factor,
              backoff_factor=p.backoff_factor, growth_interval=p.growth_interval,
              enabled=p.mode == "fp16")
    if group is not None and p.mode == "fp16":
        return AgreedGradScaler(device.type, group, **kw)
    return torch.amp.GradScaler(device.type, **kw)
