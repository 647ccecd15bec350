"""Which experts a router chooses together: the co-selection counts an inspection
records (``inspect/coselect`` [layers, E, E]: tokens whose top-k held both experts;
the diagonal is the tokens each expert received) read as shares."""
from __future__ import annotations

import numpy as np


def also_chose(coselect: np.ndarray) -> np.ndarray:
    """``out[..., a, b]``: of the tokens routed to expert ``a``, the share also routed
    to expert ``b`` (``coselect[..., a, b] / coselect[..., a, a]``). The diagonal, and
    rows of experts that received no token, are NaN (nothing to say). float64, the
    shape of ``coselect`` ([..., E, E])."""
    c = np.asarray(coselect, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"co-selection counts must be [..., E, E], got shape {c.shape}")
    own = np.diagonal(c, axis1=-2, axis2=-1)[..., :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(own > 0, c / np.where(own > 0, own, 1.0), np.nan)
    e = c.shape[-1]
    out[..., np.arange(e), np.arange(e)] = np.nan
    return out

