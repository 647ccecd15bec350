"""Co-selection shares against counting token choices one by one."""
from __future__ import annotations

import numpy as np
import pytest

from moe_studio.metrics.coselection import also_chose


def test_also_chose_matches_counting_tokens():
    rng = np.random.default_rng(0)
    layers, tokens, E, k = 3, 500, 6, 2
    choices = np.stack([np.stack([rng.choice(E - 1, size=k, replace=False) for _ in range(tokens)])
                        for _ in range(layers)])          # expert E-1 never chosen
    counts = np.zeros((layers, E, E))
    for lay in range(layers):
        for row in choices[lay]:
            for a in row:
                for b in row:
                    counts[lay, a, b] += 1
    got = also_chose(counts)
    for lay in range(layers):
        for a in range(E):
            for b in range(E):
                with_a = [set(r) for r in choices[lay] if a in r]
                if a == b or not with_a:
                    assert np.isnan(got[lay, a, b])
                else:
                    want = sum(b in r for r in with_a) / len(with_a)
                    assert got[lay, a, b] == pytest.approx(want)


def test_also_chose_refuses_a_matrix_that_is_not_square():
    with pytest.raises(ValueError, match="must be"):
        also_chose(np.zeros((2, 3, 4)))
