"""Low-precision number formats as data, and what a tensor would lose in each of them.

``FORMATS`` holds the range of fp16, bf16 and the two fp8 formats. The functions below
answer, for a tensor held in fp32 (or fp64, fp16, bf16): which share of its elements
would overflow, land in the subnormal range, or flush to zero if it were cast to one of
those formats. They compare magnitudes against exact thresholds instead of casting, so
they run where the format cannot be computed in (fp8 anywhere, fp16 on a CPU at fp32
speed), and they agree element for element with ``x.to(dtype)`` under round to nearest,
ties to even:

- overflow: the cast gives ±inf (fp16, bf16, e5m2) or does not fit (e4m3fn, which has
  no inf: PyTorch >= 2.12 saturates such casts to ±448, older versions give NaN).
  ``|x| >= max + ulp(max)/2``, where the tie itself rounds away from ``max`` when
  ``max`` has an odd significand (fp16, bf16, e5m2: all ones) and to ``max`` when it is
  even (e4m3fn: 448 = 1.110b x 2^8, so 464 -> 448 and only ``|x| > 464`` overflows).
- flush_to_zero: a non-zero ``x`` that rounds to ±0: ``|x| <= min_subnormal / 2`` (the
  tie goes to the even neighbour, zero).
- subnormal: a value that rounds to a non-zero subnormal:
  ``min_subnormal / 2 < |x| < min_normal - min_subnormal / 2`` (the upper tie rounds up
  to ``min_normal``, whose significand is even).

PyTorch converts float64 to these formats through float32 (two roundings), so the
functions do the same: magnitudes are compared after rounding to float32. A finite
float64 beyond float32's range still counts as an overflow, a tiny one as a flush.

Subnormal arithmetic must be on for the comparisons near bf16's and fp32's lower end
(PyTorch's default; ``torch.set_flush_denormal(True)`` would break them).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

# Exponent histogram bins: one per power of two, bin i = [2^LOG2_EDGES[i], 2^LOG2_EDGES[i+1]).
# 2^-150 .. 2^130 holds every finite non-zero float32 (2^-149 .. 2^128) with a margin;
# float64 values outside are counted in the first or last bin.
LOG2_MIN, LOG2_MAX = -150, 130
LOG2_EDGES = np.arange(LOG2_MIN, LOG2_MAX + 1)      # [N_BINS + 1] int, exponents of the edges
N_BINS = LOG2_MAX - LOG2_MIN                        # 280

OUTCOMES = ("overflow", "subnormal", "flush_to_zero")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: its range and how a cast into it rounds."""

    name: str
    max: float            # largest finite value
    min_normal: float     # smallest positive normal value
    min_subnormal: float  # smallest positive subnormal value
    mantissa_bits: int    # stored significand bits (without the implicit leading 1)
    has_inf: bool         # False: e4m3fn, where out-of-range casts saturate (or NaN)
    dtype: torch.dtype | None  # the torch dtype, where this build of torch has one

    @property
    def ulp_at_max(self) -> float:
        """Spacing of the format's values just below ``max``."""
        return 2.0 ** (math.floor(math.log2(self.max)) - self.mantissa_bits)

    @property
    def overflow_threshold(self) -> float:
        """``max + ulp(max)/2``: the point half way to the next (missing) value."""
        return self.max + self.ulp_at_max / 2

    @property
    def overflow_tie_overflows(self) -> bool:
        """Whether ``|x| == overflow_threshold`` overflows: ties go to the even
        significand, and the missing value above ``max`` is even iff ``max`` is odd."""
        return int(self.max / self.ulp_at_max) % 2 == 1

    @property
    def flush_threshold(self) -> float:
        """``min_subnormal / 2``: non-zero values up to and including it round to zero."""
        return self.min_subnormal / 2

    @property
    def subnormal_threshold(self) -> float:
        """``min_normal - min_subnormal/2``: values below it (and above the flush
        threshold) round to a subnormal; the tie rounds up to ``min_normal``."""
        return self.min_normal - self.min_subnormal / 2

    def as_dict(self) -> dict:
        return {"max": self.max, "min_normal": self.min_normal,
                "min_subnormal": self.min_subnormal, "mantissa_bits": self.mantissa_bits,
                "has_inf": self.has_inf}


def _fmt(name: str, exp_bits: int, mantissa_bits: int, max_value: float, has_inf: bool,
         dtype_name: str) -> FloatFormat:
    bias = 2 ** (exp_bits - 1) - 1
    min_normal = 2.0 ** (1 - bias)
    return FloatFormat(name=name, max=max_value, min_normal=min_normal,
                       min_subnormal=min_normal * 2.0 ** -mantissa_bits,
                       mantissa_bits=mantissa_bits, has_inf=has_inf,
                       dtype=getattr(torch, dtype_name, None))


# The design table: fp16 65504 / 6.10e-5 / 5.96e-8; bf16 3.39e38 / 1.18e-38 / 9.18e-41;
# e4m3 448 / 2^-6 / 2^-9; e5m2 57344 / 2^-14 / 2^-16.
FORMATS: dict[str, FloatFormat] = {
    "fp16": _fmt("fp16", 5, 10, 65504.0, True, "float16"),
    "bf16": _fmt("bf16", 8, 7, (2 - 2.0 ** -7) * 2.0 ** 127, True, "bfloat16"),
    "fp8_e4m3": _fmt("fp8_e4m3", 4, 3, 448.0, False, "float8_e4m3fn"),
    "fp8_e5m2": _fmt("fp8_e5m2", 5, 2, 57344.0, True, "float8_e5m2"),
}
FORMAT_NAMES = tuple(FORMATS)


def _get_format(fmt: str | FloatFormat) -> FloatFormat:
    if isinstance(fmt, FloatFormat):
        return fmt
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})") from None


def _count(idx: Tensor, n: int) -> Tensor:
    """Occurrences of each value 0..n-1 in the int64 tensor ``idx``: [n] int64.

    ``bincount`` on the CPU (fastest there); ``scatter_add_`` elsewhere, because CUDA's
    ``bincount`` reads the maximum back to the host, a sync per call.
    """
    if idx.device.type == "cpu":
        return torch.bincount(idx, minlength=n)[:n]
    return torch.zeros(n, dtype=torch.long, device=idx.device).scatter_add_(
        0, idx, torch.ones_like(idx))


def _as_float(x: Tensor) -> Tensor:
    """fp32 or fp64 view of ``x`` for exact work: half types widen exactly."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# ------------------------------------------------------------------------- histogram

class ExponentHistogram(NamedTuple):
    counts: Tensor     # [N_BINS] int64, finite non-zero elements per power-of-two bin
    zeros: Tensor      # [] int64, elements equal to ±0
    nonfinite: Tensor  # [] int64, ±inf and NaN elements


def _bin_index(xf: Tensor) -> Tensor:
    """Per element of the 1-d float32/float64 ``xf``: its exponent bin 0..N_BINS-1, or
    N_BINS for ±0, N_BINS + 1 for inf/NaN. int64, same device."""
    exponent = torch.frexp(xf).exponent                     # |x| = m 2^(e-1), m in [1, 2)
    idx = (exponent - (1 + LOG2_MIN)).clamp_(0, N_BINS - 1).long()
    idx = torch.where(xf == 0, N_BINS, idx)
    return torch.where(torch.isfinite(xf), idx, N_BINS + 1)


def exponent_histogram(x: Tensor) -> ExponentHistogram:
    """Histogram of ``floor(log2|x|)`` over the fixed bins ``LOG2_EDGES``.

    x: any floating tensor (any shape, any device). Bin i counts the finite non-zero
    elements with ``2^LOG2_EDGES[i] <= |x| < 2^LOG2_EDGES[i+1]``; values beyond the edges
    (only possible for float64) go to the first or last bin. The exponent comes from
    ``frexp``, so a bin boundary is exact (no log rounding). All results stay on x's
    device; nothing is read back to the host.
    """
    counts = _count(_bin_index(_as_float(x.detach()).reshape(-1)), N_BINS + 2)
    return ExponentHistogram(counts[:N_BINS], counts[N_BINS], counts[N_BINS + 1])


# ------------------------------------------------------------------------- exact fractions

@functools.lru_cache(maxsize=None)
def _threshold_table(formats: tuple[FloatFormat, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The formats' decision points as one sorted float32 list, and where each sits.

    Returns (sorted [3F] float32, position [F, 3] int64) with, for finite non-zero
    a = |x| in float32 and t = sorted[position[f]]: overflow iff a >= t[0], flush iff
    a < t[1], subnormal-or-flush iff a < t[2]. Strict and non-strict comparisons both
    become ``a < t`` by moving a threshold one float32 up where its tie belongs below.
    """
    fmts = formats
    exact = np.array([[f.overflow_threshold, f.flush_threshold, f.subnormal_threshold]
                      for f in fmts])
    t = exact.astype(np.float32)
    assert np.array_equal(t.astype(np.float64), exact), "thresholds must be float32 values"
    tie_below = np.array([[not f.overflow_tie_overflows, True, False] for f in fmts])
    t = np.where(tie_below, np.nextafter(t, np.float32(np.inf)), t)
    order = np.argsort(t.ravel(), kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return t.ravel()[order], position.reshape(-1, 3)


_device_tables: dict[tuple[tuple[FloatFormat, ...], torch.device], tuple[Tensor, Tensor]] = {}


def _thresholds(formats: tuple[FloatFormat, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    key = (formats, device)
    if key not in _device_tables:     # built once: no host->device copy per call
        t, pos = _threshold_table(formats)
        _device_tables[key] = (torch.from_numpy(t).to(device), torch.from_numpy(pos).to(device))
    return _device_tables[key]


def _joint_counts(x: Tensor, formats: tuple[str | FloatFormat, ...]) -> tuple[Tensor, Tensor]:
    """Exponent histogram and format counts of x in one pass of counting.

    Returns (hist [N_BINS + 2] int64: bins, zeros, inf/NaN; counts [F, 3] int64:
    overflow, subnormal, flush_to_zero among the finite non-zero elements).
    """
    xf = _as_float(x.detach()).reshape(-1)
    t_sorted, position = _thresholds(tuple(_get_format(f) for f in formats), xf.device)
    n_t = t_sorted.numel()
    # Magnitudes in float32, as torch's own casts see a float64 (see module docstring): a
    # finite float64 beyond float32 becomes inf and lands above every threshold.
    bucket = torch.bucketize(xf.abs().float(), t_sorted, right=True)  # #thresholds <= |x|
    joint = _count(_bin_index(xf) * (n_t + 1) + bucket, (N_BINS + 2) * (n_t + 1))
    joint = joint.view(N_BINS + 2, n_t + 1)
    per_bucket = joint[:N_BINS].sum(dim=0)                  # finite non-zero elements only
    below = per_bucket.cumsum(0)[position]                  # [F, 3] #{|x| < t}
    overflow = per_bucket.sum() - below[:, 0]
    flush = below[:, 1]
    counts = torch.stack([overflow, below[:, 2] - flush, flush], dim=1)
    return joint.sum(dim=1), counts


def format_counts(x: Tensor, formats: tuple[str | FloatFormat, ...] = FORMAT_NAMES) -> Tensor:
    """Exact element counts per format and outcome, without casting.

    x: any floating tensor. Returns [n_formats, 3] int64 on x's device: for each format,
    the number of finite non-zero elements that would overflow, become a non-zero
    subnormal, or flush to zero in a cast ``x.to(format)`` (see the module docstring for
    the rounding rules). Zeros and non-finite inputs are in none of the three.
    """
    return _joint_counts(x, formats)[1]


def format_fractions(x: Tensor, fmt: str | FloatFormat) -> dict[str, float]:
    """Fractions of x's elements that a cast to ``fmt`` would damage (exact).

    Returns ``{"overflow", "subnormal", "flush_to_zero", "nonfinite"}``, each a fraction
    of ``x.numel()`` (0.0 for an empty tensor); ``nonfinite`` is the share already inf or
    NaN in x. Reads the result back to the host (use ``format_counts`` to stay on the
    device).
    """
    n = x.numel()
    if n == 0:
        return {"overflow": 0.0, "subnormal": 0.0, "flush_to_zero": 0.0, "nonfinite": 0.0}
    c = format_counts(x, (fmt,))[0].tolist()
    nonfinite = int((~torch.isfinite(x.detach())).sum())
    return {"overflow": c[0] / n, "subnormal": c[1] / n, "flush_to_zero": c[2] / n,
            "nonfinite": nonfinite / n}


# ------------------------------------------------------------------------- from a histogram

def fractions_from_histogram(counts, zeros: int, nonfinite: int,
                             fmt: str | FloatFormat) -> dict[str, float]:
    """Approximate format fractions from an exponent histogram alone (for the dashboard).

    counts: [N_BINS] counts over ``LOG2_EDGES`` (as from ``exponent_histogram``), zeros
    and nonfinite: the two extra counts. Exact where a threshold is a bin edge (the
    flush threshold is a power of two; its tie is ignored); where a threshold cuts a bin
    (``max + ulp/2`` inside ``[2^e, 2^(e+1))``, ``min_normal - min_subnormal/2`` just under
    ``min_normal``), the bin is assumed log-uniform and split in proportion to
    ``log2``. So the answer is good to about one bin's share; ``format_fractions`` on the
    tensor is exact. Fractions are of all elements (counts + zeros + nonfinite).
    """
    f = _get_format(fmt)
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if c.size != N_BINS:
        raise ValueError(f"expected {N_BINS} bin counts, got {c.size}")
    total = c.sum() + float(zeros) + float(nonfinite)
    if total == 0:
        return {"overflow": 0.0, "subnormal": 0.0, "flush_to_zero": 0.0, "nonfinite": 0.0}
    lo = LOG2_EDGES[:-1].astype(np.float64)

    def share_below(t: float) -> np.ndarray:
        """Per bin, the share of its log-width below t."""
        return np.clip(math.log2(t) - lo, 0.0, 1.0)

    below_over = share_below(f.overflow_threshold)
    flush = share_below(f.flush_threshold)
    sub_or_flush = share_below(f.subnormal_threshold)
    return {"overflow": float((c * (1.0 - below_over)).sum() / total),
            "subnormal": float((c * (sub_or_flush - flush)).sum() / total),
            "flush_to_zero": float((c * flush).sum() / total),
            "nonfinite": float(nonfinite) / total}
