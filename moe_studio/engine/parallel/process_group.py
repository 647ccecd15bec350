"""The process group of a run started by ``torchrun`` (or ``moe-studio train --nproc``):
set up from the launcher's environment, torn down once, and the rank facts the rest
of the engine asks for.

torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address; the
backend is nccl when the ranks train on CUDA (one GPU per ``LOCAL_RANK``) and gloo on
the CPU. ``parallel.timeout_s`` bounds every collective: a rank that died or hangs
ends the others with an error after that long instead of a silent wait (torchrun's
own monitoring then ends whatever is left).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def launched_world_size() -> int:
    """The world size torchrun announced (1 when not started by a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank_device(device: torch.device) -> torch.device:
    """On CUDA, the GPU of this rank (``LOCAL_RANK``); other devices as they are."""
    if device.type != "cuda":
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise ValueError(f"rank with LOCAL_RANK {local} has no GPU: this machine has "
                         f"{torch.cuda.device_count()} (start at most that many processes)")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def init_process_group(device: torch.device, timeout_s: float) -> None:
    """Join the launcher's process group (idempotent): nccl on CUDA, gloo otherwise."""
    if dist.is_initialized():
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kw = {"device_id": device} if backend == "nccl" else {}
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kw)
    except TypeError:   # torch without device_id
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))


def destroy_process_group() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def new_groups(groups: list[list[int]]):
    """``dist.new_group`` for every list of ranks (every rank must call this with the
    same lists, in the same order); returns the group this rank is in."""
    me = dist.get_rank()
    mine = None
    for ranks in groups:
        g = dist.new_group(ranks)
        if me in ranks:
            mine = g
    return mine
