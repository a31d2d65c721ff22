"""Tests for intervals and tests in `driftwatch.metrics.stats`, against direct formulas and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from driftwatch.metrics.stats import (
    Z95,
    benjamini_hochberg,
    chi2_homogeneity_p,
    diff_interval,
    katz_ratio_interval,
    newcombe_diff_interval,
    ratio_interval,
    safe_div,
    two_proportion_p,
    wilson_interval,
)


def _wilson_direct(k: int, n: int) -> tuple[float, float]:
    p = k / n
    z = Z95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(centre - half, 0.0), min(centre + half, 1.0)


def test_z95_is_the_normal_quantile() -> None:
    """Z95 is the 97.5% quantile of the standard normal."""
    assert pytest.approx(sst.norm.ppf(0.975), rel=1e-12) == Z95


def test_wilson_matches_direct_formula_and_scipy() -> None:
    """wilson_interval equals the textbook formula and scipy's binomtest Wilson interval on many (k, n)."""
    rng = np.random.default_rng(1)
    n = rng.integers(1, 5000, size=300)
    k = np.array([rng.integers(0, x + 1) for x in n])
    k[:5], n[:5] = [0, 1, 7, 7, 0], [1, 1, 7, 10, 50]
    lo, hi = wilson_interval(k, n)
    for i in range(len(n)):
        d_lo, d_hi = _wilson_direct(int(k[i]), int(n[i]))
        ci = sst.binomtest(int(k[i]), int(n[i])).proportion_ci(confidence_level=0.95, method="wilson")
        assert lo[i] == pytest.approx(d_lo, abs=1e-12)
        assert hi[i] == pytest.approx(d_hi, abs=1e-12)
        assert lo[i] == pytest.approx(ci.low, abs=1e-9)
        assert hi[i] == pytest.approx(ci.high, abs=1e-9)


def test_wilson_empty_denominator_is_nan() -> None:
    """An empty slice (n = 0) gives NaN bounds, not an error or a warning."""
    with np.errstate(all="raise"):
        lo, hi = wilson_interval(np.array([0, 3]), np.array([0, 10]))
    assert math.isnan(lo[0])
    assert math.isnan(hi[0])
    assert 0 < lo[1] < 0.3 < hi[1] < 1


def test_wilson_interval_contains_the_estimate_at_the_boundaries() -> None:
    """For k = 0 the lower bound is exactly 0 and for k = n the upper bound is exactly 1, so [lo, hi] contains k/n."""
    n = np.arange(1, 501)
    lo0, hi0 = wilson_interval(np.zeros_like(n), n)
    lo1, hi1 = wilson_interval(n, n)
    assert n[lo0 > 0].tolist() == []  # e.g. n = 3 gives lo = 5.55e-17 > 0 = k/n
    assert n[hi1 < 1].tolist() == []  # e.g. n = 10 gives hi = 0.9999999999999999 < 1 = k/n
    assert np.all(hi0 > 0)
    assert np.all(lo1 < 1)


def test_safe_div_nan_where_denominator_zero() -> None:
    """safe_div divides elementwise and yields NaN where the denominator is 0."""
    out = safe_div(np.array([1, 2, 0]), np.array([4, 0, 0]))
    assert out[0] == 0.25
    assert math.isnan(out[1])
    assert math.isnan(out[2])


def _random_pairs(seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n1 = rng.integers(1, 2000, size=size)
    n2 = rng.integers(1, 2000, size=size)
    k1 = np.array([rng.integers(0, x + 1) for x in n1])
    k2 = np.array([rng.integers(0, x + 1) for x in n2])
    return k1, n1, k2, n2


def test_newcombe_contains_estimate_and_matches_scalar_version() -> None:
    """Newcombe's interval contains p1 - p2, lies within [-1, 1], and the scalar diff_interval gives the same bounds."""
    k1, n1, k2, n2 = _random_pairs(2, 200)
    lo, hi = newcombe_diff_interval(k1, n1, k2, n2)
    d = k1 / n1 - k2 / n2
    assert np.all(lo <= d + 1e-12)
    assert np.all(d <= hi + 1e-12)
    assert np.all(lo >= -1 - 1e-12)
    assert np.all(hi <= 1 + 1e-12)
    for i in range(len(k1)):
        s_lo, s_hi = diff_interval(float(k1[i]), float(n1[i]), float(k2[i]), float(n2[i]))
        assert s_lo == pytest.approx(lo[i], abs=1e-12)
        assert s_hi == pytest.approx(hi[i], abs=1e-12)


def test_newcombe_known_value() -> None:
    """diff_interval(30, 100, 20, 100) equals Newcombe's method 10 worked by hand from Wilson bounds."""
    l1, u1 = _wilson_direct(30, 100)
    l2, u2 = _wilson_direct(20, 100)
    exp_lo = 0.1 - math.sqrt((0.3 - l1) ** 2 + (u2 - 0.2) ** 2)
    exp_hi = 0.1 + math.sqrt((u1 - 0.3) ** 2 + (0.2 - l2) ** 2)
    lo, hi = diff_interval(30, 100, 20, 100)
    assert (lo, hi) == pytest.approx((exp_lo, exp_hi), abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (-0.0202, 0.2167)


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2", "expected"),
    [
        (56, 70, 48, 80, (0.0524, 0.3339)),
        (9, 10, 3, 10, (0.1705, 0.8090)),
        (6, 7, 2, 7, (0.0582, 0.8062)),
        (5, 56, 0, 29, (-0.0381, 0.1926)),
    ],
)
def test_newcombe_matches_published_table(k1: int, n1: int, k2: int, n2: int, expected: tuple[float, float]) -> None:
    """diff_interval reproduces Newcombe (1998), Table II, method 10, to four decimals."""
    lo, hi = diff_interval(k1, n1, k2, n2)
    assert (round(lo, 4), round(hi, 4)) == expected


def test_katz_contains_ratio_and_matches_scalar_version() -> None:
    """Katz's log interval contains the ratio of rates and the scalar ratio_interval gives the same bounds."""
    k1, n1, k2, n2 = _random_pairs(3, 200)
    k1[:3] = 0
    k2[3:6] = 0
    lo, hi = katz_ratio_interval(k1, n1, k2, n2)
    a = np.where(k1 == 0, 0.5, k1)
    b = np.where(k2 == 0, 0.5, k2)
    r = (a / n1) / (b / n2)
    assert np.all(lo <= r * (1 + 1e-12))
    assert np.all(r <= hi * (1 + 1e-12))
    for i in range(len(k1)):
        s_lo, s_hi = ratio_interval(float(k1[i]), float(n1[i]), float(k2[i]), float(n2[i]))
        assert s_lo == pytest.approx(lo[i], rel=1e-12)
        assert s_hi == pytest.approx(hi[i], rel=1e-12)


def test_katz_known_value() -> None:
    """ratio_interval(20, 100, 40, 100) equals exp(log(0.5) +/- z * se) with the Katz standard error."""
    se = math.sqrt(1 / 20 - 1 / 100 + 1 / 40 - 1 / 100)
    lo, hi = ratio_interval(20, 100, 40, 100)
    assert lo == pytest.approx(0.5 * math.exp(-Z95 * se), rel=1e-12)
    assert hi == pytest.approx(0.5 * math.exp(Z95 * se), rel=1e-12)


def test_two_proportion_p_matches_scipy_chi2_without_correction() -> None:
    """The pooled two-proportion z-test p-value equals scipy's uncorrected chi-square test of the 2x2 table."""
    k1, n1, k2, n2 = _random_pairs(4, 150)
    n1, n2 = n1 + 20, n2 + 20  # keep every table non-degenerate
    k1, k2 = np.clip(k1, 1, n1 - 1), np.clip(k2, 1, n2 - 1)
    p = two_proportion_p(k1, n1, k2, n2)
    for i in range(len(k1)):
        table = np.array([[k1[i], n1[i] - k1[i]], [k2[i], n2[i] - k2[i]]])
        expected = sst.chi2_contingency(table, correction=False).pvalue
        assert p[i] == pytest.approx(expected, rel=1e-7, abs=1e-300)


def test_two_proportion_p_degenerate_cases() -> None:
    """All-zero or all-one outcomes give p = 1 and an empty group gives NaN."""
    p = two_proportion_p(np.array([0, 10, 0]), np.array([10, 10, 0]), np.array([0, 20, 5]), np.array([20, 20, 10]))
    assert p[0] == 1.0
    assert p[1] == 1.0
    assert math.isnan(p[2])


def test_chi2_homogeneity_matches_scipy_contingency() -> None:
    """chi2_homogeneity_p equals scipy's uncorrected chi-square test on the 2xB table of counts and ref_props*ref_n."""
    rng = np.random.default_rng(5)
    for bins in (2, 3, 6, 10):
        ref_counts = rng.integers(5, 400, size=bins)
        ref_n = float(ref_counts.sum())
        ref_props = ref_counts / ref_n
        counts = rng.integers(0, 300, size=(20, bins))
        counts[:, 0] += 1
        p = chi2_homogeneity_p(counts, ref_props, ref_n)
        for i in range(counts.shape[0]):
            table = np.vstack([counts[i], ref_props * ref_n])
            keep = table.sum(axis=0) > 0
            expected = sst.chi2_contingency(table[:, keep], correction=False).pvalue
            assert p[i] == pytest.approx(expected, rel=1e-7, abs=1e-300)


def test_chi2_homogeneity_ignores_empty_bins_and_empty_rows() -> None:
    """Bins empty in both samples do not add degrees of freedom; an empty row gives NaN."""
    ref = np.array([0.5, 0.5, 0.0])
    counts = np.array([[30, 70, 0], [0, 0, 0]])
    p = chi2_homogeneity_p(counts, ref, 200)
    table = np.array([[30, 70], [100, 100]])
    assert p[0] == pytest.approx(sst.chi2_contingency(table, correction=False).pvalue, rel=1e-9)
    assert math.isnan(p[1])


@pytest.mark.parametrize("q", [0.01, 0.05, 0.1, 0.25])
def test_benjamini_hochberg_matches_scipy(q: float) -> None:
    """benjamini_hochberg selects exactly the hypotheses whose scipy BH-adjusted p-value is <= q."""
    rng = np.random.default_rng(int(q * 1000))
    for _ in range(30):
        m = int(rng.integers(1, 60))
        p = np.concatenate([rng.uniform(0, 1, m), rng.uniform(0, 0.01, int(rng.integers(0, 10)))])
        rng.shuffle(p)
        expected = sst.false_discovery_control(p, method="bh") <= q
        assert benjamini_hochberg(p, q).tolist() == expected.tolist()


def test_benjamini_hochberg_nan_is_never_a_discovery() -> None:
    """NaN p-values are skipped: never discoveries, and they do not count towards m."""
    p = np.array([0.001, np.nan, 0.02, np.nan, 0.5])
    out = benjamini_hochberg(p, 0.05)
    finite = p[~np.isnan(p)]
    expected = sst.false_discovery_control(finite, method="bh") <= 0.05
    assert out.tolist() == [True, False, True, False, False]
    assert out[~np.isnan(p)].tolist() == expected.tolist()
    assert benjamini_hochberg(np.array([np.nan, np.nan]), 0.5).tolist() == [False, False]
