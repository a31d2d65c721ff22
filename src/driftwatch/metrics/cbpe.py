"""Confidence-based performance estimation (CBPE): a classifier's expected accuracy, recall, AUC… without labels.

What it is. A binary classifier emits a score and a decision (score at or
above a threshold). If the score, after a calibration map fitted on labelled
reference data, is the probability that the label is 1, then for every
unlabelled production row that probability ``p`` is the expected value of its
label, and the expected confusion matrix follows by summation: a row predicted
positive adds ``p`` to TP and ``1 - p`` to FP, a row predicted negative adds
``p`` to FN and ``1 - p`` to TN. Accuracy, recall, precision, F1 and the false
positive rate are ratios of those sums; ROC AUC is the area under the curve
traced by the expected positives and negatives when rows are ranked by score.
This is NannyML's CBPE (``nannyml.CBPE`` for ``classification_binary``); its
isotonic calibration and formulas are reproduced here and tested against
nannyml 0.13.1.

Assumptions. The calibration fitted on the reference must still hold in
production: P(y | score) is unchanged (no concept drift). Covariate shift, a
change in the distribution of scores or inputs with the same P(y | score), is
exactly what CBPE handles. When the relationship itself changes (labels flip,
the base rate moves at a fixed score) the estimate keeps reporting the old
performance: CBPE cannot see concept drift, only realised metrics from labels
can. The calibration map is a step-and-ramp function fitted on finite data, so
sparse score regions of the reference are calibrated coarsely.

Binning. The streaming core does not keep rows, so it keeps, per tick and
slice, three additive histograms over fixed score bins (:func:`bin_sums`):
the row count, the count predicted positive and the sum of calibrated
probabilities. Sums over ticks or slices combine by element-wise addition.
Let the decision threshold be one of the bin edges: every bin is then wholly
predicted positive or wholly negative, and the expected confusion matrix, and
so accuracy, recall, FPR, precision and F1, are exactly the row-level values
(the tests assert 1e-9 relative against nannyml). A bin that straddles the
decision is split in proportion to its predicted-positive count, as if ``p``
were uniform within it; the error in TP is then at most ``n_b Δ_b / 4``, with
``n_b`` the rows of that bin and ``Δ_b`` the spread of calibrated probability
across it. ROC AUC is the one estimate that binning changes: rows in a bin are
treated as tied (a diagonal segment of the curve), whereas row-level CBPE
ranks them by score. Because calibration is non-decreasing in score, the
row-level value is never lower, and larger by at most
``Σ_b n_b² Δ_b / (4 P N)`` (``P``, ``N`` the expected positives and negatives).
For 100 equal-width bins over a smooth calibration this is of the order of
1e-4; the tests assert that bound and an absolute 0.002.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Calibration",
    "Estimate",
    "Estimates",
    "bin_index",
    "bin_sums",
    "estimate",
    "estimate_many",
]

F = NDArray[np.float64]
I64 = NDArray[np.int64]

_TIE_EPS = float(np.finfo(np.float64).resolution)
"""Scores closer than this to the first of a run are one point, as scikit-learn's ``_make_unique`` pools them."""


def _pool_ties(x: F, y: F, w: F) -> tuple[F, F, F]:
    """Sorted ``x`` to (distinct x, weighted mean y, summed weight), pooling as scikit-learn does."""
    distinct = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    xs = x[distinct]
    if xs.size > 1 and np.min(np.diff(xs)) < _TIE_EPS:
        # Greedy from the first value of each run: near-equal values are rare, so the loop stays short.
        keep = [0]
        for i in range(1, xs.size):
            if xs[i] - xs[keep[-1]] >= _TIE_EPS:
                keep.append(i)
        distinct = distinct[np.asarray(keep)]
        xs = x[distinct]
    wsum = np.add.reduceat(w, distinct)
    wysum = np.add.reduceat(w * y, distinct)
    return xs, wysum / wsum, wsum


def _pava(y: F, w: F) -> F:
    """Weighted least-squares non-decreasing fit of ``y``: pool adjacent violators.

    The single-pass form of Busing (2022), "Monotone Regression: A Simple and
    Fast O(n) PAVA Implementation", J. Stat. Softw. 102(1), which scipy's
    ``optimize.isotonic_regression`` (behind scikit-learn's) also follows:
    the same pooling order gives the same rounding, so without weights the
    breakpoints match scikit-learn's bit for bit (with weights, tied scores
    are summed in another order and the last bits can differ).
    """
    vals = y.tolist()
    wts = w.tolist()
    n = len(vals)
    level = vals[:]  # level[b], weight[b]: value and weight of block b, for b < number of blocks
    weight = wts[:]
    start = [0] * (n + 1)  # block b covers rows start[b] .. start[b + 1] - 1
    start[1] = 1
    b = 0
    prev_level, prev_weight = vals[0], wts[0]
    i = 1
    while i < n:
        b += 1
        cur, cur_w = vals[i], wts[i]
        if prev_level >= cur:
            b -= 1
            total = prev_weight * prev_level + cur_w * cur
            cur_w += prev_weight
            cur = total / cur_w
            while i < n - 1 and cur >= vals[i + 1]:
                i += 1
                total += wts[i] * vals[i]
                cur_w += wts[i]
                cur = total / cur_w
            while b > 0 and level[b - 1] >= cur:
                b -= 1
                total += weight[b] * level[b]
                cur_w += weight[b]
                cur = total / cur_w
        level[b] = prev_level = cur
        weight[b] = prev_weight = cur_w
        start[b + 1] = i + 1
        i += 1
    sizes = np.diff(np.asarray(start[: b + 2]))
    return np.repeat(np.asarray(level[: b + 1], np.float64), sizes)


@dataclass(frozen=True, slots=True)
class Calibration:
    """An isotonic map from raw score to the probability that the label is 1.

    ``x`` holds increasing breakpoints (scores) and ``y`` the calibrated value
    at each; between breakpoints the map is linear and outside them it is
    clipped to the end values, as scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")`` predicts.

    >>> cal = Calibration.fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    >>> cal.x, cal.y
    ((0.1, 0.2, 0.3, 0.4), (0.0, 0.5, 0.5, 1.0))
    >>> cal.apply(np.array([0.0, 0.15, 0.3, 0.9])).round(6).tolist()
    [0.0, 0.25, 0.5, 1.0]
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    _xa: F = field(init=False, repr=False, compare=False)
    _ya: F = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        xa = np.asarray(self.x, np.float64)
        ya = np.asarray(self.y, np.float64)
        if xa.ndim != 1 or xa.shape != ya.shape or xa.size < 2:
            raise ValueError(
                f"calibration needs two equally long lists of at least 2 points, got {xa.size} and {ya.size}"
            )
        if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
            raise ValueError("calibration breakpoints must be finite")
        if np.any(np.diff(xa) <= 0):
            raise ValueError("calibration breakpoints x must be strictly increasing")
        if np.any(np.diff(ya) < 0) or ya[0] < 0 or ya[-1] > 1:
            raise ValueError("calibrated values y must be non-decreasing and within [0, 1]")
        object.__setattr__(self, "x", tuple(xa.tolist()))
        object.__setattr__(self, "y", tuple(ya.tolist()))
        object.__setattr__(self, "_xa", xa)
        object.__setattr__(self, "_ya", ya)

    @classmethod
    def fit(cls, scores: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None) -> Calibration:
        """Fit the isotonic (non-decreasing) map of ``labels`` on ``scores``, optionally weighted.

        Scores closer than 1e-15 to each other are pooled into one point with
        the weighted mean label, rows of zero weight are dropped, fitted values
        are confined to [0, 1], and breakpoints inside a flat run are dropped:
        the result is scikit-learn's ``IsotonicRegression(out_of_bounds="clip",
        y_min=0, y_max=1)``. Raises ``ValueError`` for NaN or infinite scores,
        labels other than 0 and 1, negative or non-finite weights, mismatched
        lengths, or fewer than 2 distinct scores.
        """
        s = np.asarray(scores, np.float64).ravel()
        lab = np.asarray(labels, np.float64).ravel()
        if s.shape != lab.shape:
            raise ValueError(f"scores and labels differ in length: {s.size} and {lab.size}")
        if not np.all(np.isfinite(s)):
            raise ValueError("scores contain NaN or infinite values: drop those rows before calibrating")
        if not np.all((lab == 0) | (lab == 1)):
            raise ValueError("labels must be 0 or 1 (NaN and other values are not labels)")
        if weights is None:
            w = np.ones_like(s)
        else:
            w = np.asarray(weights, np.float64).ravel()
            if w.shape != s.shape:
                raise ValueError(f"weights and scores differ in length: {w.size} and {s.size}")
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("weights must be finite and non-negative")
            keep = w > 0
            s, lab, w = s[keep], lab[keep], w[keep]
        order = np.lexsort((lab, s))
        xs, ys, ws = _pool_ties(s[order], lab[order], w[order])
        if xs.size < 2:
            raise ValueError(f"calibration needs at least 2 distinct scores with positive weight, got {xs.size}")
        fitted = np.clip(_pava(ys, ws), 0.0, 1.0)
        keep_pt = np.ones(fitted.size, dtype=bool)
        keep_pt[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
        return cls(tuple(xs[keep_pt].tolist()), tuple(fitted[keep_pt].tolist()))

    @classmethod
    def identity(cls) -> Calibration:
        """The map ``p = score`` on [0, 1], for scores that are already probabilities."""
        return cls((0.0, 1.0), (0.0, 1.0))

    def apply(self, scores: ArrayLike) -> F:
        """Calibrated probabilities of ``scores``: linear between breakpoints, clipped outside; NaN stays NaN."""
        s = np.asarray(scores, np.float64)
        return np.interp(np.clip(s, self._xa[0], self._xa[-1]), self._xa, self._ya)

    def to_json(self) -> dict[str, list[float]]:
        """Plain dict for a JSON reference profile: ``{"x": [...], "y": [...]}``."""
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_json(cls, data: object) -> Calibration:
        """Read :meth:`to_json` back; ``ValueError`` if it is not two lists of numbers forming a valid map."""
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration JSON must be an object, got {type(data).__name__}")
        xs, ys = data.get("x"), data.get("y")
        if not isinstance(xs, list) or not isinstance(ys, list):
            raise ValueError("calibration JSON needs lists 'x' and 'y'")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in [*xs, *ys]):
            raise ValueError("calibration JSON 'x' and 'y' must hold numbers only")
        return cls(tuple(float(v) for v in xs), tuple(float(v) for v in ys))


def bin_index(scores: F, edges: F) -> NDArray[np.intp]:
    """The bin of each score over ``edges`` as :func:`bin_sums` counts it (outside the edges: the end bins)."""
    return np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, edges.size - 2)


def bin_sums(
    scores: ArrayLike, predictions: ArrayLike, calibration: Calibration, edges: ArrayLike
) -> tuple[I64, I64, F]:
    """Per score bin: (row count, rows predicted positive, sum of calibrated probability).

    Bins follow ``np.histogram``: ``[e_b, e_{b+1})`` with the last one closed;
    scores outside the edges count in the end bins, so every row is counted.
    Put the decision threshold on an edge (e.g. edges ``np.linspace(0, 1,
    101)`` and threshold 0.5) so that each bin is wholly predicted positive
    or negative and :func:`estimate` is exact for the confusion matrix; any
    other threshold still works, with the straddling bin split in proportion
    (see the module docstring for the error).

    The three arrays are additive: the sums of two disjoint sets of rows
    (two ticks, two slices) are the element-wise sums of their arrays, so
    windows and roll-ups are built by addition without keeping rows.

    >>> c, pos, cal = bin_sums([0.1, 0.6, 0.7], [0, 1, 1], Calibration.identity(), [0.0, 0.5, 1.0])
    >>> c.tolist(), pos.tolist(), [round(v, 6) for v in cal.tolist()]
    ([1, 2], [0, 2], [0.1, 1.3])
    """
    s = np.asarray(scores, np.float64).ravel()
    pred = np.asarray(predictions).ravel()
    e = np.asarray(edges, np.float64).ravel()
    if pred.shape != s.shape:
        raise ValueError(f"scores and predictions differ in length: {s.size} and {pred.size}")
    if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be at least 2 finite, strictly increasing values")
    if np.any(np.isnan(s)):
        raise ValueError("scores contain NaN: drop those rows before binning")
    if pred.dtype != np.bool_:
        if not np.all((pred == 0) | (pred == 1)):
            raise ValueError("predictions must be booleans or 0/1")
        pred = pred == 1
    nbins = e.size - 1
    idx = bin_index(s, e)
    count = np.bincount(idx, minlength=nbins).astype(np.int64)
    positive = np.bincount(idx[pred], minlength=nbins).astype(np.int64)
    calibrated: F = np.bincount(idx, weights=calibration.apply(s), minlength=nbins).astype(np.float64)
    return count, positive, calibrated


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected confusion matrix and metrics of one set of rows; NaN where a metric's denominator is 0.

    ``tpr`` is recall and ``fpr`` is 1 - specificity. ``n`` is the row count.
    """

    n: float
    tp: float
    fp: float
    fn: float
    tn: float
    accuracy: float
    tpr: float
    fpr: float
    precision: float
    f1: float
    roc_auc: float

    @property
    def recall(self) -> float:
        """Expected recall, the same as :attr:`tpr`."""
        return self.tpr

    @property
    def specificity(self) -> float:
        """Expected specificity (true negative rate), ``tn / (tn + fp)``."""
        den = self.tn + self.fp
        return self.tn / den if den != 0 else math.nan


@dataclass(frozen=True, slots=True)
class Estimates:
    """:class:`Estimate` for many slices at once: each field is an array with one entry per slice."""

    n: F
    tp: F
    fp: F
    fn: F
    tn: F
    accuracy: F
    tpr: F
    fpr: F
    precision: F
    f1: F
    roc_auc: F

    @property
    def recall(self) -> F:
        """Expected recall per slice, the same as :attr:`tpr`."""
        return self.tpr

    @property
    def specificity(self) -> F:
        """Expected specificity per slice, ``tn / (tn + fp)``."""
        return _div(self.tn, self.tn + self.fp)

    def row(self, i: int) -> Estimate:
        """The estimate of slice ``i`` alone."""
        return Estimate(**{f.name: float(getattr(self, f.name)[i]) for f in fields(self)})


def _div(num: F, den: F) -> F:
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def estimate_many(count: ArrayLike, predicted_positive: ArrayLike, calibrated_sum: ArrayLike) -> Estimates:
    """CBPE estimates for many slices: inputs are ``(slices, bins)`` arrays of :func:`bin_sums` outputs.

    Bins must be in increasing score order (as :func:`bin_sums` returns
    them). Never raises on empty slices or bins: metrics whose denominator
    is 0 are NaN.

    >>> est = estimate_many([[0, 10, 10], [0, 0, 0]], [[0, 0, 10], [0, 0, 0]], [[0.0, 2.0, 8.0], [0.0, 0.0, 0.0]])
    >>> est.tp.tolist(), est.accuracy.tolist()[0], est.tpr.tolist()[0], est.roc_auc.tolist()[0]
    ([8.0, 0.0], 0.8, 0.8, 0.8)
    >>> bool(np.isnan(est.accuracy[1]))
    True
    """
    c = np.asarray(count, np.float64)
    pos = np.asarray(predicted_positive, np.float64)
    cal = np.asarray(calibrated_sum, np.float64)
    if c.ndim != 2 or c.shape != pos.shape or c.shape != cal.shape:
        raise ValueError(
            f"count, predicted_positive and calibrated_sum must be equal (slices, bins) arrays, got {c.shape}, {pos.shape}, {cal.shape}"
        )
    share = np.divide(pos, c, out=np.zeros_like(c), where=c > 0)
    # Whole bins take the sum as is, so a threshold on an edge reproduces row-level sums exactly.
    tp_b = np.where(pos >= c, cal, np.where(pos <= 0, 0.0, cal * share))
    neg_b = np.clip(c - cal, 0.0, None)
    fp_b = np.where(pos >= c, neg_b, np.where(pos <= 0, 0.0, neg_b * share))
    n = c.sum(axis=1)
    tp, fp = tp_b.sum(axis=1), fp_b.sum(axis=1)
    expected_pos, expected_neg = cal.sum(axis=1), neg_b.sum(axis=1)
    fn = expected_pos - tp
    tn = expected_neg - fp
    accuracy = _div(tp + tn, n)
    tpr = _div(tp, expected_pos)
    fpr = _div(fp, expected_neg)
    precision = _div(tp, tp + fp)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    # Expected ROC curve from the highest-score bin down; rows within a bin are tied (a diagonal step).
    p_desc, n_desc = cal[:, ::-1], neg_b[:, ::-1]
    above = np.cumsum(p_desc, axis=1) - p_desc
    area = (n_desc * (above + p_desc / 2)).sum(axis=1)
    roc_auc = _div(area, expected_pos * expected_neg)
    return Estimates(
        n=n,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        accuracy=accuracy,
        tpr=tpr,
        fpr=fpr,
        precision=precision,
        f1=f1,
        roc_auc=roc_auc,
    )


def estimate(count: ArrayLike, predicted_positive: ArrayLike, calibrated_sum: ArrayLike) -> Estimate:
    """CBPE estimate of one set of rows from its :func:`bin_sums` (1-D arrays, bins in increasing score order).

    >>> c, pos, cal = bin_sums([0.2, 0.4, 0.6, 0.8], [0, 0, 1, 1], Calibration.identity(), np.linspace(0, 1, 11))
    >>> est = estimate(c, pos, cal)
    >>> round(est.tp, 6), round(est.fp, 6), round(est.fn, 6), round(est.tn, 6)
    (1.4, 0.6, 0.6, 1.4)
    >>> round(est.accuracy, 6), round(est.roc_auc, 6)
    (0.7, 0.75)
    """
    c = np.asarray(count, np.float64)
    pos = np.asarray(predicted_positive, np.float64)
    cal = np.asarray(calibrated_sum, np.float64)
    if c.ndim != 1:
        raise ValueError(f"estimate takes 1-D per-bin arrays, got shape {c.shape}: use estimate_many for slices")
    return estimate_many(c[None, :], pos[None, :], cal[None, :]).row(0)
