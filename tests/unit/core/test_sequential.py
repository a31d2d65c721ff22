"""Sequential rules: a CUSUM per slice over its window by prediction time fires within seconds of a change (a rate
or a feature's distribution), keeps its false-alarm bound, is not diluted by late labels of older predictions, and
gives the same verdicts after a checkpoint."""

from __future__ import annotations

import math
import random

import msgspec
import numpy as np
import pytest

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.profile import build_profile
from driftwatch.core.sequential import drift_evidence, max_suffix, rate_evidence
from driftwatch.core.snapshot import ModelsState, decode_state, encode_state
from driftwatch.daemon.metrics import registry_for

from .test_pipeline import T0, inter, pred
from .test_pipeline import make as _make

ONSET = 600  # s after T0: the complaint rate jumps from 2% to 12%
RATE = 20  # predictions per second


def _stream(end: int, seed: int, *, recover: int | None = None) -> list[list[bytes]]:
    """One batch per tick (10 s): RATE predictions a second, each complained about (0.5 s later) with 2%, or 12%
    from ONSET on (until ``recover``)."""
    rng = random.Random(seed)
    out: list[list[bytes]] = []
    for sec in range(end):
        p = 0.12 if ONSET <= sec < (recover or end) else 0.02
        if sec % 10 == 0:
            out.append([])
        batch = out[-1]
        for i in range(RATE):
            rid = f"r{sec}-{i}"
            ts = T0 + sec * 1000 + i * (1000 // RATE)
            batch.append(pred(rid, ts))
            if rng.random() < p:
                batch.append(inter(rid, ts + 500, "complaint"))
    return out


RULES = [
    {
        "name": "window",
        "metric": "complaint_rate",
        "window": "5m",
        "threshold": 0.08,
        "resolve_threshold": 0.05,
        "for": "2m",
        "min_samples": 200,
        "confidence": "interval",
    },
    {
        "name": "cusum",
        "metric": "complaint_rate",
        "window": "5m",
        "threshold": 0.08,
        "resolve_threshold": 0.04,
        "sequential": {},
    },
]


def make(extra: dict[str, object]) -> Pipeline:
    """The unit tests' pipeline with a 5 m window (what the rules here use)."""
    return _make({"windows": {"tick": "10s", "lateness": "0s", "windows": ["5m"]}, **extra})


def _first(transitions: list[AlertTransition], rule: str, state: str = "firing") -> AlertTransition | None:
    return next((t for t in transitions if t.rule == rule and t.state == state), None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cusum_fires_within_two_minutes_where_the_window_rule_takes_five(seed: int) -> None:
    """A complaint spike from 2% to 12% at 20 predictions/s: the CUSUM rule fires within 120 s of the onset, the window rule (5 m, for 2 m, interval) only after 200 s; neither fires before the onset; the evidence names the test, its statistic past h and a change point near the onset."""
    p = make({"rules": RULES})
    out: list[AlertTransition] = []
    for batch in _stream(ONSET + 600, seed):
        out.extend(p.process(batch)[1])
    seq, win = _first(out, "cusum"), _first(out, "window")
    assert seq is not None
    assert win is not None
    onset = T0 / 1000 + ONSET
    assert onset < seq.event_time <= onset + 120, seq.event_time - onset
    assert win.event_time - onset > 200
    assert seq.evidence["test"] == "cusum"
    assert float(seq.evidence["statistic"]) >= float(seq.evidence["h"]) == 18.0  # type: ignore[arg-type]
    change = seq.evidence["change_point"]
    assert isinstance(change, float)
    assert onset - 60 <= change <= seq.event_time


def test_cusum_resolves_once_the_rate_is_back_and_pages_again_on_a_new_spike() -> None:
    """After the spike ends the statistic falls below h and the window's rate below resolve_threshold: resolved (healthy); a second spike fires again."""
    p = make({"rules": [RULES[1]]})
    out: list[AlertTransition] = []
    stream = _stream(ONSET + 1500, 5, recover=ONSET + 300)
    second = _stream(ONSET + 600, 6)[ONSET // 10 :]  # a new spike later on, shifted in time below
    for batch in stream:
        out.extend(p.process(batch)[1])
    states = [t.state for t in out if t.rule == "cusum"]
    assert states == ["firing", "resolved"], states
    resolved = _first(out, "cusum", "resolved")
    assert resolved is not None
    assert resolved.resolved_reason == "healthy"
    shift = (ONSET + 1500 - ONSET) * 1000
    for batch in second:
        out.extend(p.process([_shifted(raw, shift) for raw in batch])[1])
    assert [t.state for t in out if t.rule == "cusum"] == ["firing", "resolved", "firing"]


def _shifted(raw: bytes, ms: int) -> bytes:
    ev = msgspec.json.decode(raw)
    ev["ts"] += ms
    ev["request_id"] = "b" + ev["request_id"]
    ev["event_id"] = "b" + ev["event_id"]
    return msgspec.json.encode(ev)


def test_no_false_alarm_and_the_statistic_on_metrics_over_healthy_traffic() -> None:
    """Forty minutes at the 2% baseline never fire the CUSUM rule, and its statistic is exported per slice."""
    p = make({"rules": [RULES[1]]})
    out: list[AlertTransition] = []
    for batch in _stream(2400, 9, recover=ONSET):
        out.extend(p.process(batch)[1])
    assert not [t for t in out if t.rule == "cusum"]
    value = registry_for(p).get_sample_value(
        "driftwatch_rule_statistic", {"alertname": "cusum", "model": "m", "version": "v1"}
    )
    assert value is not None
    assert 0 <= value < 18


def _alarms(evidence: np.ndarray, h: float) -> int:
    """Alarms of a CUSUM fed ``evidence`` bucket by bucket and restarted after each (as a resolved alert restarts)."""
    stat, alarms = 0.0, 0
    for e in evidence:
        stat = max(0.0, stat + float(e))
        if stat >= h:
            alarms, stat = alarms + 1, 0.0
    return alarms


def test_the_window_statistic_is_pages_cusum() -> None:
    """The largest sum from some bucket to the last equals Page's recursion S = max(0, S + e) started at the
    window's first bucket, and the change point is where the recursion last left zero."""
    rng = np.random.default_rng(3)
    e = rng.normal(-0.2, 1.0, (40, 6))
    stat, start = max_suffix(e)
    for j in range(e.shape[1]):
        s_, left = 0.0, -1
        for b in range(e.shape[0]):
            s_ = max(0.0, s_ + e[b, j])
            if s_ == 0.0:
                left = -1
            elif left < 0:
                left = b
        assert stat[j] == pytest.approx(s_)
        if s_ > 0:
            assert start[j] == left


def test_the_false_alarm_rate_stays_within_its_bound() -> None:
    """At the baseline, a CUSUM with h = 5 alarms at most once per e^h buckets (Lorden's bound): a rate (Bernoulli
    and Poisson) and a distribution drawn from its reference, with no margin (the margin only adds safety)."""
    rng = np.random.default_rng(7)
    h, p0, p1, buckets = 5.0, 0.04, 0.08, 50_000
    n = np.full((buckets, 1), 5)
    k = rng.binomial(5, p0, (buckets, 1))
    for share in (True, False):
        assert _alarms(rate_evidence(k, n, p0, p1, share)[:, 0], h) <= buckets / math.exp(h), share
    ref, ref_count = np.array([0.5, 0.3, 0.15, 0.05]), 1000
    smoothed = (ref * ref_count + 0.5) / (ref_count + 0.5 * len(ref))
    counts = rng.multinomial(8, smoothed, (buckets, 1))
    assert _alarms(drift_evidence(counts, ref, ref_count, 0.0)[:, 0], h) <= buckets / math.exp(h)


def test_a_checkpoint_keeps_the_statistic() -> None:
    """A restored evaluator recomputes each test from its checkpointed window: the same firing at the same time."""
    stream = _stream(ONSET + 300, 4)
    whole = make({"rules": [RULES[1]]})
    expected = [t.to_record() for b in stream for t in whole.process(b)[1]]
    first = make({"rules": [RULES[1]]})
    cut = ONSET // 10 + 3  # 30 s after the onset: the statistic is on its way up
    got = [t.to_record() for b in stream[:cut] for t in first.process(b)[1]]
    state = decode_state(encode_state(first.evaluator.snapshot(["m"])))
    assert isinstance(state, ModelsState)
    assert next(t.statistic for _, _, t in first.evaluator.rules.sequential.items()) > 0
    second = make({"rules": [RULES[1]]})
    second.ingestor = first.ingestor  # the ingest side is not what is checkpointed here
    second.evaluator.restore(state)
    got += [t.to_record() for b in stream[cut:] for t in second.process(b)[1]]
    assert got == expected


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"metric": "mean_score", "threshold": 0.8, "resolve_threshold": 0.5}, "none of them"),
        ({"metric": "psi", "feature": "score", "op": "<", "threshold": 0.2, "resolve_threshold": 0.3}, "use '>'"),
        ({"metric": "complaint_rate", "threshold": 0.08}, "name the healthy rate"),
        ({"metric": "complaint_rate", "threshold": 0.08, "sequential": {"baseline": 0.1}}, "healthy side"),
        ({"metric": "selection_rate", "op": "<", "threshold": 0.3, "sequential": {"baseline": 0.2}}, "healthy side"),
        (
            {"metric": "complaint_rate", "threshold": 0.08, "resolve_threshold": 0.04, "fdr_q": 0.05},
            "cannot be combined",
        ),
    ],
)
def test_check_config_names_what_a_sequential_rule_lacks(rule: dict[str, object], problem: str) -> None:
    """Each unusable sequential rule is a config problem that says what to fix."""
    body = {"name": "r", "sequential": {}, **rule}
    cfg = Config.model_validate(
        {"attributes": {}, "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}}, "rules": [body]}
    )
    assert any(problem in p and "sequential" in p for p in cfg.problems()), cfg.problems()


def _scored(rid: str, ts: int, score: float) -> bytes:
    ev = msgspec.json.decode(pred(rid, ts))
    ev["score"] = score
    return msgspec.json.encode(ev)


DRIFT_RULES = [
    {
        "name": "psi_window",
        "metric": "psi",
        "feature": "score",
        "window": "5m",
        "threshold": 0.25,
        "resolve_threshold": 0.1,
        "for": "1m",
        "min_samples": 200,
        "confidence": "interval",
    },
    {
        "name": "psi_cusum",
        "metric": "psi",
        "feature": "score",
        "window": "5m",
        "threshold": 0.25,
        "resolve_threshold": 0.1,
        "sequential": {},
    },
]


def _drift_pipeline() -> Pipeline:
    cfg = Config.model_validate(
        {
            "attributes": {},
            "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}},
            "windows": {"tick": "10s", "lateness": "0s", "windows": ["5m"]},
            "min_samples": 5,
            "rules": DRIFT_RULES,
        }
    )
    assert cfg.problems() == []
    rng = np.random.default_rng(0)
    ref = {"prediction": ["yes", "no"] * 2500, "score": rng.beta(2, 5, 5000).round(3).tolist()}
    return Pipeline(cfg, profiles={"m": build_profile("m", cfg.models["m"], ref)})


@pytest.mark.parametrize(("seed", "shift"), [(1, 0.25), (2, 0.25), (3, 0.25), (4, 0.0), (5, 0.02)])
def test_a_distribution_test_fires_within_a_minute_and_never_on_a_small_shift(seed: int, shift: float) -> None:
    """Scores at 10 a second from the reference's Beta(2, 5), shifted up by ``shift`` from ONSET: a shift of 0.25
    (PSI ~1) fires the sequential drift test within 60 s and the window rule only after 90 s; no shift, or one of
    0.02 (PSI well below resolve_threshold), fires neither over 25 minutes."""
    p = _drift_pipeline()
    rng = np.random.default_rng(seed)
    out: list[AlertTransition] = []
    for tick in range((ONSET + 900) // 10):
        batch = []
        for i in range(100):
            sec = tick * 10 + i // 10
            score = float(rng.beta(2, 5)) + (shift if sec >= ONSET else 0.0)
            batch.append(_scored(f"r{tick}-{i}", T0 + sec * 1000 + (i % 10) * 100, round(min(score, 1.0), 3)))
        out.extend(p.process(batch)[1])
    seq, win = _first(out, "psi_cusum"), _first(out, "psi_window")
    if shift < 0.1:
        assert seq is None
        assert win is None
        return
    assert seq is not None
    assert win is not None
    onset = T0 / 1000 + ONSET
    assert onset < seq.event_time <= onset + 60, seq.event_time - onset
    assert win.event_time - onset > 90
    change = seq.evidence["change_point"]
    assert isinstance(change, float)
    assert onset - 30 <= change <= seq.event_time


def test_late_labels_of_older_predictions_do_not_dilute_the_evidence() -> None:
    """Labels come 90 s after their prediction, and the true positive rate drops from 90% to 40% at ONSET: the
    sequential TPR test weighs labels by the tick of their prediction, so it fires once about 40 labels of changed
    predictions are in (within 80 s of the first of them), although each tick also brings the labels of healthy
    predictions made before the onset."""
    rule = {
        "name": "tpr_seq",
        "metric": "tpr",
        "window": "10m",
        "op": "<",
        "threshold": 0.7,
        "resolve_threshold": 0.85,
        "sequential": {},
    }
    p = make({"windows": {"tick": "10s", "lateness": "0s", "windows": ["10m"]}, "rules": [rule]})
    rng = random.Random(11)
    out: list[AlertTransition] = []
    delay = 90
    for tick in range((ONSET + 600) // 10):
        batch = []
        for sec in range(tick * 10, tick * 10 + 10):
            tpr = 0.4 if sec >= ONSET else 0.9
            for i in range(2):
                rid = f"r{sec}-{i}"
                ts = T0 + sec * 1000 + i * 400
                approved = rng.random() < tpr
                batch.append(pred(rid, ts, "yes" if approved else "no"))
            # the labels of predictions made `delay` seconds earlier (all deserving)
            for i in range(2):
                if sec - delay >= 0:
                    batch.append(inter(f"r{sec - delay}-{i}", T0 + sec * 1000 + 900, "label", "yes"))
        out.extend(p.process(batch)[1])
    first = _first(out, "tpr_seq")
    assert first is not None
    first_changed_label = T0 / 1000 + ONSET + delay
    assert first_changed_label < first.event_time <= first_changed_label + 80, first.event_time - first_changed_label


@pytest.mark.parametrize(
    ("share", "ratio", "threshold", "baseline"),
    [(True, True, 0.8, 0.95), (True, False, 0.2, 0.05), (False, True, 0.5, 0.8), (False, False, 0.03, 0.01)],
)
def test_a_group_comparison_at_its_baseline_stays_within_the_bound(
    share: bool, ratio: bool, threshold: float, baseline: float
) -> None:
    """Two groups whose rates sit exactly at the baseline apart (one low against the other, so the other is high
    against it): each group's CUSUM on either side alarms at most once per e^h buckets with h = 5 (selection-like
    shares and complaint-like counts, ratios and differences)."""
    from driftwatch.core.sequential import comparison_evidence

    rng = np.random.default_rng(17)
    buckets, h, rest = 20_000, 5.0, 0.4 if share else 0.05
    low = rest * baseline if ratio else rest - baseline
    n = np.full((buckets, 2), 20)
    k = np.stack(
        [rng.binomial(20, low, buckets), rng.binomial(20, rest, buckets)]
        if share
        else [rng.poisson(20 * low, buckets), rng.poisson(20 * rest, buckets)],
        axis=1,
    )
    for high in (False, True):
        e = comparison_evidence(k, n, share, ratio, threshold, baseline, high)
        for g in range(2):
            assert _alarms(e[:, g], h) <= buckets / math.exp(h), (high, g)


def _groups_stream(end: int, seed: int, *, low_from: int, low_until: int | None = None, quiet_from: int | None = None):
    """Six predictions a second for each of regions a, b, c, approved with 60% chance; region a's 25% from
    ``low_from`` (until ``low_until``); region a sends nothing from ``quiet_from``."""
    rng = random.Random(seed)
    out: list[list[bytes]] = []
    for sec in range(end):
        if sec % 10 == 0:
            out.append([])
        for region in ("a", "b", "c"):
            if region == "a" and quiet_from is not None and sec >= quiet_from:
                continue
            low = region == "a" and low_from <= sec < (low_until or end)
            for i in range(6):
                approved = rng.random() < (0.25 if low else 0.6)
                rid = f"{region}{sec}-{i}"
                out[-1].append(pred(rid, T0 + sec * 1000 + i * 150, "yes" if approved else "no", region=region))
    return out


DI_SEQUENTIAL = {
    "name": "di_fast",
    "metric": "disparate_impact_ratio",
    "attribute": "region",
    "window": "5m",
    "op": "<",
    "threshold": 0.8,
    "resolve_threshold": 0.85,
    "min_samples": 50,
    "sequential": {"baseline": 0.95},
}


def test_a_sequential_disparity_pages_within_a_minute_names_the_group_and_resolves() -> None:
    """Region a's approval rate drops from 60% to 25% at ONSET (DI ~0.4): the sequential comparison fires within
    60 s naming region a on the low side; after the rate is back and the window's DI is healthy, it resolves."""
    p = make({"protected": ["region"], "rules": [DI_SEQUENTIAL]})
    out: list[AlertTransition] = []
    for batch in _groups_stream(ONSET + 1200, 3, low_from=ONSET, low_until=ONSET + 300):
        out.extend(p.process(batch)[1])
    fired = _first(out, "di_fast")
    assert fired is not None
    assert 0 < fired.event_time - (T0 / 1000 + ONSET) <= 60
    assert fired.evidence["low_group"] == "a"
    assert fired.evidence["side"] == "low"
    assert fired.evidence["rate"] == "selection_rate"
    assert float(fired.evidence["statistic"]) >= 18.0  # type: ignore[arg-type]
    assert [t.state for t in out if t.rule == "di_fast"] == ["firing", "resolved"]
    resolved = _first(out, "di_fast", "resolved")
    assert resolved is not None
    assert resolved.resolved_reason == "healthy"


def test_a_sequential_disparity_never_resolves_while_its_group_lacks_data() -> None:
    """Once it fired about region a, region a going quiet makes the comparison insufficient (naming the missing
    group): the alert stays firing, and resolves only as stale after a full window without data."""
    p = make({"protected": ["region"], "rules": [DI_SEQUENTIAL]})
    out: list[AlertTransition] = []
    for batch in _groups_stream(ONSET + 900, 4, low_from=ONSET, quiet_from=ONSET + 120):
        out.extend(p.process(batch)[1])
    states = [(t.state, t.resolved_reason) for t in out if t.rule == "di_fast"]
    assert states[0] == ("firing", None)
    assert all(s != ("resolved", "healthy") for s in states), states
    assert ("resolved", "stale") in states


def test_a_distribution_test_on_a_feature_the_reference_lacks_weighs_nothing() -> None:
    """A reference without scores (none in its data) has no score bins: the sequential drift test on the score
    then weighs nothing and never fires, and the stream is evaluated as usual."""
    p = make({"rules": [DRIFT_RULES[1]]})  # the unit tests' profile holds predictions only
    out: list[AlertTransition] = []
    for tick in range(60):
        out.extend(p.process([_scored(f"r{tick}-{i}", T0 + tick * 10_000 + i * 100, 0.9) for i in range(50)])[1])
    assert not [t for t in out if t.rule == "psi_cusum"]
    assert p.counters.rejected == {}
