"""Intervals and tests, vectorised over slices: Wilson, Newcombe, Katz, two-proportion z, chi-square, BH.

All functions take numpy arrays (one entry per slice) and never divide by
zero: where a denominator is 0 the result is NaN, which callers read as
"insufficient data".
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftwatch import _fmath

__all__ = [
    "Z95",
    "benjamini_hochberg",
    "chi2_homogeneity_p",
    "diff_interval",
    "exact_two_proportion_p",
    "katz_ratio_interval",
    "load_special",
    "newcombe_diff_interval",
    "ratio_interval",
    "safe_div",
    "two_proportion_p",
    "wilson_interval",
]

F = NDArray[np.float64]
Z95 = 1.959963984540054
"""The 97.5% quantile of the standard normal: two-sided 95% intervals."""


def load_special() -> None:
    """Load what the p-values need (scipy's special functions, ~0.1 s) now: an evaluator whose rules use ``fdr_q``
    calls it when built, so the first tick it evaluates does not stall on the import (nothing else pays for it)."""
    _special()


_UFUNCS = "scipy.special._ufuncs"


def _special() -> Any:
    """scipy's compiled special functions (``bdtr``, ``bdtrc``, ``ndtr``, ``chdtrc``), without ``scipy.special``.

    ``scipy/special/__init__.py`` also loads scipy's array-API layer (``array_api_compat``, ``numpy.linalg``,
    ``numpy.f2py``, ``unittest``, ``pydoc``): ~16 MB of a worker's RSS, of which the four functions need ~4. So the
    compiled module is loaded under its own name with the package's directory on a stand-in package that is gone
    again once it has loaded: a later ``import scipy.special`` runs the real ``__init__`` and finds the very same
    module in ``sys.modules``. Anything unexpected (another scipy layout) falls back to ``scipy.special`` itself.
    """
    mod = sys.modules.get(_UFUNCS)
    if mod is not None:
        return mod
    if "scipy.special" not in sys.modules:
        try:
            import scipy

            stand_in = types.ModuleType("scipy.special")
            stand_in.__path__ = [f"{scipy.__path__[0]}/special"]
            sys.modules["scipy.special"] = stand_in
            try:
                mod = importlib.import_module(_UFUNCS)
            finally:
                if sys.modules.get("scipy.special") is stand_in:
                    del sys.modules["scipy.special"]
                if vars(scipy).get("special") is stand_in:  # not getattr: scipy imports submodules on access
                    del scipy.special
            if all(hasattr(mod, f) for f in ("bdtr", "bdtrc", "ndtr", "chdtrc")):
                return mod
        except Exception:  # any failure: the ordinary import below
            pass
        sys.modules.pop(_UFUNCS, None)  # what the attempt left: the ordinary import loads it afresh
    from scipy import special

    return special


def safe_div(num: ArrayLike, den: ArrayLike) -> F:
    """``num / den`` with NaN where ``den`` is 0.

    >>> safe_div(np.array([1, 1]), np.array([2, 0])).tolist()
    [0.5, nan]
    """
    a = np.asarray(num, dtype=np.float64)
    b = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


def wilson_interval(k: ArrayLike, n: ArrayLike) -> tuple[F, F]:
    """Wilson score 95% interval for ``k`` successes in ``n`` trials.

    >>> lo, hi = wilson_interval(np.array([5]), np.array([10]))
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.2366, 0.7634)
    """
    kf = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    p = safe_div(kf, n)
    z2 = Z95 * Z95
    nn = np.where(n > 0, n, np.nan)  # empty slices give NaN bounds, not warnings
    denom = 1 + z2 / nn
    centre = (p + z2 / (2 * nn)) / denom
    half = Z95 * np.sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom
    # Exactly 0 and 1 at k = 0 and k = n (rounding would otherwise exclude the estimate).
    lo = np.where(kf <= 0, 0.0, np.clip(centre - half, 0, 1))
    hi = np.where(kf >= n, 1.0, np.clip(centre + half, 0, 1))
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


def newcombe_diff_interval(k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike) -> tuple[F, F]:
    """Newcombe's hybrid score 95% interval for ``p1 - p2`` (method 10), built from Wilson intervals."""
    p1, p2 = safe_div(k1, n1), safe_div(k2, n2)
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return lo, hi


def katz_ratio_interval(k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike) -> tuple[F, F]:
    """Katz log 95% interval for the ratio ``p1 / p2`` (0.5 added to empty cells)."""
    k1, k2 = np.asarray(k1, np.float64), np.asarray(k2, np.float64)
    n1, n2 = np.asarray(n1, np.float64), np.asarray(n2, np.float64)
    a = np.where(k1 == 0, 0.5, k1)
    b = np.where(k2 == 0, 0.5, k2)
    ratio = safe_div(a / n1, b / n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(1 / a - 1 / n1 + 1 / b - 1 / n2)
        return ratio * _fmath.exp(-Z95 * se), ratio * _fmath.exp(Z95 * se)


def _wilson1(k: float, n: float) -> tuple[float, float]:
    z2 = Z95 * Z95
    p = k / n
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = Z95 * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / denom
    return (0.0 if k <= 0 else max(centre - half, 0.0)), (1.0 if k >= n else min(centre + half, 1.0))


def diff_interval(k1: float, n1: float, k2: float, n2: float) -> tuple[float, float]:
    """Scalar Newcombe interval for ``k1/n1 - k2/n2`` (same as :func:`newcombe_diff_interval`).

    >>> lo, hi = diff_interval(30, 100, 20, 100)
    >>> round(lo, 4), round(hi, 4)
    (-0.0202, 0.2167)
    """
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = _wilson1(min(k1, n1), n1)
    l2, u2 = _wilson1(min(k2, n2), n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def ratio_interval(k1: float, n1: float, k2: float, n2: float) -> tuple[float, float]:
    """Scalar Katz log interval for ``(k1/n1) / (k2/n2)`` (same as :func:`katz_ratio_interval`)."""
    a = k1 if k1 > 0 else 0.5
    b = k2 if k2 > 0 else 0.5
    ratio = (a / n1) / (b / n2)
    se = math.sqrt(max(1 / a - 1 / n1 + 1 / b - 1 / n2, 0.0))
    return ratio * math.exp(-Z95 * se), ratio * math.exp(Z95 * se)


def exact_two_proportion_p(k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike) -> F:
    """Two-sided exact binomial p-value of ``k1`` in ``n1`` against the pooled rate of both samples.

    Two-sided by doubling the smaller tail (capped at 1). The pooled rate is
    the rate under the null; its own sampling error is neglected, which is
    sound when the second sample (the rest of a model's traffic) is much
    larger than the slice — the situation of a rule that watches many
    slices. Used for false-discovery control: Benjamini–Hochberg reads
    p-values far in the tail (``q / m``), where the z-test's normal
    approximation is too light and lets null slices through.

    >>> p = exact_two_proportion_p(np.array([5, 30]), np.array([100, 100]), np.array([50, 50]), np.array([1000, 1000]))
    >>> bool(p[0] > 0.5), bool(p[1] < 1e-6)
    (True, True)
    """
    _sp = _special()  # loaded here: only FDR rules need it

    a = np.minimum(np.asarray(k1, np.float64), np.asarray(n1, np.float64))
    n1f = np.asarray(n1, np.float64)
    b = np.minimum(np.asarray(k2, np.float64), np.asarray(n2, np.float64))
    n2f = np.asarray(n2, np.float64)
    valid = (n1f > 0) & (n2f > 0)
    pooled = np.clip(safe_div(a + b, n1f + n2f), 0.0, 1.0)
    ai, ni = a.astype(np.int64), n1f.astype(np.int64)  # bdtr takes integer counts
    with np.errstate(invalid="ignore"):
        low = _sp.bdtr(ai, ni, pooled)  # P(X <= a)
        high = np.where(ai > 0, _sp.bdtrc(np.maximum(ai - 1, 0), ni, pooled), 1.0)  # P(X >= a)
    p = np.minimum(1.0, 2 * np.minimum(low, high))
    return np.where(valid & ~np.isnan(p), p, np.nan)


def two_proportion_p(k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike) -> F:
    """Two-sided p-value of the pooled two-proportion z-test of ``k1/n1`` against ``k2/n2``."""
    _sp = _special()  # loaded here: only FDR rules need it

    k1, k2 = np.asarray(k1, np.float64), np.asarray(k2, np.float64)
    n1, n2 = np.asarray(n1, np.float64), np.asarray(n2, np.float64)
    pooled = safe_div(k1 + k2, n1 + n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (safe_div(k1, n1) - safe_div(k2, n2)) / se
    p = 2 * _sp.ndtr(-np.abs(z))
    return np.where(se > 0, p, np.where(np.isnan(se), np.nan, 1.0))


def chi2_homogeneity_p(counts: NDArray[np.integer], ref_props: F, ref_n: float) -> F:
    """p-value of Pearson's chi-square test that each row of ``counts`` has the reference distribution.

    The reference is treated as a sample of ``ref_n`` observations (a 2 x B
    contingency table per row), so a small reference does not make every
    window look drifted. Bins empty in both samples do not count towards the
    degrees of freedom.

    >>> p = chi2_homogeneity_p(np.array([[50, 50], [90, 10]]), np.array([0.5, 0.5]), 1000)
    >>> bool(p[0] > 0.5), bool(p[1] < 1e-6)
    (True, True)
    """
    _sp = _special()  # loaded here: only FDR rules need it

    c = np.asarray(counts, np.float64)
    ref = np.asarray(ref_props, np.float64) * ref_n
    n = c.sum(axis=1, keepdims=True)
    col = c + ref  # column totals of each row's 2 x B table
    tot = n + ref_n
    with np.errstate(invalid="ignore", divide="ignore"):
        e_obs = n * col / tot
        e_ref = ref_n * col / tot
        terms = np.where(col > 0, (c - e_obs) ** 2 / e_obs + (ref - e_ref) ** 2 / e_ref, 0.0)
    stat = terms.sum(axis=1)
    dof = (col > 0).sum(axis=1) - 1
    p = _sp.chdtrc(np.maximum(dof, 1), stat)
    return np.where(n[:, 0] == 0, np.nan, np.where(dof < 1, 1.0, p))


def benjamini_hochberg(p: F, q: float) -> NDArray[np.bool_]:
    """Which hypotheses are discoveries at false-discovery rate ``q`` (NaN p-values never are).

    >>> benjamini_hochberg(np.array([0.001, 0.02, 0.04, 0.5]), 0.05).tolist()
    [True, True, False, False]
    """
    p = np.asarray(p, np.float64)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    out = np.zeros(p.shape, dtype=bool)
    if m == 0:
        return out
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(p[idx], kind="stable")]
    passed = p[order] <= q * np.arange(1, m + 1) / m
    if passed.any():
        last = int(np.flatnonzero(passed).max())
        out[order[: last + 1]] = True
    return out
