"""The optional native kernels: the fused pass behind ``agreement.ensemble_metrics`` on
the CPU (here), and the MoE routing bookkeeping (``engine/native_moe.py``).

Each C file (``agreement_kernel.c``, ``moe_kernel.c``) is built by ``setup.py`` into two
plain shared libraries (no Python API): a baseline one and, on x86-64, one for AVX2 +
FMA. ``open_library`` loads the best one the CPU can run with ctypes, or reports that
none is there (no C compiler at install time, an unusual platform), in which case the
callers take their torch paths.

ctypes drops the GIL for the length of a foreign call, so ``agreement_pass`` splits the
tokens into contiguous ranges and runs one call per range on its own thread, each adding
to private sums that are added up afterwards. The threads are started and joined inside
the call: nothing is left running.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from typing import Any, Callable

import numpy as np
import torch

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
MIN_TOKENS_PER_THREAD = 2048


def _cpu_has_avx2() -> bool:
    """AVX2 and FMA, as torch's own dispatch sees them (its AVX2 level needs both)."""
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    except Exception:  # noqa: BLE001 - an old torch without the query: be safe
        return False


def open_library(base: str) -> tuple[ctypes.CDLL, str] | None:
    """The best build of the native library ``base`` (``_agreement``, ``_moe``) this CPU
    runs, loaded, with its name (``base`` or ``base + "_avx2"``); None when none is
    built or loads, or ``MOE_STUDIO_NATIVE=0`` asks for the torch paths."""
    if os.environ.get("MOE_STUDIO_NATIVE", "1") == "0":
        return None
    names = ([f"{base}_avx2"] if _cpu_has_avx2() else []) + [base]
    for name in names:
        spec = importlib.util.find_spec(f"{__name__}.{name}")
        if spec is None or not spec.origin:
            continue
        try:
            return ctypes.CDLL(spec.origin), name
        except OSError:
            continue
    return None


class Library:
    """One native library, found and loaded on first use (two threads asking first both
    get it), its entry points declared by ``declare(lib)``. ``lib`` is None when it is
    not built, does not load, lacks an entry point (an older build) or
    ``MOE_STUDIO_NATIVE=0``; ``name`` is then None too."""

    def __init__(self, base: str, declare: Callable[[ctypes.CDLL], None]):
        self.base = base
        self._declare = declare
        self._lib: ctypes.CDLL | None = None
        self._name: str | None = None
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def lib(self) -> ctypes.CDLL | None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    found = open_library(self.base)
                    if found is not None:
                        try:
                            self._declare(found[0])
                            self._lib, self._name = found
                        except AttributeError:
                            pass
                    self._loaded = True
        return self._lib

    @property
    def name(self) -> str | None:
        return self._name if self.lib is not None else None


def _declare_agreement(lib: ctypes.CDLL) -> None:
    lib.moe_agreement_pass.argtypes = [_P, _I64, _I64, _I64, _I64, _I64] + [_P] * 9
    lib.moe_agreement_pass.restype = ctypes.c_int
    lib.moe_agreement_exp_log.argtypes = [_P, _I64, _P, _P]
    lib.moe_agreement_exp_log.restype = None


_AGREEMENT = Library("_agreement", _declare_agreement)


def available() -> bool:
    """Whether the native agreement kernel is built and loads on this machine."""
    return _AGREEMENT.lib is not None


def library_name() -> str | None:
    """Which build is in use: ``_agreement_avx2``, ``_agreement`` or None."""
    return _AGREEMENT.name


def exp_log(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's own exp (of min(x, 0)) and log (of max(x, 1e-30)) of float32 ``x``,
    for the tests that hold them against float64."""
    lib = _AGREEMENT.lib
    if lib is None:
        raise RuntimeError("the native agreement kernel is not built")
    x = np.ascontiguousarray(x, dtype=np.float32)
    e, lg = np.empty_like(x), np.empty_like(x)
    lib.moe_agreement_exp_log(x.ctypes.data, x.size, e.ctypes.data, lg.ctypes.data)
    return e, lg


def ptr(t: torch.Tensor | np.ndarray | None) -> int | None:
    if t is None:
        return None
    return t.data_ptr() if isinstance(t, torch.Tensor) else t.ctypes.data


def agreement_pass(lp: torch.Tensor, y: torch.Tensor | None, per_token: bool,
                   threads: int = 1) -> dict[str, Any] | None:
    """Everything ``ensemble_metrics`` needs from the V axis, in one fused pass.

    ``lp`` float32 C-contiguous CPU [M, N, V]; ``y`` int64 [N] or None. Returns None when
    the kernel is not available or ``lp`` holds NaN or +inf (the caller's torch path
    handles those), else a dict: ``pred`` int64 [M, N]; ``h_member_sum`` float64 [M] and
    ``h_total_sum`` (token sums of H(p_m) and of H(mean p)); ``js_sum`` float64 [P] (token
    sums of the JS divergence of each pair i < k, in row-major pair order); with ``y``:
    ``picked`` float64 [M, N] (log-probability of the target) and ``ens_pred`` int64 [N];
    with ``per_token``: ``h_members_tok`` float64 [M, N] and ``h_total_tok`` float64 [N].
    """
    lib = _AGREEMENT.lib
    if lib is None:
        return None
    m, n, v = lp.shape
    assert lp.dtype == torch.float32 and lp.is_contiguous() and lp.device.type == "cpu"
    n_pairs = m * (m - 1) // 2
    pred = torch.empty(m, n, dtype=torch.long)
    picked = torch.empty(m, n, dtype=torch.float64) if y is not None else None
    ens_pred = torch.empty(n, dtype=torch.long) if y is not None else None
    h_members_tok = torch.empty(m, n, dtype=torch.float64) if per_token else None
    h_total_tok = torch.empty(n, dtype=torch.float64) if per_token else None
    if y is not None:
        y = y.to(torch.long).contiguous()
    parts = max(1, min(int(threads), n // MIN_TOKENS_PER_THREAD))
    bounds = [n * i // parts for i in range(parts + 1)]
    sums = [(np.zeros(m), np.zeros(1), np.zeros(max(n_pairs, 1))) for _ in range(parts)]
    codes = [0] * parts

    def work(i: int) -> None:
        hm, ht, js = sums[i]
        codes[i] = lib.moe_agreement_pass(
            lp.data_ptr(), m, n, v, bounds[i], bounds[i + 1], ptr(y), ptr(pred),
            ptr(picked), ptr(ens_pred), ptr(hm), ptr(ht), ptr(js),
            ptr(h_members_tok), ptr(h_total_tok))

    if parts == 1:
        work(0)
    else:
        workers = [threading.Thread(target=work, args=(i,), name=f"moe-agreement-{i}")
                   for i in range(1, parts)]
        for w in workers:
            w.start()
        try:
            work(0)
        finally:
            for w in workers:
                w.join()
    if any(c == -1 for c in codes):
        raise MemoryError("the agreement kernel could not allocate its scratch buffer")
    if any(c != 0 for c in codes):
        return None
    return {
        "pred": pred, "picked": picked, "ens_pred": ens_pred,
        "h_member_sum": sum(s[0] for s in sums),
        "h_total_sum": float(sum(s[1][0] for s in sums)),
        "js_sum": sum(s[2] for s in sums)[:n_pairs],
        "h_members_tok": h_members_tok, "h_total_tok": h_total_tok,
    }
