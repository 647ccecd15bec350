"""``train.compile``: the training forward through ``torch.compile``, with a clean
fallback to eager.

"auto" compiles on CUDA and not on the CPU: there inductor's compile takes minutes
(216 s for the default dense model on the 2-core development machine, load ~7) and the
compiled step was not faster than eager. Compilation is lazy, so the trainer compiles
with one warm-up forward + backward on a fixed batch before training starts, timed
(the compile time is recorded; an eager pass before it fills the expert kernel
tuner's measurements), with the random state restored and the gradients cleared; if
that fails (no C compiler, an unsupported op, an old torch) the models go back to
eager and the run records why, in one line, and trains on.

Not compiled, with the reason recorded: ensembles (the members may train as one wide
model) and runs with a precision monitor (headroom or stop_on_nan), whose forward hooks
change what a step records from step to step.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from ..config.inputs import ENV_CHOICES

COMPILE_MODES = ("auto", "on", "off")
# inductor normally; "eager" (dynamo's tracing without code generation) lets a test
# exercise the compiled path in seconds on a CPU.
# The CLI and the app refuse any other value of the variable before work starts
# (config/inputs.py); here an unknown one keeps the default.
_BACKENDS = ENV_CHOICES["MOE_STUDIO_COMPILE_BACKEND"]
BACKEND = os.environ.get("MOE_STUDIO_COMPILE_BACKEND", "inductor")
BACKEND = BACKEND if BACKEND in _BACKENDS else "inductor"


def compile_wanted(setting: str, device: torch.device) -> bool:
    """Whether ``train.compile`` = ``setting`` asks for compilation on ``device``."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


@dataclass
class CompileResult:
    requested: bool
    active: bool = False
    seconds: float = 0.0
    backend: str = ""
    reason: str = ""            # why not compiled, or why compilation failed (one line)

    def as_meta(self) -> dict:
        return {"compile": {"requested": self.requested, "active": self.active,
                            "seconds": round(self.seconds, 3), "backend": self.backend,
                            "reason": self.reason}}


def _eager(models) -> None:
    for m in models:
        # nn.Module.compile keeps the compiled call here; None is the eager call again
        m._compiled_call_impl = None


def compile_models(models, warmup, *, setting: str, device: torch.device,
                   blocked_by: str = "") -> CompileResult:
    """Compile ``models`` in place (``nn.Module.compile``: parameters and state_dict
    keys stay as they are) when ``setting`` asks for it on ``device`` and nothing blocks
    it (``blocked_by``: the reason it cannot, or ""). ``warmup()`` runs one forward +
    backward per model; it is timed as the compile time, under a forked random state."""
    res = CompileResult(requested=compile_wanted(setting, device), backend=BACKEND)
    if not res.requested:
        return res
    if blocked_by:
        res.reason = f"not compiled: {blocked_by}"
        return res
    if not hasattr(torch.nn.Module, "compile"):
        res.reason = f"not compiled: torch {torch.__version__} has no nn.Module.compile"
        return res
    fork = dict(devices=[device] if device.type == "cuda" else [])
    # One eager pass first: what can only be measured eagerly (the expert kernel tuner's
    # probes and timings) is measured there, and the compiled graph reuses it.
    with torch.random.fork_rng(**fork):
        warmup()
    t0 = time.perf_counter()
    try:
        for m in models:
            m.compile(backend=BACKEND)
        with torch.random.fork_rng(**fork):
            warmup()
        res.active = True
    except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager
        _eager(models)
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        res.reason = f"compile failed, training eager: {type(e).__name__}: {msg}"
    finally:
        for m in models:
            m.zero_grad(set_to_none=True)
    res.seconds = time.perf_counter() - t0
    return res


def eager_only():
    """Context in which compiled models run their eager code: evaluation and probes,
    whose shapes and grad mode differ from training and would each cost a recompile
    for a pass that runs rarely. A no-op on torch without ``set_stance``."""
    from contextlib import nullcontext

    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance is not None else nullcontext()
