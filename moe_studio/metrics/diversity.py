"""Non-pairwise diversity of an ensemble's correctness (Kuncheva & Whitaker, "Measures of
diversity in classifier ensembles", Machine Learning 51, 2003), numpy only.

``correct`` is bool [M, N]: member m's top-1 prediction of token j is right (its oracle
output). With ``l_j`` the number of members right on token j:

- Kohavi-Wolpert variance ``KW = 1 / (N M^2) * sum_j l_j (M - l_j)`` (their eq. 14): the
  variance of "right or wrong" over the members, averaged over tokens; 0 when all
  members agree on every token, at most 1/4. It equals ``(M - 1) / (2M)`` times the
  averaged pairwise disagreement.
- entropy measure ``E = 1 / N * sum_j min(l_j, M - l_j) / (M - ceil(M / 2))`` (eq. 13):
  0 when all members agree on every token, 1 when they are split as evenly as M allows
  on every token.
"""
from __future__ import annotations

import math

import numpy as np


def _right_counts(correct) -> tuple[np.ndarray, int]:
    c = np.asarray(correct)
    if c.ndim != 2:
        raise ValueError(f"correct must be [M, N], got shape {c.shape}")
    return c.astype(bool).sum(0).astype(np.float64), c.shape[0]


def kohavi_wolpert_variance(correct) -> float:
    """KW variance of the oracle outputs ``correct`` [M, N]; NaN without tokens or
    with fewer than 2 members."""
    right, m = _right_counts(correct)
    if m < 2 or right.size == 0:
        return math.nan
    return float((right * (m - right)).sum() / (right.size * m * m))


def entropy_measure(correct) -> float:
    """Kuncheva & Whitaker's entropy measure E of ``correct`` [M, N], in [0, 1]; NaN
    without tokens or with fewer than 2 members."""
    right, m = _right_counts(correct)
    if m < 2 or right.size == 0:
        return math.nan
    return float(np.minimum(right, m - right).sum() / (right.size * (m - math.ceil(m / 2))))
