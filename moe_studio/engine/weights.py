"""Model weights as safetensors: the files the Routing view routes custom text through.

``weights.safetensors`` (shipped by sample runs, fp16) and the live weights a training
engine hands the app on request (full precision, written outside the run folder) share
one layout: every member's ``state_dict`` under a ``member{m}.`` prefix, a tensor that
is tied to an earlier one stored once, and the optimizer step in the metadata. Loading
is :func:`moe_studio.engine.probe.load_model` (safetensors never runs code).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

FORMAT = "moe-studio-weights-1"


def save_weights(models: Iterable, path: str | Path, step: int, half: bool = False) -> Path:
    """Write the members' weights to ``path`` (atomically: a reader never sees half a
    file). ``half``: floating tensors as fp16 (the samples' size budget). Returns the
    path."""
    from safetensors.torch import save_file

    tensors = {}
    for m, model in enumerate(models):
        seen = set()
        for k, v in model.state_dict().items():
            if v.data_ptr() in seen:
                continue
            seen.add(v.data_ptr())
            t = v.detach().cpu()
            if half and t.is_floating_point():
                t = t.half()
            tensors[f"member{m}.{k}"] = t.contiguous()
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "step": str(int(step))})
    os.replace(tmp, path)
    return path
