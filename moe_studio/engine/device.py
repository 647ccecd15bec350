"""Choosing the compute device."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit name that is not available
    raises ValueError with a message a person can act on."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available "
                         "(use 'auto' or 'cpu')")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise ValueError("train.device is 'mps' but MPS is not available (use 'auto' or 'cpu')")
    return torch.device(name)


def describe_device(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return dev.type
