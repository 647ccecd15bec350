"""TensorBoard's debiased exponential moving average, vectorised.

Pure numpy (no Qt) so it is testable on its own and cheap enough to re-run over a
whole series on every frame of a live plot.

The recurrence TensorBoard uses (``tensorboard/webapp/.../data_transformer``)::

    last = 0; n = 0
    for v in values:
        if not finite(v) or series is constant: out = v          # passed through
        else:
            last = last * w + (1 - w) * v; n += 1
            out = last / (1 - w ** n)                             # debias

Debiasing divides out the weight the zero start still holds, so the first smoothed
point equals the first value instead of being pulled towards 0.
"""
from __future__ import annotations

import math

import numpy as np

# exp(_CHUNK_LOG) bounds the largest power of 1/w formed inside one chunk: small
# enough that w**-j never overflows, large enough that long series take few chunks.
_CHUNK_LOG = 200.0


def ema(values, weight: float) -> np.ndarray:
    """Debiased EMA of ``values`` (1-D, any real dtype) with smoothing ``weight`` in [0, 1).

    Returns a new float64 array of the same length. Non-finite points (NaN, ±inf) are
    copied through unchanged and are not fed into the average; the debias exponent counts
    finite points only. ``weight == 0`` returns the raw values. A series whose finite
    values are all equal is returned unchanged (as TensorBoard does), so a flat line
    stays exactly flat.
    """
    y = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    w = float(weight)
    if not 0.0 <= w < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    if w == 0.0 or y.size == 0:
        return y
    finite = np.isfinite(y)
    x = y[finite]
    if x.size == 0 or np.all(x == x[0]):
        return y
    y[finite] = _ema_finite(x, w)
    return y


def _ema_finite(x: np.ndarray, w: float) -> np.ndarray:
    """Debiased EMA of an all-finite 1-D array, 0 < w < 1.

    Closed form per chunk of length B, with s the (biased) state entering the chunk:
    ``last_i = w**(i+1) * (s + (1-w) * cumsum_j<=i(x_j * w**-(j+1)))``. Chunks keep
    ``w**-B`` far from overflow; the state carries across chunk boundaries exactly.
    """
    n = x.size
    out = np.empty(n, dtype=np.float64)
    chunk = max(1, int(_CHUNK_LOG / -math.log(w)))
    chunk = min(chunk, n)
    j = np.arange(1, chunk + 1, dtype=np.float64)
    grow = w ** -j          # w**-(j+1) for j = 0..B-1
    decay = w ** j          # w**(i+1)
    state = 0.0
    for start in range(0, n, chunk):
        seg = x[start:start + chunk]
        b = seg.size
        acc = np.cumsum(seg * grow[:b])
        acc *= 1.0 - w
        acc += state
        last = acc * decay[:b]
        state = float(last[-1])
        out[start:start + b] = last
    # Debias by 1 - w**k, k = 1..n counting finite points; -expm1(k*log w) keeps full
    # precision when w**k is close to 1 (small k, w near 1).
    k = np.arange(1, n + 1, dtype=np.float64)
    out /= -np.expm1(k * math.log(w))
    return out
