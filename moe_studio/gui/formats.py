"""Every number the app writes for people: values in read-outs and tables, tick labels,
counts, durations, rates. One module (free of Qt) so that one kind of number reads the
same in every view, and a change of style is made once.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def fmt_value(v: float, missing: str | None = "—") -> str:
    """A measured value at 4 significant digits, in exponent form below 0.001 and from
    100000 on; a non-finite one as ``missing`` (None: as Python writes it, "nan", "inf",
    which a curve's read-out shows so a hole in the data is named)."""
    if not math.isfinite(v):
        return str(v) if missing is None else missing
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


def fmt_step(v: float) -> str:
    """An x value (a step, a token count) as a whole number with thousands separators."""
    if math.isfinite(v) and abs(v - round(v)) < 1e-9 and abs(v) < 1e15:
        return f"{int(round(v)):,}"
    return fmt_value(v, missing=None)


def fmt_num(v: float) -> str:
    """A precision statistic (absmax, headroom bits) at 3 significant digits; ±∞ named."""
    if not math.isfinite(v):
        return "—" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    a = abs(v)
    if a != 0 and (a >= 1e4 or a < 1e-2):
        return f"{v:.2e}"
    return f"{v:.3g}"


def fmt_pow2(v: float) -> str:
    """A loss scale as the power of two it is (65536 -> "2^16"); other values as numbers."""
    v = float(v)
    if v > 0 and math.isfinite(v) and math.log2(v) == int(math.log2(v)):
        return f"2^{int(math.log2(v))}"
    return fmt_num(v)


def fmt_share(v: float) -> str:
    """A share as a percentage number (no sign): 2 significant digits below 0.1 %."""
    if not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    p = 100.0 * v
    return f"{p:.2g}" if p < 0.1 else f"{p:.1f}"


def fmt_fixed(v: float, digits: int = 4) -> str:
    """A value at ``digits`` decimals (a loss, an agreement), "—" when missing."""
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_count(n: float) -> str:
    """A count with thousands separators, "—" when missing."""
    return "—" if n is None or not math.isfinite(n) else f"{int(n):,}"


def fmt_percent(v: float) -> str:
    """A fraction as a whole percentage ("" when missing: an empty heatmap cell)."""
    return "" if not math.isfinite(v) else f"{100 * v:.0f}%"


def compact_number(v: float, spacing: float = 0.0) -> str:
    """``v`` with an SI suffix (``"250k"``, ``"1.2M"``), as precise as ``spacing``
    (the distance to the neighbouring tick) needs."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    for unit, suffix in _SI:
        if abs(v) >= unit:
            places = max(0, math.ceil(-math.log10(spacing / unit))) if spacing > 0 else 1
            return f"{v / unit:.{min(places, 3)}f}{suffix}"
    return f"{v:g}"


def human_count(n: int) -> str:
    """1234567 -> '1.23 M' (parameter counts for people)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return str(n)


def format_small(v: float, spacing: float) -> str:
    """A tick value as written: plain decimals to the precision the tick spacing needs,
    or ``3e-5`` for values below 0.001 (no row of zeros)."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a < 1e-3 or a >= 1e6:
        mant, exp = f"{v:.2e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    places = max(0, math.ceil(-math.log10(spacing))) if spacing > 0 else 3
    return f"{v:.{min(places, 6)}f}"


def log_label(v: float) -> str:
    """A value on a log axis: ``0.02``, ``300``, ``10⁵``, ``2·10⁻⁴``."""
    if v <= 0 or not math.isfinite(v):
        return ""
    if 1 <= v < 1e4:
        return f"{v:.4g}"
    if 1e-3 <= v < 1:
        return f"{v:.3g}"
    exp = math.floor(math.log10(v) + 1e-9)
    mant = v / 10 ** exp
    sup = str(exp).translate(_SUPERSCRIPT)
    return f"10{sup}" if abs(mant - 1) < 1e-6 else f"{mant:.2g}·10{sup}"


def format_float(v: float) -> str:
    """Shortest exact text for a float, with a compact exponent: 0.003, 1e-5, 65536."""
    if not math.isfinite(v):
        return repr(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    s = repr(float(v))
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), s)


def format_duration(seconds: float, spacing: float = 1.0, top: float | None = None) -> str:
    """``seconds`` as ``"42s"``, ``"12:05"`` (m:ss) or ``"1:02:05"`` (h:mm:ss).

    ``spacing`` (seconds between neighbouring ticks) picks the precision: sub-second
    ticks keep decimals, hour-scale ticks drop the seconds. ``top`` (the largest value
    on the axis) keeps one style along an axis: once it reaches a minute, 20 s reads
    ``"0:20"``.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    sign = "-" if seconds < 0 else ""
    t = abs(seconds)
    big = max(t, abs(top) if top is not None else 0.0)
    if big < 60 and spacing < 60:
        places = max(0, math.ceil(-math.log10(spacing))) if spacing > 0 else 0
        return f"{sign}{t:.{min(places, 3)}f}s"
    t = int(round(t))
    h, rem = divmod(t, 3600)
    m, sec = divmod(rem, 60)
    if h or big >= 3600:
        return f"{sign}{h}:{m:02d}" if spacing >= 60 else f"{sign}{h}:{m:02d}:{sec:02d}"
    return f"{sign}{m}:{sec:02d}"


def format_eta(seconds: float | None) -> str:
    """A remaining time in words, never mistakable for a clock time: 45 -> '45 s',
    245 -> '4 min 05 s', 1229 -> '20 min', 3725 -> '1 h 02 min'."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {sec:02d} s" if m < 10 else f"{m} min"


def format_rate(tokens_per_s: float | None) -> str:
    """A throughput in tokens per second, scaled to k / M."""
    if tokens_per_s is None or tokens_per_s != tokens_per_s:
        return "— tok/s"
    if tokens_per_s >= 1e6:
        return f"{tokens_per_s / 1e6:.2f} M tok/s"
    if tokens_per_s >= 1e4:
        return f"{tokens_per_s / 1e3:.1f} k tok/s"
    return f"{tokens_per_s:,.0f} tok/s"


def format_started(t: Any) -> str:
    """A run's start time (seconds since the epoch) as local date and minute."""
    if t is None:
        return ""
    try:
        return _dt.datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OSError, OverflowError):
        return str(t)


def format_summary(key: str, v: Any) -> str:
    """A summary value as the table shows it (empty for NaN)."""
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if key in ("params_total", "params_active"):
        return f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v:,.0f}"
    if key in ("steps", "skipped_steps"):
        return f"{v:,.0f}"
    if key == "tokens_per_s":
        return f"{v:,.0f}"
    if key == "dropped_frac":
        return f"{100 * v:.2f} %"
    if key == "train_flops":
        return f"{v:.3g}"
    if key == "memory_total":
        return f"{v / 2 ** 20:,.1f} MiB"
    return f"{v:.4f}"
