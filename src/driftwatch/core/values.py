"""Reading metric values out of summaries: per-slice values and group comparisons, each with n and a 95% interval.

Pure functions of integer summaries (see :mod:`driftwatch.core.summary`).
Definitions follow Fairlearn (selection rate, demographic-parity difference
and ratio, equalized-odds difference as the larger of the TPR and FPR
ranges, equal-opportunity difference as the TPR range), scipy (Jensen-Shannon
distance) and the usual PSI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from driftwatch.core import summary as S
from driftwatch.metrics.cbpe import estimate_many
from driftwatch.metrics.drift import js_distance, psi
from driftwatch.metrics.registry import DRIFT_METRICS, REGISTRY, spec
from driftwatch.metrics.stats import diff_interval, ratio_interval, safe_div, wilson_interval

__all__ = [
    "GroupComparison",
    "MetricArrays",
    "compare_groups",
    "p_values",
    "proportion_columns",
    "proportion_counts",
    "slice_metric",
]

F = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MetricArrays:
    """One metric over several slices: value, 95% interval and sample count per slice."""

    value: F
    lo: F
    hi: F
    n: NDArray[np.int64]


def _columns(names: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(S.BASE_COLUMNS.index(c) for c in names)


_PROPORTIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    m.name: (_columns(m.numerator), _columns(m.denominator)) for m in REGISTRY if m.kind == "proportion"
}
"""Each proportion as (numerator columns, denominator columns), from the registry."""


def proportion_columns(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Proportion ``name``'s numerator and denominator columns in a summary."""
    return _PROPORTIONS[name]


def proportion_counts(m: S.Matrix, name: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Proportion ``name``'s numerator and denominator for every row of summary ``m``."""
    num, den = _PROPORTIONS[name]
    return m[:, list(num)].sum(axis=1), m[:, list(den)].sum(axis=1)


def slice_metric(name: str, m: S.Matrix, layout: S.Layout, feature: str | None = None) -> MetricArrays:
    """Compute metric ``name`` for every row of summary ``m``."""
    if name in _PROPORTIONS:
        k, n = proportion_counts(m, name)
        # Several complaints about one request can exceed the denominator; the interval caps at 1.
        lo, hi = wilson_interval(np.minimum(k, n), n)
        return MetricArrays(safe_div(k, n), lo, hi, n)
    if name == "mean_score":
        n = m[:, S.N_SCORE]
        mean = safe_div(m[:, S.SCORE_MICRO], n) / S.SCORE_SCALE
        ex2 = safe_div(m[:, S.SCORE_SQ_MICRO], n) / S.SCORE_SCALE
        with np.errstate(invalid="ignore"):
            half = 1.959963984540054 * np.sqrt(np.clip(ex2 - mean * mean, 0, None) / np.maximum(n - 1, 1))
        return MetricArrays(mean, mean - half, mean + half, n)
    kind = spec(name).kind
    if kind == "quantile":
        q = spec(name).quantile or 0.5
        d = m[:, layout.delay_start : layout.delay_start + S.DELAY_BUCKETS]
        val = np.array([S.delay_quantile(row, q) for row in d])
        # The estimate lies within one bucket: report the bucket's bounds as the interval.
        return MetricArrays(
            val, val * (2 / (S.DELAY_GAMMA + 1)), val * (2 * S.DELAY_GAMMA / (S.DELAY_GAMMA + 1)), d.sum(axis=1)
        )
    if kind == "estimate":
        if layout.cbpe is None:
            nan = np.full(m.shape[0], np.nan)
            return MetricArrays(nan, nan, nan, np.zeros(m.shape[0], np.int64))
        count, positive, calibrated = layout.cbpe.sums(m)
        est = estimate_many(count, positive, calibrated)
        v = getattr(est, name.removeprefix("estimated_"))
        # An expectation from the calibration, not a sample: no interval of its own.
        return MetricArrays(v, v, v, count.sum(axis=1))
    if kind == "drift":
        if feature is None or feature not in layout.blocks:
            nan = np.full(m.shape[0], np.nan)
            return MetricArrays(nan, nan, nan, np.zeros(m.shape[0], np.int64))
        b = layout.blocks[feature]
        counts = m[:, b.start : b.start + b.bins]
        fn = psi if name == "psi" else js_distance
        v, lo, hi = fn(counts, b.reference)
        return MetricArrays(v, lo, hi, counts.sum(axis=1))
    raise KeyError(f"unknown slice metric {name!r}")


def p_values(name: str, m: S.Matrix, layout: S.Layout, feature: str | None, reference: S.Matrix) -> F:
    """p-value of each row against its reference, for false-discovery-rate control.

    Proportions: an exact binomial test (two-sided by doubling the smaller
    tail) of the slice against the pooled rate of ``reference`` (a one-row
    summary: the model's traffic in the same window); exact because BH reads
    p-values far in the tail, where the normal approximation is too
    optimistic. Drift metrics: Pearson's chi-square test of the
    slice's bin counts against the reference profile, the profile treated as
    a sample of its own size. Other metrics: NaN (never a discovery).
    """
    from driftwatch.metrics.stats import chi2_homogeneity_p, exact_two_proportion_p

    if name in _PROPORTIONS:
        k, n = proportion_counts(m, name)
        rk, rn = proportion_counts(reference, name)
        return exact_two_proportion_p(k, n, rk - k, rn - n)
    if name in DRIFT_METRICS and feature in layout.blocks:
        b = layout.blocks[feature]
        return chi2_homogeneity_p(m[:, b.start : b.start + b.bins], b.reference, b.ref_count)
    return np.full(m.shape[0], np.nan)


_COMPARED: dict[str, tuple[tuple[str, ...], str]] = {
    m.name: (m.compares, m.comparison or "difference") for m in REGISTRY if m.kind == "comparison"
}
"""Each comparison as (the rates compared, ratio or difference), from the registry."""


@dataclass(frozen=True, slots=True)
class GroupComparison:
    """A comparison across groups: the value, interval, the smallest group's n, and the groups compared."""

    value: float
    lo: float
    hi: float
    n: int
    low_group: int = -1
    high_group: int = -1
    rates: dict[int, tuple[float, int]] = field(default_factory=dict)


def _range(k: NDArray[np.int64], n: NDArray[np.int64], kind: str) -> GroupComparison:
    kl, nl = k.tolist(), n.tolist()
    rate = [a / b for a, b in zip(kl, nl, strict=True)]
    lo_i = min(range(len(rate)), key=rate.__getitem__)
    hi_i = max(range(len(rate)), key=rate.__getitem__)
    rates = {i: (rate[i], nl[i]) for i in range(len(rate))}
    if kind == "ratio":
        value = rate[lo_i] / rate[hi_i] if rate[hi_i] > 0 else float("nan")
        lo, hi = ratio_interval(kl[lo_i], nl[lo_i], kl[hi_i], nl[hi_i])
    else:
        value = rate[hi_i] - rate[lo_i]
        lo, hi = diff_interval(kl[hi_i], nl[hi_i], kl[lo_i], nl[lo_i])
    return GroupComparison(value, lo, hi, min(nl), lo_i, hi_i, rates)


def _compare_rate(groups: S.Matrix, rate: str, kind: str, min_samples: int) -> GroupComparison | None:
    """Range or ratio of one rate across the groups with ``min_samples``; indices refer to ``groups`` rows."""
    k, n = proportion_counts(groups, rate)
    ok = n >= min_samples
    if ok.sum() < 2:
        return None
    idx = np.flatnonzero(ok)
    c = _range(k[ok], n[ok], kind)
    rates = {int(idx[i]): v for i, v in c.rates.items()}
    return GroupComparison(c.value, c.lo, c.hi, c.n, int(idx[c.low_group]), int(idx[c.high_group]), rates)


def compare_groups(name: str, groups: S.Matrix, min_samples: int) -> GroupComparison | None:
    """Compare the rows of ``groups`` (one per group); None when fewer than two groups have ``min_samples``.

    A comparison of several rates (equalized odds: TPR and FPR) is the one with the larger gap, and needs each.
    """
    bases, kind = _COMPARED[name]
    compared = [_compare_rate(groups, base, kind, min_samples) for base in bases]
    if any(c is None for c in compared):
        return None
    return max((c for c in compared if c is not None), key=lambda c: c.value)
