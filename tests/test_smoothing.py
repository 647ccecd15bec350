"""The dashboard's debiased EMA against a plain loop written the way TensorBoard's is."""
from __future__ import annotations

import math

import numpy as np
import pytest

from moe_studio.metrics.smoothing import ema


def reference_ema(values, weight):
    """TensorBoard's smoothing loop, transcribed one point at a time."""
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    constant = len(finite) > 0 and all(v == finite[0] for v in finite)
    out = []
    last = 0.0
    n = 0
    for v in values:
        if constant or not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1.0 - weight) * v
        n += 1
        debias = 1.0 - weight ** n if weight != 1.0 else 1.0
        out.append(last / debias)
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("weight", [0.0, 0.1, 0.6, 0.9, 0.99, 0.999])
def test_matches_reference_loop(weight):
    rng = np.random.default_rng(0)
    y = 3.0 * np.exp(-np.arange(3000) / 700.0) + rng.normal(0, 0.1, 3000)
    np.testing.assert_allclose(ema(y, weight), reference_ema(y, weight), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weight", [1e-6, 0.01, 0.3])
def test_small_weights_cross_many_chunks(weight):
    # Small weights make short chunks (w**-j grows fast), so the state must carry
    # correctly across a great many chunk boundaries.
    rng = np.random.default_rng(1)
    y = rng.normal(5.0, 2.0, 5000)
    np.testing.assert_allclose(ema(y, weight), reference_ema(y, weight), rtol=1e-10, atol=1e-12)


def test_first_point_is_debiased_to_the_value():
    y = np.array([4.0, 2.0, 6.0])
    out = ema(y, 0.9)
    assert out[0] == pytest.approx(4.0)
    # Second point by hand: last = (0.1*4)*0.9 + 0.1*2 = 0.56; debias 1 - 0.81 = 0.19.
    assert out[1] == pytest.approx(0.56 / 0.19)


def test_weight_zero_is_raw_and_a_copy():
    y = np.array([1.0, np.nan, 3.0])
    out = ema(y, 0.0)
    np.testing.assert_array_equal(out, y)
    out[0] = 99.0
    assert y[0] == 1.0


def test_non_finite_points_pass_through_and_do_not_count():
    y = np.array([1.0, np.nan, 2.0, np.inf, -np.inf, 4.0, np.nan, 3.0])
    w = 0.7
    out = ema(y, w)
    np.testing.assert_allclose(out, reference_ema(y, w), rtol=1e-12)
    assert np.isnan(out[1]) and np.isnan(out[6])
    assert out[3] == np.inf and out[4] == -np.inf
    # The finite points smooth exactly as if the gaps were not there.
    finite = np.isfinite(y)
    np.testing.assert_allclose(out[finite], ema(y[finite], w), rtol=1e-12)


def test_leading_nans_do_not_bias():
    y = np.array([np.nan, np.nan, 5.0, 5.5])
    out = ema(y, 0.95)
    assert out[2] == pytest.approx(5.0)
    np.testing.assert_allclose(out, reference_ema(y, 0.95), rtol=1e-12)


def test_constant_series_stays_exact():
    y = np.full(1000, 0.1)
    np.testing.assert_array_equal(ema(y, 0.99), y)


def test_edge_inputs():
    assert ema([], 0.6).shape == (0,)
    np.testing.assert_array_equal(ema([np.nan, np.nan], 0.6), [np.nan, np.nan])
    np.testing.assert_allclose(ema([2.5], 0.6), [2.5])
    assert ema(np.arange(5, dtype=np.float32), 0.5).dtype == np.float64
    with pytest.raises(ValueError):
        ema([1.0, 2.0], 1.0)
    with pytest.raises(ValueError):
        ema([1.0, 2.0], -0.1)

