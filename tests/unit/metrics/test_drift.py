"""Tests for PSI and Jensen-Shannon distance in `driftwatch.metrics.drift`, against scipy and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from driftwatch.metrics.drift import PSI_EPSILON, js_distance, psi


def _random_case(seed: int, rows: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(2, 15))
    ref = rng.dirichlet(np.ones(bins))
    if bins > 3:
        ref[0] = 0.0  # a reference bin that never occurs (e.g. __unseen__)
        ref = ref / ref.sum()
    counts = rng.integers(0, 200, size=(rows, bins))
    counts[:, int(rng.integers(0, bins))] = 0  # some empty bins in the window
    counts[:, -1] += 1
    return counts, ref


@pytest.mark.parametrize("seed", range(8))
def test_js_distance_matches_scipy(seed: int) -> None:
    """js_distance equals scipy.spatial.distance.jensenshannon (natural log) on random count rows."""
    counts, ref = _random_case(seed)
    value, _, _ = js_distance(counts, ref)
    for i in range(counts.shape[0]):
        assert value[i] == pytest.approx(jensenshannon(ref, counts[i]), rel=1e-9, abs=1e-12)


def _psi_direct(counts: np.ndarray, ref: np.ndarray) -> float:
    q = np.clip(counts / counts.sum(), PSI_EPSILON, None)
    p = np.clip(ref, PSI_EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.mark.parametrize("seed", range(8))
def test_psi_matches_direct_formula(seed: int) -> None:
    """psi equals sum((q - p) * ln(q / p)) with both proportions clipped at PSI_EPSILON."""
    counts, ref = _random_case(seed)
    value, _, _ = psi(counts, ref)
    for i in range(counts.shape[0]):
        assert value[i] == pytest.approx(_psi_direct(counts[i], ref), rel=1e-12, abs=1e-15)


def test_psi_known_value() -> None:
    """A 50/50 reference against a 90/10 window gives PSI = 0.4 ln 9 + ... computed by hand."""
    value, _, _ = psi(np.array([[90, 10]]), np.array([0.5, 0.5]))
    assert value[0] == pytest.approx(0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5), rel=1e-12)


def test_identical_distributions_give_zero() -> None:
    """A window with exactly the reference proportions has PSI 0 and JS distance 0."""
    ref = np.array([0.1, 0.2, 0.3, 0.4])
    counts = np.array([[10, 20, 30, 40], [1000, 2000, 3000, 4000]])
    for fn in (psi, js_distance):
        v, lo, _ = fn(counts, ref)
        assert v.tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
        assert lo.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("fn", [psi, js_distance])
def test_interval_contains_the_value(fn: object) -> None:
    """The 95% interval of each row contains its value, with lo >= 0."""
    for seed in range(5):
        counts, ref = _random_case(seed)
        v, lo, hi = fn(counts, ref)  # type: ignore[operator]
        assert np.all(lo <= v + 1e-15)
        assert np.all(v <= hi + 1e-15)
        assert np.all(lo >= 0)
        assert np.all(np.isfinite(hi))


def test_interval_narrows_with_more_data() -> None:
    """The same proportions over 100x the events give a narrower interval."""
    ref = np.array([0.25, 0.25, 0.5])
    counts = np.array([[30, 20, 50], [3000, 2000, 5000]])
    for fn in (psi, js_distance):
        _, lo, hi = fn(counts, ref)
        assert hi[1] - lo[1] < hi[0] - lo[0]


def test_all_zero_row_gives_nan() -> None:
    """A slice without events has NaN value and interval for both distances."""
    ref = np.array([0.5, 0.5])
    counts = np.array([[0, 0], [5, 5]])
    for fn in (psi, js_distance):
        v, lo, hi = fn(counts, ref)
        assert math.isnan(v[0])
        assert math.isnan(lo[0])
        assert math.isnan(hi[0])
        assert v[1] == pytest.approx(0.0, abs=1e-12)


def test_js_distance_disjoint_support_is_sqrt_ln2() -> None:
    """Fully disjoint distributions are at the maximum JS distance sqrt(ln 2)."""
    v, _, _ = js_distance(np.array([[10, 0]]), np.array([0.0, 1.0]))
    assert v[0] == pytest.approx(math.sqrt(math.log(2)), rel=1e-12)
