"""Reference tests of `driftwatch.core.values` against Fairlearn and numpy on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score

from driftwatch.config import ModelConfig
from driftwatch.core import summary as S
from driftwatch.core.profile import build_profile
from driftwatch.core.values import compare_groups, p_values, slice_metric

MODEL = ModelConfig.model_validate({"favorable": ["approve"], "features": {"x": {"kind": "numeric", "bins": 4}}})
LAYOUT = S.Layout(MODEL, build_profile("m", MODEL, {"x": list(range(100)), "score": [i / 100 for i in range(100)]}))


def make_data(seed: int, groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random labels and decisions for ``groups`` groups, each with both classes present."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(6, 150, size=groups)
    g = np.repeat(np.arange(groups), sizes)
    base_rate = rng.uniform(0.1, 0.9, size=groups)
    y_true = (rng.uniform(size=g.size) < base_rate[g]).astype(int)
    agree = rng.uniform(0.5, 0.95, size=groups)
    y_pred = np.where(rng.uniform(size=g.size) < agree[g], y_true, 1 - y_true)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    y_true[starts], y_true[starts + 1] = 0, 1  # every group has both classes
    return g, y_true, y_pred


def summary_rows(g: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, width: int = len(S.BASE_COLUMNS)) -> S.Matrix:
    """One summary row per group, built directly from the column constants."""
    groups = int(g.max()) + 1
    m = np.zeros((groups, width), np.int64)
    for k in range(groups):
        t, p = y_true[g == k], y_pred[g == k]
        m[k, S.N_PRED] = t.size
        m[k, S.N_FAV] = int(p.sum())
        m[k, S.N_LABEL] = t.size
        m[k, S.TP] = int(((p == 1) & (t == 1)).sum())
        m[k, S.FP] = int(((p == 1) & (t == 0)).sum())
        m[k, S.TN] = int(((p == 0) & (t == 0)).sum())
        m[k, S.FN] = int(((p == 0) & (t == 1)).sum())
    return m


data = st.tuples(st.integers(0, 2**32 - 1), st.integers(3, 5))


@settings(max_examples=30, deadline=None)  # Fairlearn takes ~0.3 s a case
@given(data)
def test_group_comparisons_match_fairlearn(case: tuple[int, int]) -> None:
    """Parity, disparate impact, equalized odds and equal opportunity equal Fairlearn's values on the same data."""
    g, y_true, y_pred = make_data(*case)
    m = summary_rows(g, y_true, y_pred)
    kw = {"sensitive_features": g}
    spd = compare_groups("statistical_parity_difference", m, 1)
    dir_ = compare_groups("disparate_impact_ratio", m, 1)
    eod = compare_groups("equalized_odds_difference", m, 1)
    eop = compare_groups("equal_opportunity_difference", m, 1)
    assert spd is not None
    assert dir_ is not None
    assert eod is not None
    assert eop is not None
    assert spd.value == pytest.approx(demographic_parity_difference(y_true, y_pred, **kw), rel=1e-12, abs=1e-15)
    fl_ratio = demographic_parity_ratio(y_true, y_pred, **kw)
    if math.isnan(fl_ratio):
        assert math.isnan(dir_.value)
    else:
        assert dir_.value == pytest.approx(fl_ratio, rel=1e-12, abs=1e-15)
    assert eod.value == pytest.approx(equalized_odds_difference(y_true, y_pred, **kw), rel=1e-12, abs=1e-15)
    assert eop.value == pytest.approx(equal_opportunity_difference(y_true, y_pred, **kw), rel=1e-12, abs=1e-15)
    tpr_by_group = MetricFrame(metrics=true_positive_rate, y_true=y_true, y_pred=y_pred, **kw).by_group
    assert eop.value == pytest.approx(float(tpr_by_group.max() - tpr_by_group.min()), rel=1e-12, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(data)
def test_group_comparison_identifies_low_and_high_groups(case: tuple[int, int]) -> None:
    """The low and high groups named by a comparison are the groups with the lowest and highest rate."""
    g, y_true, y_pred = make_data(*case)
    m = summary_rows(g, y_true, y_pred)
    c = compare_groups("statistical_parity_difference", m, 1)
    assert c is not None
    rates = m[:, S.N_FAV] / m[:, S.N_PRED]
    assert rates[c.low_group] == rates.min()
    assert rates[c.high_group] == rates.max()
    assert c.n == int(m[:, S.N_PRED].min())
    assert c.lo <= c.value <= c.hi
    assert {i: r for i, (r, _) in c.rates.items()} == pytest.approx(dict(enumerate(rates.tolist())))


@settings(max_examples=60, deadline=None)
@given(data)
def test_slice_proportions_match_fairlearn_metricframe(case: tuple[int, int]) -> None:
    """Per-group selection rate, TPR, FPR and error rate equal Fairlearn's MetricFrame.by_group."""
    g, y_true, y_pred = make_data(*case)
    m = summary_rows(g, y_true, y_pred)
    frame = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "accuracy": accuracy_score,
        },
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=g,
    ).by_group
    for name in ("selection_rate", "tpr", "fpr"):
        arr = slice_metric(name, m, LAYOUT)
        assert arr.value.tolist() == pytest.approx(frame[name].tolist(), rel=1e-12, abs=1e-15), name
        # (exact containment at k = 0 / k = n is tested in test_stats; here allow an ulp)
        assert np.all(arr.lo <= arr.value + 1e-12)
        assert np.all(arr.value <= arr.hi + 1e-12)
    err = slice_metric("error_rate", m, LAYOUT)
    assert err.value.tolist() == pytest.approx((1 - frame["accuracy"]).tolist(), rel=1e-12, abs=1e-15)
    assert slice_metric("tpr", m, LAYOUT).n.tolist() == m[:, S.TP].__add__(m[:, S.FN]).tolist()
    assert slice_metric("selection_rate", m, LAYOUT).n.tolist() == m[:, S.N_PRED].tolist()


def test_compare_groups_respects_min_samples() -> None:
    """Groups below min_samples are left out; fewer than two eligible groups give None."""
    m = np.zeros((3, len(S.BASE_COLUMNS)), np.int64)
    m[:, S.N_PRED] = [10, 50, 60]
    m[:, S.N_FAV] = [10, 10, 30]  # the small group would dominate the range
    c = compare_groups("statistical_parity_difference", m, 20)
    assert c is not None
    assert c.value == pytest.approx(0.5 - 0.2)
    assert (c.low_group, c.high_group) == (1, 2)
    assert set(c.rates) == {1, 2}
    assert compare_groups("statistical_parity_difference", m, 55) is None
    assert compare_groups("equalized_odds_difference", m, 1) is None  # no labels at all


def test_complaint_parity_uses_complaint_column() -> None:
    """Complaint parity compares complaints per prediction across groups."""
    m = np.zeros((2, len(S.BASE_COLUMNS)), np.int64)
    m[:, S.N_PRED] = [100, 200]
    m[:, S.KIND_COLUMN["complaint"]] = [5, 30]
    d = compare_groups("complaint_parity_difference", m, 1)
    r = compare_groups("complaint_parity_ratio", m, 1)
    assert d is not None
    assert r is not None
    assert d.value == pytest.approx(0.15 - 0.05)
    assert r.value == pytest.approx(0.05 / 0.15)
    assert r.lo <= r.value <= r.hi


def test_resolved_rate_is_resolved_interactions_per_prediction() -> None:
    """resolved_rate counts `resolved` interactions per prediction, with scipy's Wilson interval."""
    from scipy.stats import binomtest

    m = np.zeros((3, len(S.BASE_COLUMNS)), np.int64)
    m[:, S.N_PRED] = [100, 40, 0]
    m[:, S.KIND_COLUMN["resolved"]] = [37, 0, 0]
    m[:, S.KIND_COLUMN["complaint"]] = [5, 9, 0]  # other kinds do not count
    got = slice_metric("resolved_rate", m, LAYOUT)
    assert got.n.tolist() == [100, 40, 0]
    assert got.value[:2].tolist() == pytest.approx([0.37, 0.0])
    assert math.isnan(got.value[2])
    for i, (k, n) in enumerate([(37, 100), (0, 40)]):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert (got.lo[i], got.hi[i]) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_mean_score_equals_numpy_mean() -> None:
    """mean_score from fixed-point sums equals numpy's mean of the scores (to micro-unit precision)."""
    rng = np.random.default_rng(7)
    scores = [rng.uniform(size=n) for n in (1, 17, 500, 3000)]
    m = np.zeros((len(scores) + 1, len(S.BASE_COLUMNS)), np.int64)
    for i, s in enumerate(scores):
        m[i, S.N_SCORE] = s.size
        m[i, S.SCORE_MICRO] = int(np.rint(s * S.SCORE_SCALE).sum())
        m[i, S.SCORE_SQ_MICRO] = int(np.rint(s * s * S.SCORE_SCALE).sum())
    arr = slice_metric("mean_score", m, LAYOUT)
    for i, s in enumerate(scores):
        assert arr.value[i] == pytest.approx(float(np.mean(s)), abs=1e-6)
        assert arr.n[i] == s.size
        assert arr.lo[i] <= arr.value[i] <= arr.hi[i]
    big = scores[-1]
    half = (arr.hi[-2] - arr.lo[-2]) / 2
    assert half == pytest.approx(1.959963984540054 * np.std(big, ddof=1) / math.sqrt(big.size), rel=1e-3)
    assert math.isnan(arr.value[-1])  # no scores


@pytest.mark.parametrize(("q", "name"), [(0.5, "label_delay_p50_seconds"), (0.9, "label_delay_p90_seconds")])
def test_delay_quantiles_within_eight_percent_of_numpy(q: float, name: str) -> None:
    """Label-delay quantiles from log buckets are within 8% of numpy's exact quantile for lognormal delays."""
    rng = np.random.default_rng(11)
    for mu in (3.0, 6.0, 9.0):
        delays = rng.lognormal(mean=mu, sigma=1.0, size=5000)
        counts = np.bincount(S.delay_bucket(delays), minlength=S.DELAY_BUCKETS)
        exact = float(np.quantile(delays, q))
        assert S.delay_quantile(counts, q) == pytest.approx(exact, rel=0.08)
        m = np.zeros((1, LAYOUT.width), np.int64)
        m[0, LAYOUT.delay_start : LAYOUT.delay_start + S.DELAY_BUCKETS] = counts
        arr = slice_metric(name, m, LAYOUT)
        assert arr.value[0] == pytest.approx(exact, rel=0.08)
        assert arr.n[0] == 5000
        assert arr.lo[0] <= arr.value[0] <= arr.hi[0]


def test_unknown_metric_and_missing_feature() -> None:
    """An unknown metric name raises KeyError; a drift metric without a known feature is NaN with n = 0."""
    m = np.zeros((2, LAYOUT.width), np.int64)
    with pytest.raises(KeyError):
        slice_metric("nope", m, LAYOUT)
    arr = slice_metric("psi", m, LAYOUT, "not_a_feature")
    assert np.isnan(arr.value).all()
    assert arr.n.tolist() == [0, 0]


def test_drift_slice_metric_reads_the_feature_block() -> None:
    """psi/js_distance read the feature's bin columns and compare them with the profile's reference."""
    b = LAYOUT.blocks["x"]
    m = np.zeros((2, LAYOUT.width), np.int64)
    m[0, b.start : b.start + b.bins] = [25, 25, 25, 25]
    m[1, b.start : b.start + b.bins] = [70, 10, 10, 10]
    m[:, b.missing] = 1000  # missing values are not part of the distribution
    arr = slice_metric("psi", m, LAYOUT, "x")
    assert b.reference.tolist() == pytest.approx([0.25] * 4)
    assert arr.value[0] == pytest.approx(0.0, abs=1e-12)
    assert arr.value[1] > 0.25
    assert arr.n.tolist() == [100, 100]
    p = p_values("psi", m, LAYOUT, "x", m[:1])
    assert p[0] > 0.5
    assert p[1] < 1e-6
