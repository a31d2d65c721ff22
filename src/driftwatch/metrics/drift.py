"""Distribution drift against a reference: PSI and Jensen-Shannon distance, per slice, with intervals.

Inputs are bin counts per slice (rows) over the reference bins (columns) and
the reference proportions. Intervals are 95% delta-method (multinomial)
intervals around the observed value, clipped at 0; they describe sampling
noise of the window, not of the reference.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from driftwatch import _fmath
from driftwatch.metrics.stats import Z95

__all__ = ["PSI_EPSILON", "js_distance", "psi"]

F = NDArray[np.float64]
PSI_EPSILON = 1e-4
"""Empty bins are clipped to this proportion before PSI's logarithm (Evidently's choice too)."""


def _props(counts: NDArray[np.integer]) -> tuple[F, F]:
    c = np.asarray(counts, np.float64)
    n = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return c / n[:, None], n


def psi(counts: NDArray[np.integer], reference: F) -> tuple[F, F, F]:
    """Population stability index of each row against ``reference``: (value, lo, hi).

    >>> v, lo, hi = psi(np.array([[50, 50]]), np.array([0.5, 0.5]))
    >>> float(v[0])
    0.0
    """
    q, n = _props(counts)
    p = np.clip(np.asarray(reference, np.float64), PSI_EPSILON, None)
    qc = np.clip(q, PSI_EPSILON, None)
    log = _fmath.log(qc / p)
    value = ((qc - p) * log).sum(axis=1)
    g = log + 1 - p / qc
    with np.errstate(invalid="ignore"):
        var = ((q * g * g).sum(axis=1) - (q * g).sum(axis=1) ** 2) / n
    half = Z95 * np.sqrt(np.clip(var, 0, None))
    value = np.where(n > 0, value, np.nan)
    return value, np.clip(value - half, 0, None), value + half


def js_distance(counts: NDArray[np.integer], reference: F) -> tuple[F, F, F]:
    """Jensen-Shannon distance (natural log, as ``scipy.spatial.distance.jensenshannon``): (value, lo, hi).

    >>> v, _, _ = js_distance(np.array([[10, 0]]), np.array([0.0, 1.0]))
    >>> round(float(v[0]), 6) == round(float(np.sqrt(np.log(2))), 6)
    True
    """
    q, n = _props(counts)
    p = np.asarray(reference, np.float64)
    p = p / p.sum()
    m = (p + q) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        log_q = _fmath.log(q / m)
        kl_p = np.where(p > 0, p * _fmath.log(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * log_q, 0.0).sum(axis=1)
        jsd = np.clip((kl_p + kl_q) / 2, 0, None)
        value = np.sqrt(jsd)
        h = np.where(q > 0, 0.5 * log_q, 0.0)
        var_jsd = ((q * h * h).sum(axis=1) - (q * h).sum(axis=1) ** 2) / n
        var = var_jsd / (4 * jsd)
    half = Z95 * np.sqrt(np.where(np.isfinite(var), np.clip(var, 0, None), 0.0))
    value = np.where(n > 0, value, np.nan)
    return value, np.clip(value - half, 0, None), value + half
