"""Tests for the alert lifecycle in `driftwatch.alerts.engine`."""

from __future__ import annotations

import math

from driftwatch.alerts.engine import AlertEngine, AlertTransition, Candidate, fingerprint
from driftwatch.config import Rule

LABELS = {"alertname": "r", "model": "m", "version": "v1", "severity": "warning"}


def rule(**kw: object) -> Rule:
    base: dict[str, object] = {"name": "r", "metric": "complaint_rate", "op": ">", "threshold": 0.1, "window": "5m"}
    base.update(kw)
    return Rule.model_validate(base)


def cand(value: float, r: Rule, *, sufficient: bool = True, labels: dict[str, str] | None = None) -> Candidate:
    """A candidate judged the way the pipeline judges it (value-based condition, resolve_threshold for health)."""
    assert r.threshold is not None
    healthy_at = r.resolve_threshold if r.resolve_threshold is not None else r.threshold
    cond = value > r.threshold if r.op == ">" else value < r.threshold
    healthy = value <= healthy_at if r.op == ">" else value >= healthy_at
    return Candidate(
        labels=dict(labels or LABELS),
        value=value if sufficient else math.nan,
        n=500 if sufficient else 3,
        lo=value - 0.01,
        hi=value + 0.01,
        sufficient=sufficient,
        condition=sufficient and cond,
        healthy=sufficient and healthy,
        evidence={"window_seconds": r.window},
    )


def run(r: Rule, series: list[tuple[float, float | None]]) -> list[tuple[float, str]]:
    """Feed (time, value) evaluations (None = insufficient data) and return (time, state) transitions."""
    eng = AlertEngine()
    out = []
    for now, v in series:
        c = cand(0.0, r, sufficient=False) if v is None else cand(v, r)
        out.extend((t.event_time, t.state) for t in eng.evaluate(r, now, [c]))
    return out


def test_for_zero_fires_directly() -> None:
    """With for: 0 an alert fires on the first evaluation whose condition holds."""
    assert run(rule(), [(10, 0.05), (20, 0.2)]) == [(20, "firing")]


def test_for_requires_condition_on_every_evaluation() -> None:
    """With for: 30s the alert is pending first and fires only once the condition held for 30 s without a break."""
    r = rule(**{"for": "30s"})
    assert run(r, [(0, 0.2), (10, 0.2), (20, 0.2), (30, 0.2), (40, 0.2)]) == [(0, "pending"), (30, "firing")]


def test_one_false_evaluation_resets_pending() -> None:
    """A single evaluation without the condition while pending resets the 'for' clock."""
    r = rule(**{"for": "30s"})
    got = run(r, [(0, 0.2), (10, 0.2), (20, 0.05), (30, 0.2), (40, 0.2), (50, 0.2), (60, 0.2)])
    assert got == [(0, "pending"), (30, "pending"), (60, "firing")]


def test_insufficient_evaluation_holds_pending() -> None:
    """An insufficient-data evaluation while pending neither confirms nor resets it; a false one resets it."""
    r = rule(**{"for": "20s"})
    assert run(r, [(0, 0.2), (10, None), (20, 0.2), (30, 0.2)]) == [(0, "pending"), (20, "firing")]
    assert run(r, [(0, 0.2), (10, 0.05), (20, 0.2), (30, 0.2)]) == [(0, "pending"), (20, "pending")]


def test_pending_without_data_for_a_window_is_dropped() -> None:
    """A pending alert whose series has no sufficient data for one window length goes back to inactive."""
    r = rule(**{"for": "20s", "window": "30s"})
    assert run(r, [(0, 0.2), (10, None), (20, None), (30, None), (40, 0.2), (50, 0.2)]) == [
        (0, "pending"),
        (40, "pending"),
    ]


def test_hysteresis_between_thresholds_stays_firing() -> None:
    """A firing alert whose value falls between threshold and resolve_threshold stays firing; below it resolves."""
    r = rule(threshold=0.1, resolve_threshold=0.05)
    got = run(r, [(0, 0.2), (10, 0.08), (20, 0.06), (30, 0.05), (40, 0.2)])
    assert got == [(0, "firing"), (30, "resolved"), (40, "firing")]


def test_hysteresis_for_lower_is_bad_rules() -> None:
    """For op '<' the healthy side is above resolve_threshold."""
    r = rule(op="<", threshold=0.8, resolve_threshold=0.85)
    assert run(r, [(0, 0.7), (10, 0.82), (20, 0.86)]) == [(0, "firing"), (20, "resolved")]


def test_without_resolve_threshold_resolves_when_condition_false() -> None:
    """Without resolve_threshold a firing alert resolves as soon as the value is back at the threshold."""
    assert run(rule(), [(0, 0.2), (10, 0.1)]) == [(0, "firing"), (10, "resolved")]


def test_resolved_transition_carries_evidence_and_times() -> None:
    """Transitions carry rule data, the value with interval, the window, and the time the alert became active."""
    r = rule(
        resolve_threshold=0.05,
        severity="critical",
        actions=["rollback_model"],
        annotations={"summary": "s"},
        **{"for": "10s"},
    )
    eng = AlertEngine()
    eng.evaluate(r, 0, [cand(0.2, r)])
    (firing,) = eng.evaluate(r, 10, [cand(0.3, r)])
    (resolved,) = eng.evaluate(r, 50, [cand(0.01, r)])
    assert isinstance(firing, AlertTransition)
    assert (firing.state, firing.active_since, firing.value, firing.n) == ("firing", 10, 0.3, 500)
    assert (resolved.state, resolved.event_time, resolved.active_since) == ("resolved", 50, 10)
    assert (resolved.severity, resolved.actions, resolved.annotations, resolved.window) == (
        "critical",
        ("rollback_model",),
        {"summary": "s"},
        300.0,
    )
    assert resolved.fingerprint == fingerprint(LABELS)
    assert "resolved_because" not in resolved.evidence
    assert resolved.resolved_reason == resolved.to_record().resolved_reason == "healthy"
    assert firing.resolved_reason is None
    assert eng.active() == {}


def test_insufficient_data_never_fires() -> None:
    """Evaluations without sufficient data never start an alert."""
    assert run(rule(), [(t, None) for t in range(0, 100, 10)]) == []


def test_insufficient_data_does_not_resolve_until_one_window_then_stale() -> None:
    """A firing alert without sufficient data stays firing for one window length, then resolves as stale."""
    r = rule(window="60s")
    eng = AlertEngine()
    assert [t.state for t in eng.evaluate(r, 0, [cand(0.5, r)])] == ["firing"]
    for now in (10, 30, 50, 59):
        assert eng.evaluate(r, now, [cand(0.0, r, sufficient=False)]) == []
        assert list(eng.active().values()) == ["firing"]
    (t,) = eng.evaluate(r, 60, [cand(0.0, r, sufficient=False)])
    assert t.state == "resolved"
    assert t.evidence["resolved_because"] == "stale: no sufficient data for one window"
    assert t.resolved_reason == t.to_record().resolved_reason == "stale"
    assert eng.active() == {}


def test_sufficient_data_restarts_the_stale_clock() -> None:
    """Sufficient unhealthy data during the gap postpones the stale resolution."""
    r = rule(window="60s")
    got = run(r, [(0, 0.5), (40, None), (50, 0.5), (100, None), (109, None), (110, None)])
    assert got == [(0, "firing"), (110, "resolved")]


def test_keep_firing_for_delays_resolution() -> None:
    """keep_firing_for keeps a recovering alert firing that long; a relapse in between resets the hold."""
    r = rule(keep_firing_for="30s")
    assert run(r, [(0, 0.5), (10, 0.0), (20, 0.0), (39, 0.0), (40, 0.0)]) == [(0, "firing"), (40, "resolved")]
    assert run(r, [(0, 0.5), (10, 0.0), (20, 0.5), (30, 0.0), (50, 0.0), (60, 0.0)]) == [
        (0, "firing"),
        (60, "resolved"),
    ]


def test_fingerprint_is_order_independent_and_label_sensitive() -> None:
    """The fingerprint ignores label order but changes with any label value; it is 16 hex characters."""
    a = fingerprint({"alertname": "x", "model": "m", "slice": "EU"})
    b = fingerprint({"slice": "EU", "model": "m", "alertname": "x"})
    assert a == b
    assert len(a) == 16
    assert int(a, 16) >= 0
    assert fingerprint({"alertname": "x", "model": "m", "slice": "US"}) != a
    assert fingerprint({"alertname": "x", "model": "m"}) != a


def test_series_are_independent() -> None:
    """Two label sets of the same rule keep separate states."""
    r = rule()
    eng = AlertEngine()
    eu = {**LABELS, "slice": "EU"}
    us = {**LABELS, "slice": "US"}
    out = eng.evaluate(r, 0, [cand(0.5, r, labels=eu), cand(0.0, r, labels=us)])
    assert [(t.labels["slice"], t.state) for t in out] == [("EU", "firing")]
    out = eng.evaluate(r, 10, [cand(0.0, r, labels=eu), cand(0.5, r, labels=us)])
    assert [(t.labels["slice"], t.state) for t in out] == [("EU", "resolved"), ("US", "firing")]
    assert eng.watching("r")
    assert not eng.watching("other")
    assert eng.active() == {fingerprint(us): "firing"}


def test_engine_is_deterministic() -> None:
    """The same rule and evaluations always give identical transitions."""
    r = rule(resolve_threshold=0.05, keep_firing_for="20s", **{"for": "20s"})
    series = [
        (t * 10.0, v)
        for t, v in enumerate([0.2, 0.3, 0.2, None, 0.2, 0.2, 0.2, 0.07, 0.02, 0.02, 0.02, 0.2, None, None])
    ]

    def transitions() -> list[AlertTransition]:
        eng = AlertEngine()
        out = []
        for now, v in series:
            out.extend(eng.evaluate(r, now, [cand(0.0, r, sufficient=False) if v is None else cand(v, r)]))
        return out

    first = transitions()
    assert first == transitions()
    assert [(t.event_time, t.state) for t in first] == [
        (0.0, "pending"),
        (20.0, "firing"),
        (100.0, "resolved"),
        (110.0, "pending"),
    ]
