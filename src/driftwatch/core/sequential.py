"""Sequential tests: a CUSUM per rule and slice over the rule's window, by prediction time, that fires as soon as the
evidence is sure.

A window rule waits for a window to fill with changed data and then for
``for``; a sequential rule weighs each bucket of its window (a tick, or a few
for windows over ten minutes) by the log-likelihood ratio of its counts, and
fires once the largest sum over the buckets from some start to now reaches
``h``:

    S = max(0, max over starts b of  sum of e_j for j >= b),   fire while S >= h

That is Page's CUSUM, recomputed over the window each tick. Buckets are
**prediction-time** buckets: a late label or complaint is added to the bucket
of its prediction, so evidence about predictions made after a change is never
diluted by the labels of earlier, healthy predictions that arrive at the same
time (labels come minutes late, and a test by arrival time would mix both for
as long as the delay). Each bucket's evidence ``e_j``:

- **a rate** (``k`` events of ``n`` trials: selection, TPR, FPR, complaints),
  rate at ``threshold`` (the change to catch) against rate at ``baseline``
  (healthy): Bernoulli for a share (at most one per trial),
  ``k log(p1/p0) + (n - k) log((1-p1)/(1-p0))``; Poisson for a rate that counts
  several events per prediction, ``k log(p1/p0) - n (p1 - p0)``;
- **a distribution** (a feature's bin counts ``c``, PSI or JS rules): the
  reference's bin shares ``p0`` against ``q``, the slice's own shares in the
  :data:`LEARN_BUCKETS` buckets before this one, shrunk toward ``p0`` by
  :data:`PRIOR_EVENTS` events: ``sum c log(q/p0) - margin * n``. ``q`` is
  learnt only from earlier buckets, so under the reference each bucket's
  likelihood ratio has expectation 1 whatever it learnt; ``margin`` (from
  ``baseline``: PSI/2 or 4·JS², about the Kullback-Leibler divergence of a
  shift of that size) is taken per event so that a slice a little off the
  reference (a reference from a finite sample, a slice that always differed
  slightly) drifts the statistic down, not up;
- **a group against the rest** (a comparison rule: DI, SPD, TPR gap, complaint
  parity), per group, side and rate compared: conditional on the bucket's
  totals, see :func:`comparison_evidence`.

**The false-alarm bound.** For a fixed start, while the slice is at its
baseline (or healthier) the exponential of the sum is a non-negative
supermartingale as evidence arrives, in whatever order (labels in any order,
provided whether a label arrives does not depend on its value): by Ville's
inequality it ever reaches ``h`` with probability at most ``e^-h``. One new
start opens per bucket, so a slice's test alarms at most once in ``e^h``
buckets on average (Lorden 1971), and with ``m`` slices and rules the
expected false alarms over ``T`` buckets are at most ``m T e^-h``: a
Bonferroni budget, which is why ``fdr_q`` is not combined with it. The start
of the best sum is the estimated change point.

>>> e = rate_evidence(np.array([[5], [9], [10]]), np.array([[100], [100], [100]]), 0.05, 0.08, True)
>>> stat, start = max_suffix(e)
>>> round(float(stat[0]), 2), int(start[0])
(3.12, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from driftwatch import _fmath

__all__ = [
    "LEARN_BUCKETS",
    "PRIOR_EVENTS",
    "SequentialBank",
    "TestState",
    "comparison_evidence",
    "drift_evidence",
    "drift_margin",
    "max_suffix",
    "rate_evidence",
]

F = NDArray[np.float64]

LEARN_BUCKETS = 3
"""A distribution test's alternative is the slice's shares in this many buckets before the one it weighs."""
PRIOR_EVENTS = 30.0
"""...shrunk toward the reference by this many events (a slice with a handful of events learns little)."""


def rate_evidence(k: NDArray[np.int64], n: NDArray[np.int64], p0: float, p1: float, share: bool) -> F:
    """Log-likelihood ratio of ``k`` events in ``n`` trials at rate ``p1`` against ``p0``, cell by cell (Bernoulli
    if ``share``, else Poisson per trial)."""
    kf: F = np.asarray(k, np.float64)
    nf: F = np.asarray(n, np.float64)
    out: F
    if share:
        kf = np.minimum(kf, nf)
        out = kf * _fmath.log(p1 / p0) + (nf - kf) * _fmath.log((1 - p1) / (1 - p0))
    else:
        out = kf * _fmath.log(p1 / p0) - nf * (p1 - p0)
    return out


def drift_margin(metric: str, baseline: float) -> float:
    """Nats per event a distribution test gives up: about the Kullback-Leibler divergence of a shift whose
    ``metric`` (``psi`` or ``js_distance``) is ``baseline`` (for small shifts KL ~ PSI/2 ~ 4 JS divergence)."""
    return baseline / 2 if metric == "psi" else 4 * baseline * baseline


def drift_evidence(counts: NDArray[np.int64], reference: F, ref_count: int, margin: float) -> F:
    """Evidence of each bucket and slice (``counts``: buckets x slices x bins) that the slice left ``reference``
    (bin shares of ``ref_count`` reference rows; smoothed so that no bin is impossible)."""
    b, r, bins = counts.shape
    ref = np.asarray(reference, np.float64)
    p0 = (ref * ref_count + 0.5) / (ref_count + 0.5 * bins)
    c = counts.astype(np.float64)
    seen = np.zeros((b + 1, r, bins))
    np.cumsum(c, axis=0, out=seen[1:])
    lag = np.maximum(np.arange(b) - LEARN_BUCKETS, 0)
    recent = seen[:-1] - seen[lag]
    q = (recent + PRIOR_EVENTS * p0) / (recent.sum(axis=2, keepdims=True) + PRIOR_EVENTS)
    out: F = (c * _fmath.log(q / p0)).sum(axis=2) - margin * c.sum(axis=2)
    return out


def comparison_evidence(
    k: NDArray[np.int64],
    n: NDArray[np.int64],
    share: bool,
    ratio: bool,
    threshold: float,
    baseline: float,
    high: bool,
) -> F:
    """Evidence of each bucket and group (``k`` events of ``n`` trials: buckets x groups) that the group's rate sits
    at ``threshold`` from the rest's rather than at ``baseline``: a ratio (group over rest) or a difference (group
    minus rest), below the rest (``high`` False) or above it.

    The test is conditional on each bucket's totals, so the rate both share cancels out: for a share, given the
    ``K`` events among the group's ``n_g`` and the rest's ``n_r`` trials, the group's count follows Fisher's
    noncentral hypergeometric law with the odds ratio of the two rates; for a count per prediction (complaints),
    given ``K`` events, the group's are binomial with ``n_g ρ / (n_g ρ + n_r)``, ``ρ`` the rate ratio. A
    difference (and, for a share, a ratio) becomes an odds or rate ratio at the bucket's pooled rate ``K / (n_g +
    n_r)``, a function of the totals the test is conditional on, so each bucket's evidence is exact whatever the
    rates are and depends on that bucket alone. A bucket whose alternative is impossible there (a difference
    below 0) weighs nothing."""
    kf, nf = np.asarray(k, np.float64), np.asarray(n, np.float64)
    if share:
        kf = np.minimum(kf, nf)
    kt, nt = kf.sum(axis=1, keepdims=True), nf.sum(axis=1, keepdims=True)
    kr, nr = kt - kf, nt - nf
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.broadcast_to(kt / nt, kf.shape)
    sign = 1.0 if high else -1.0

    def group_rate(at: float) -> F:
        if ratio:
            out: F = r * at if not high else r / at
        else:
            out = r + sign * at
        return out

    p1, p0 = group_rate(threshold), group_rate(baseline)
    top = 1.0 if share else np.inf
    usable = (nf > 0) & (nr > 0) & (r > 0) & (r < top) & (p1 > 0) & (p1 < top) & (p0 > 0) & (p0 < top)
    out = np.zeros_like(kf)
    if not usable.any():
        return out
    kg, ng, nrest, rr = kf[usable], nf[usable], nr[usable], r[usable]
    a1, a0 = p1[usable], p0[usable]
    total = kg + kr[usable]
    if share:

        def odds(p: F) -> F:
            return p / (1 - p)

        log1, log0 = _fmath.log(odds(a1) / odds(rr)), _fmath.log(odds(a0) / odds(rr))
        ni, nri, ti = ng.astype(np.int64), nrest.astype(np.int64), total.astype(np.int64)
        z1, z0 = _log_fnch_norm(ni, nri, ti, log1), _log_fnch_norm(ni, nri, ti, log0)
        out[usable] = kg * (log1 - log0) - (z1 - z0)
    else:
        pi1 = ng * (a1 / rr) / (ng * (a1 / rr) + nrest)
        pi0 = ng * (a0 / rr) / (ng * (a0 / rr) + nrest)
        out[usable] = kg * _fmath.log(pi1 / pi0) + (total - kg) * _fmath.log((1 - pi1) / (1 - pi0))
    return out


def _log_fnch_norm(n1: NDArray[np.int64], n2: NDArray[np.int64], total: NDArray[np.int64], log_odds: F) -> F:
    """log of Fisher's noncentral hypergeometric normaliser, ``sum_x C(n1, x) C(n2, total - x) e^(x log_odds)``
    over the support, cell by cell (the binomial coefficients from one table of log factorials)."""
    lo = np.maximum(0, total - n2)
    hi = np.minimum(n1, total)
    width = int((hi - lo).max()) + 1
    x = lo[:, None] + np.arange(width)[None, :]
    inside = x <= hi[:, None]
    x = np.where(inside, x, lo[:, None])
    logf = np.concatenate([[0.0], np.cumsum(_fmath.log(np.arange(1, int((n1 + n2).max()) + 1)))])
    y = total[:, None] - x
    terms = (
        logf[n1][:, None]
        - logf[x]
        - logf[n1[:, None] - x]
        + logf[n2][:, None]
        - logf[y]
        - logf[n2[:, None] - y]
        + x * log_odds[:, None]
    )
    terms = np.where(inside, terms, -np.inf)
    top = terms.max(axis=1)
    out: F = top + _fmath.log(_fmath.exp(terms - top[:, None]).sum(axis=1))
    return out


def max_suffix(evidence: F) -> tuple[F, NDArray[np.intp]]:
    """Per column of ``evidence`` (buckets x slices): the CUSUM statistic, the largest sum from some bucket to the
    last (0 if every such sum is negative), and that first bucket (-1 at 0)."""
    if evidence.shape[0] == 0:
        return np.zeros(evidence.shape[1]), np.full(evidence.shape[1], -1, np.intp)
    sums = np.cumsum(evidence[::-1], axis=0)[::-1]
    start = np.argmax(sums, axis=0)
    stat = np.maximum(sums[start, np.arange(sums.shape[1])], 0.0)
    return stat, np.where(stat > 0, start, -1)


@dataclass(slots=True)
class TestState:
    """A slice's test as last computed: its statistic, change point and when (event time)."""

    statistic: float = 0.0
    start: float | None = None
    updated: float | None = None


Key = tuple[str, str | None, str | None, str | None, str | None]
"""(rule, model, version, attribute, slice): what tells one rule's alerts apart (its other labels are the rule's)."""


class SequentialBank:
    """The latest statistic of every sequential test, by rule and alert labels (for /metrics and evidence). Nothing
    here is checkpointed: each statistic is recomputed from its window, which is."""

    def __init__(self) -> None:
        self._tests: dict[Key, tuple[dict[str, str], TestState]] = {}

    @staticmethod
    def key(rule: str, labels: Mapping[str, str]) -> Key:
        """The key of a rule's alert labels."""
        return (rule, labels.get("model"), labels.get("version"), labels.get("attribute"), labels.get("slice"))

    def record(self, rule: str, labels: dict[str, str], statistic: float, start: float | None, now: float) -> None:
        """Keep what the test of ``rule`` for ``labels`` computed at ``now``."""
        self._tests[self.key(rule, labels)] = (labels, TestState(statistic, start, now))

    def items(self) -> Iterable[tuple[str, dict[str, str], TestState]]:
        """(rule, labels, test) of every test."""
        return ((key[0], labels, t) for key, (labels, t) in self._tests.items())

    def forget_idle(self, rule: str, now: float, idle: float) -> None:
        """Forget ``rule``'s tests not computed for ``idle`` seconds (their slice left the top-k or went quiet)."""
        for key in [
            k for k, (_, t) in self._tests.items() if k[0] == rule and (t.updated is None or now - t.updated >= idle)
        ]:
            del self._tests[key]

    def drop(self, mine: Callable[[Mapping[str, str]], bool]) -> None:
        """Forget the tests whose labels ``mine`` accepts."""
        for key in [k for k, (labels, _) in self._tests.items() if mine(labels)]:
            del self._tests[key]
