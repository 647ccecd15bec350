"""Mixed precision, one definition for training, evaluation and probes.

``precision.mode`` is "fp32", "bf16" or "fp16". bf16 and fp16 run the forward under
``torch.autocast`` (matmuls in the low format, reductions and the loss in float32);
fp16 also scales the loss (``GradScaler``) so that small gradients survive the cast.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from ..config.schema import PrecisionConfig


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


def grad_scaler(device: torch.device, p: PrecisionConfig) -> torch.amp.GradScaler:
    """A loss scaler with the run's settings; a no-op (``is_enabled()`` False) unless
    the mode is fp16."""
    return torch.amp.GradScaler(device.type, init_scale=p.init_scale,
                                growth_factor=p.growth_factor, backoff_factor=p.backoff_factor,
                                growth_interval=p.growth_interval, enabled=p.mode == "fp16")
