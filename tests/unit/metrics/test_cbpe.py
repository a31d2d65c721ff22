"""Tests for confidence-based performance estimation in `driftwatch.metrics.cbpe`.

Calibration is checked against scikit-learn's IsotonicRegression, and the estimates against nannyml 0.13.1's CBPE
(imported inside the oracle fixture, so the rest of the file stays fast and a missing nannyml fails those tests).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from driftwatch.metrics.cbpe import Calibration, Estimate, bin_sums, estimate, estimate_many

F = NDArray[np.float64]

EDGES = np.linspace(0.0, 1.0, 101)
THRESHOLD = 0.5  # one of EDGES: every bin is wholly predicted positive or negative
CHUNK = 4000
N_CHUNKS = 6  # nannyml warns below 6 chunks

# Confusion-matrix sums over whole bins equal the row-level sums; only the summation order differs.
CM_REL = 1e-9
# Binned ROC AUC ties the rows of a bin; the module docstring bounds the gap, and for this data it is ~1e-4.
AUC_ABS = 0.002


def _population(rng: np.random.Generator, n: int, a: float, b: float) -> tuple[F, NDArray[np.int64]]:
    """Scores ~ Beta(a, b) and labels ~ Bernoulli(score²): over-confident scores, so calibration matters."""
    scores = rng.beta(a, b, n)
    labels = (rng.random(n) < scores**2).astype(np.int64)
    return scores, labels


def _realised(labels: NDArray[np.int64], predictions: NDArray[np.bool_]) -> dict[str, float]:
    tp = float(np.sum(predictions & (labels == 1)))
    fp = float(np.sum(predictions & (labels == 0)))
    fn = float(np.sum(~predictions & (labels == 1)))
    tn = float(np.sum(~predictions & (labels == 0)))
    return {"accuracy": (tp + tn) / labels.size, "precision": tp / (tp + fp), "recall": tp / (tp + fn)}


def _auc_binning_bound(cal: Calibration, count: NDArray[np.int64], cal_sum: F) -> float:
    """The module docstring's bound on row-level minus binned ROC AUC: Σ n_b² Δ_b / (4 P N)."""
    spread = np.diff(cal.apply(EDGES))
    p = float(cal_sum.sum())
    n = float(count.sum()) - p
    return float(np.sum(count.astype(np.float64) ** 2 * spread) / (4 * p * n))


# --- Calibration against scikit-learn -------------------------------------------------------------------------------


def _calibration_case(kind: str, seed: int) -> tuple[F, F, F | None]:
    rng = np.random.default_rng(seed)
    n = 2000
    scores = rng.random(n)
    weights = None
    if kind == "ties":
        scores = np.round(scores, 2)
    elif kind == "near_ties":  # closer than scikit-learn's 1e-15 pooling tolerance, yet distinct floats
        scores = np.round(scores, 1) + rng.integers(0, 4, n) * 1e-16
    elif kind == "weighted":
        scores = np.round(scores, 2)
        weights = rng.random(n) * 3
        weights[rng.random(n) < 0.1] = 0.0
    elif kind == "skewed":
        scores = scores**4
    labels = (rng.random(n) < scores**2).astype(np.float64)
    return scores, labels, weights


@pytest.mark.parametrize("kind", ["continuous", "ties", "near_ties", "weighted", "skewed"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_equals_sklearn_isotonic(kind: str, seed: int) -> None:
    """apply() equals IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).predict to 1e-12, also between,
    on and outside the breakpoints; breakpoints are the same scores."""
    scores, labels, weights = _calibration_case(kind, seed)
    ours = Calibration.fit(scores, labels, weights)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, labels, sample_weight=weights)
    probe = np.r_[np.linspace(-0.5, 1.5, 4001), scores, ref.X_thresholds_, -1e9, 1e9]
    assert np.max(np.abs(ours.apply(probe) - ref.predict(probe))) <= 1e-12
    assert np.array_equal(np.asarray(ours.x), ref.X_thresholds_)
    assert np.allclose(ours.y, ref.y_thresholds_, rtol=0, atol=1e-12)


def test_calibration_json_round_trip() -> None:
    """to_json is plain lists of floats that survive json and give back an equal, equally applying map."""
    scores, labels, _ = _calibration_case("continuous", 3)
    cal = Calibration.fit(scores, labels)
    doc = json.loads(json.dumps(cal.to_json()))
    assert set(doc) == {"x", "y"}
    assert all(isinstance(v, float) for v in doc["x"] + doc["y"])
    back = Calibration.from_json(doc)
    assert back == cal
    probe = np.linspace(-0.1, 1.1, 999)
    assert np.array_equal(back.apply(probe), cal.apply(probe))


@pytest.mark.parametrize(
    ("scores", "labels", "weights", "message"),
    [
        ([0.3, 0.3, 0.3], [0, 1, 1], None, "2 distinct scores"),
        ([0.3, 0.3 + 1e-17], [0, 1], None, "2 distinct scores"),
        ([0.1, 0.9], [0, 1], [1.0, 0.0], "2 distinct scores"),
        ([0.1, 0.5, 0.9], [0, 2, 1], None, "0 or 1"),
        ([0.1, 0.5, 0.9], [0, math.nan, 1], None, "0 or 1"),
        ([0.1, math.nan, 0.9], [0, 1, 1], None, "NaN"),
        ([0.1, 0.5], [0, 1, 1], None, "length"),
        ([0.1, 0.5], [0, 1], [1.0, -1.0], "non-negative"),
    ],
)
def test_calibration_rejects_bad_reference(
    scores: list[float], labels: list[float], weights: list[float] | None, message: str
) -> None:
    """Too few distinct scores, labels other than 0/1, NaN and bad weights are ValueErrors that say so."""
    with pytest.raises(ValueError, match=message):
        Calibration.fit(np.asarray(scores), np.asarray(labels), None if weights is None else np.asarray(weights))


@pytest.mark.parametrize(
    "doc",
    [
        {"x": [0.0, 1.0]},
        {"x": [0.0, 1.0], "y": [0.0]},
        {"x": [1.0, 0.0], "y": [0.0, 1.0]},
        {"x": [0, 1], "y": [0.6, 0.4]},
        {"x": ["0", 1], "y": [0, 1]},
        [0.0, 1.0],
    ],
)
def test_calibration_from_json_rejects_invalid(doc: object) -> None:
    """A stored map that is not two equal lists of increasing x and non-decreasing y in [0, 1] is refused."""
    with pytest.raises(ValueError):
        Calibration.from_json(doc)


# --- Binning and the estimate on their own ---------------------------------------------------------------------------


def test_bin_sums_are_additive_over_ticks_and_slices() -> None:
    """The bin sums of two halves add up to those of the whole, and estimate_many equals estimate row by row."""
    rng = np.random.default_rng(11)
    ref_s, ref_y = _population(rng, 5000, 2, 2)
    cal = Calibration.fit(ref_s, ref_y)
    scores, _ = _population(rng, 3001, 3, 1.5)
    pred = scores >= THRESHOLD
    whole = bin_sums(scores, pred, cal, EDGES)
    first = bin_sums(scores[:1234], pred[:1234], cal, EDGES)
    second = bin_sums(scores[1234:], pred[1234:], cal, EDGES)
    assert np.array_equal(first[0] + second[0], whole[0])
    assert np.array_equal(first[1] + second[1], whole[1])
    assert np.allclose(first[2] + second[2], whole[2], rtol=1e-12, atol=0)
    assert int(whole[0].sum()) == scores.size

    slices = [first, second, whole, tuple(np.zeros_like(a) for a in whole)]
    many = estimate_many(*(np.stack([s[i] for s in slices]) for i in range(3)))
    for i, s in enumerate(slices):
        assert _same(many.row(i), estimate(*s))


def _same(a: Estimate, b: Estimate) -> bool:
    fields = ("n", "tp", "fp", "fn", "tn", "accuracy", "tpr", "fpr", "precision", "f1", "roc_auc")
    return all(np.allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=0, equal_nan=True) for f in fields)


def test_estimate_many_rows_equal_estimate() -> None:
    """Each row of estimate_many is the estimate of that slice alone, NaN where the slice has no data."""
    rng = np.random.default_rng(5)
    count = rng.integers(0, 30, (50, 20))
    count[3] = 0
    pos = np.where(np.arange(20) >= 10, count, 0)
    cal_sum = count * rng.random((50, 20))
    cal_sum[7] = 0.0
    many = estimate_many(count, pos, cal_sum)
    for i in range(count.shape[0]):
        assert _same(many.row(i), estimate(count[i], pos[i], cal_sum[i]))
    assert math.isnan(many.accuracy[3])
    assert math.isnan(many.roc_auc[7])
    assert math.isnan(many.tpr[7])


def test_binned_roc_auc_treats_a_bin_as_tied_scores() -> None:
    """With 0/1 expectations (labels as the calibrated sum) the binned AUC is sklearn's AUC of the bin index, whose
    tied scores are a diagonal segment too; one row per bin gives the plain row-level AUC."""
    rng = np.random.default_rng(3)
    bins = rng.integers(0, 40, 3000)
    labels = (rng.random(3000) < bins / 40).astype(np.int64)
    count = np.bincount(bins, minlength=40)
    positives = np.bincount(bins, weights=labels, minlength=40)
    est = estimate(count, np.zeros(40), positives)
    assert est.roc_auc == pytest.approx(roc_auc_score(labels, bins), abs=1e-12)

    order = rng.permutation(500)
    singles = (rng.random(500) < np.arange(500) / 500).astype(np.float64)
    est1 = estimate(np.ones(500), np.zeros(500), singles[order])
    assert est1.roc_auc == pytest.approx(roc_auc_score(singles[order], np.arange(500)), abs=1e-12)


def test_straddling_bin_error_is_within_the_documented_bound() -> None:
    """A threshold off the edges splits its bin in proportion; TP stays within n_b Δ_b / 4 of the row-level sum."""
    rng = np.random.default_rng(8)
    ref_s, ref_y = _population(rng, 20000, 2, 2)
    cal = Calibration.fit(ref_s, ref_y)
    scores, _ = _population(rng, 4000, 3, 1.5)
    threshold = 0.5049  # inside the bin [0.50, 0.51)
    pred = scores >= threshold
    count, pos, cal_sum = bin_sums(scores, pred, cal, EDGES)
    est = estimate(count, pos, cal_sum)
    p = cal.apply(scores)
    tp_rows = float(p[pred].sum())
    b = 50
    assert 0 < pos[b] < count[b]
    bound = count[b] * (cal.apply(EDGES[b + 1]) - cal.apply(EDGES[b])) / 4
    assert abs(est.tp - tp_rows) <= bound + 1e-9
    assert est.tp + est.fn == pytest.approx(float(p.sum()), rel=1e-12)


def test_empty_and_degenerate_inputs_give_nan_not_errors() -> None:
    """No rows, all-negative expectation, no predicted positives and a single row: NaN where undefined, no raise."""
    zeros = np.zeros(10)
    empty = estimate(zeros, zeros, zeros)
    assert (empty.n, empty.tp, empty.fp, empty.fn, empty.tn) == (0.0, 0.0, 0.0, 0.0, 0.0)
    for name in ("accuracy", "tpr", "fpr", "precision", "f1", "roc_auc"):
        assert math.isnan(getattr(empty, name)), name
    assert math.isnan(empty.specificity)

    count, pos, cal_sum = bin_sums(np.array([]), np.array([], dtype=bool), Calibration.identity(), EDGES)
    assert count.shape == pos.shape == cal_sum.shape == (100,)
    assert not count.any()
    assert not cal_sum.any()

    count = np.array([0, 5, 0, 5])
    no_positives = estimate(count, np.array([0, 0, 0, 5]), np.zeros(4))
    assert math.isnan(no_positives.tpr)
    assert math.isnan(no_positives.roc_auc)
    assert no_positives.precision == 0.0
    assert no_positives.f1 == 0.0
    assert no_positives.fpr == 0.5
    assert no_positives.accuracy == 0.5

    nothing_predicted = estimate(count, np.zeros(4), np.array([0.0, 1.0, 0.0, 3.0]))
    assert math.isnan(nothing_predicted.precision)
    assert nothing_predicted.tpr == 0.0
    assert nothing_predicted.f1 == 0.0

    one = estimate(*bin_sums(np.array([0.8]), np.array([True]), Calibration.identity(), EDGES))
    assert (one.n, one.tpr, one.fpr) == (1.0, 1.0, 1.0)
    assert (one.tp, one.fp, one.precision) == pytest.approx((0.8, 0.2, 0.8))
    assert one.roc_auc == pytest.approx(0.5)  # one row: a single diagonal step, the chance value
    certain = estimate(*bin_sums(np.array([1.0]), np.array([True]), Calibration.identity(), EDGES))
    assert certain.tp == 1.0
    assert math.isnan(certain.fpr)
    assert math.isnan(certain.roc_auc)


def test_bin_sums_rejects_bad_input() -> None:
    """NaN scores, non-binary predictions, mismatched lengths and bad edges are ValueErrors."""
    cal = Calibration.identity()
    with pytest.raises(ValueError, match="NaN"):
        bin_sums(np.array([0.1, math.nan]), np.array([0, 1]), cal, EDGES)
    with pytest.raises(ValueError, match="0/1"):
        bin_sums(np.array([0.1, 0.2]), np.array([0, 2]), cal, EDGES)
    with pytest.raises(ValueError, match="length"):
        bin_sums(np.array([0.1, 0.2]), np.array([0]), cal, EDGES)
    with pytest.raises(ValueError, match="edges"):
        bin_sums(np.array([0.1]), np.array([0]), cal, np.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="slices, bins"):
        estimate_many(np.zeros(3), np.zeros(3), np.zeros(3))


def test_covariate_shift_estimate_tracks_realised_performance() -> None:
    """Scores shift (Beta(2,2) to Beta(3,1.5)) with P(y | score) unchanged: the estimate lands within sampling error
    of the realised metrics, while the uncalibrated scores would be far off."""
    rng = np.random.default_rng(21)
    ref_s, ref_y = _population(rng, 24000, 2, 2)
    cal = Calibration.fit(ref_s, ref_y)
    scores, labels = _population(rng, 8000, 3, 1.5)
    pred = scores >= THRESHOLD
    est = estimate(*bin_sums(scores, pred, cal, EDGES))
    real = _realised(labels, pred)
    p = cal.apply(scores)
    se = math.sqrt(float(np.sum(p * (1 - p)))) / scores.size  # accuracy's sampling SE given the scores
    assert abs(est.accuracy - real["accuracy"]) < 4 * se + 0.005
    assert abs(est.precision - real["precision"]) < 0.03
    assert abs(est.recall - real["recall"]) < 0.03
    raw = estimate(*bin_sums(scores, pred, Calibration.identity(), EDGES))
    assert raw.accuracy - real["accuracy"] > 0.05


def test_concept_drift_is_invisible_to_cbpe() -> None:
    """Half the positives flip to 0 in production (P(y | score) halves): realised precision halves and accuracy
    drops by about 0.2, while the estimate, computed from scores alone, does not move. A documented limitation."""
    rng = np.random.default_rng(22)
    ref_s, ref_y = _population(rng, 24000, 2, 2)
    cal = Calibration.fit(ref_s, ref_y)
    scores, labels = _population(rng, 8000, 3, 1.5)
    drifted = labels.copy()
    drifted[(labels == 1) & (rng.random(labels.size) < 0.5)] = 0
    pred = scores >= THRESHOLD
    est = estimate(*bin_sums(scores, pred, cal, EDGES))
    before, after = _realised(labels, pred), _realised(drifted, pred)
    assert abs(est.precision - before["precision"]) < 0.03
    assert est.precision - after["precision"] > 0.25
    assert est.accuracy - after["accuracy"] > 0.15
    assert abs(est.recall - after["recall"]) < 0.03  # flipping positives at random leaves recall where it was


# --- nannyml 0.13.1 as the oracle -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Oracle:
    ref_scores: F
    ref_labels: NDArray[np.int64]
    scores: F
    needs_calibration: bool
    nml_x: F
    nml_y: F
    chunks: list[dict[str, float]]


@pytest.fixture(scope="module")
def oracle() -> _Oracle:
    """nannyml's CBPE fitted on a reference and run on a covariate-shifted analysis period of 6 chunks."""
    rng = np.random.default_rng(2024)
    ref_s, ref_y = _population(rng, CHUNK * N_CHUNKS, 2, 2)
    ana_s, ana_y = _population(rng, CHUNK * N_CHUNKS, 3, 1.5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NML_DISABLE_USAGE_LOGGING", "1")  # nannyml otherwise posts usage events to its analytics service
        import nannyml
        import pandas as pd

        assert nannyml.__version__ == "0.13.1"

        def frame(s: F, y: NDArray[np.int64]) -> pd.DataFrame:
            return pd.DataFrame({"score": s, "pred": (s >= THRESHOLD).astype(np.int64), "y": y})

        metrics = ["roc_auc", "f1", "precision", "recall", "specificity", "accuracy", "confusion_matrix"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the oracle's own pandas/sklearn warnings are not ours to fix
            cbpe = nannyml.CBPE(
                problem_type="classification_binary",
                y_pred_proba="score",
                y_pred="pred",
                y_true="y",
                metrics=metrics,
                chunk_size=CHUNK,
            )
            cbpe.fit(frame(ref_s, ref_y))
            result = cbpe.estimate(frame(ana_s, ana_y)).filter(period="analysis").to_df()
    names = ["roc_auc", "f1", "precision", "recall", "specificity", "accuracy"]
    names += ["true_positive", "false_positive", "false_negative", "true_negative"]
    chunks = [{name: float(result[(name, "value")].iloc[i]) for name in names} for i in range(len(result))]
    regressor = cbpe.calibrator._regressor
    return _Oracle(
        ref_scores=ref_s,
        ref_labels=ref_y,
        scores=ana_s,
        needs_calibration=bool(cbpe.needs_calibration),
        nml_x=np.asarray(regressor.X_thresholds_),
        nml_y=np.asarray(regressor.y_thresholds_),
        chunks=chunks,
    )


@pytest.mark.xdist_group("nannyml-oracle")  # one test process fits the oracle (~9 s), not each
def test_oracle_calibrates_and_with_our_map(oracle: _Oracle) -> None:
    """nannyml calibrates only when its needs_calibration check (ECE over 10 stratified splits) says isotonic helps;
    the over-confident scores make it say so, and its fitted map is ours."""
    assert oracle.needs_calibration
    ours = Calibration.fit(oracle.ref_scores, oracle.ref_labels)
    assert np.array_equal(np.asarray(ours.x), oracle.nml_x)
    assert np.allclose(ours.y, oracle.nml_y, rtol=0, atol=1e-12)


@pytest.mark.xdist_group("nannyml-oracle")  # one test process fits the oracle (~9 s), not each
def test_estimates_match_nannyml_per_chunk(oracle: _Oracle) -> None:
    """Apples to apples: the same rows, nannyml's calibration (it did calibrate, see above) and ours fitted on the same
    reference, our estimate from 100-bin sums with the threshold on an edge. Confusion matrix and the metrics built
    from it agree to 1e-9 relative (binning loses nothing there); ROC AUC is never above nannyml's and below it by at
    most the documented bound (here ~1e-4), within 0.002."""
    cal = Calibration.fit(oracle.ref_scores, oracle.ref_labels)
    assert len(oracle.chunks) == N_CHUNKS
    for i, nml in enumerate(oracle.chunks):
        s = oracle.scores[i * CHUNK : (i + 1) * CHUNK]
        count, pos, cal_sum = bin_sums(s, s >= THRESHOLD, cal, EDGES)
        est = estimate(count, pos, cal_sum)
        ours = {
            "true_positive": est.tp,
            "false_positive": est.fp,
            "false_negative": est.fn,
            "true_negative": est.tn,
            "accuracy": est.accuracy,
            "recall": est.recall,
            "precision": est.precision,
            "specificity": est.specificity,
            "f1": est.f1,
        }
        for name, value in ours.items():
            assert value == pytest.approx(nml[name], rel=CM_REL), (i, name)
        gap = nml["roc_auc"] - est.roc_auc
        assert -1e-7 <= gap <= _auc_binning_bound(cal, count, cal_sum) + 1e-7, (i, gap)
        assert abs(gap) <= AUC_ABS


@pytest.mark.xdist_group("nannyml-oracle")  # one test process fits the oracle (~9 s), not each
def test_oracle_discriminates_an_uncalibrated_estimate(oracle: _Oracle) -> None:
    """The comparison can fail: skipping calibration puts accuracy, precision and ROC AUC far outside the tolerances
    above (by 0.08, 0.17 and 0.04 on this data)."""
    for i, nml in enumerate(oracle.chunks):
        s = oracle.scores[i * CHUNK : (i + 1) * CHUNK]
        raw = estimate(*bin_sums(s, s >= THRESHOLD, Calibration.identity(), EDGES))
        assert abs(raw.accuracy - nml["accuracy"]) > 0.05
        assert abs(raw.precision - nml["precision"]) > 0.1
        assert abs(raw.roc_auc - nml["roc_auc"]) > 10 * AUC_ABS
