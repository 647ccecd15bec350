"""Choosing the compute device."""
from __future__ import annotations

import torch


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; ``cpu``, ``cuda``, ``cuda:N`` and ``mps``
    name one. A name that is none of these, or a device this machine does not have,
    raises ValueError naming ``what`` (the field or flag it came from)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, _, index = str(name).partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError(f"{what} {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} is {name!r} but no CUDA device is available "
                         "(use 'auto' or 'cpu')")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"{what} is {name!r} but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s) (0-based)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise ValueError(f"{what} is {name!r} but MPS is not available (use 'auto' or 'cpu')")
    return torch.device(name)


def describe_device(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return dev.type
