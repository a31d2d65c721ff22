"""A group comparison never resolves because the group it alerted on went quiet (for every comparison kind).

The harmed group's traffic stops while the other groups stay healthy. Judged over the remaining groups the
comparison would look healthy; instead the evaluation is insufficient (evidence names the missing group), the
alert stays firing, and it resolves only as stale, one window after the group's data was last sufficient.
"""

from __future__ import annotations

import pytest

from driftwatch.alerts.engine import AlertTransition
from driftwatch.metrics.registry import REGISTRY

from .test_pipeline import T0, inter, make, pred

TICK_MS = 10_000
PER_TICK = 10  # events per group per tick
HARMED, OTHERS = "north", ("south", "east")

# metric -> (op, threshold): what the harmed group's traffic below breaks.
RULES = {
    "disparate_impact_ratio": ("<", 0.8),
    "statistical_parity_difference": (">", 0.3),
    "equal_opportunity_difference": (">", 0.3),
    "equalized_odds_difference": (">", 0.3),
    "complaint_parity_ratio": ("<", 0.5),
    "complaint_parity_difference": (">", 0.3),
    "escalation_parity_ratio": ("<", 0.5),
    "escalation_parity_difference": (">", 0.3),
}


def test_every_comparison_kind_is_covered() -> None:
    assert set(RULES) == {m.name for m in REGISTRY if m.kind == "comparison"}


def _tick(t: int, groups: tuple[str, ...]) -> list[bytes]:
    """One tick of traffic: the harmed group is never approved (though deserving), complained about and escalated;
    the others are approved when deserving, and half of everyone's requests are undeserving (rejected)."""
    out = []
    for g in groups:
        harmed = g == HARMED
        for i in range(PER_TICK):
            rid = f"{g}-{t}-{i}"
            ts = T0 + t * TICK_MS + i * 100
            deserving = i % 2 == 0
            decision = "yes" if deserving and not harmed else "no"
            out.append(pred(rid, ts, decision, region=g))
            out.append(inter(rid, ts + 50, "label", "yes" if deserving else "no"))
            if harmed or i == 0:  # the others: a low, non-zero rate (a ratio needs a denominator)
                out.append(inter(rid, ts + 60, "complaint"))
                out.append(inter(rid, ts + 70, "escalation"))
    return out


@pytest.mark.parametrize("metric", sorted(RULES))
def test_losing_the_harmed_group_keeps_the_alert_firing_until_stale(metric: str) -> None:
    op, threshold = RULES[metric]
    rule = {"name": "gap", "metric": metric, "attribute": "region", "op": op, "threshold": threshold}
    p = make({"protected": ["region"], "rules": [{**rule, "window": "1m", "for": "0s", "min_samples": 5}]})
    transitions: list[AlertTransition] = []
    last_harmed = 9
    for t in range(40):
        groups = (HARMED, *OTHERS) if t <= last_harmed else OTHERS
        transitions.extend(p.process(_tick(t, groups))[1])
    transitions.extend(p.flush())
    states = [(tr.state, tr.event_time) for tr in transitions]
    assert states, "the harmed group never made the rule fire"
    assert states[0][0] == "firing", states
    resolved = [tr for tr in transitions if tr.state == "resolved"]
    assert len(resolved) == 1, states
    (res,) = resolved
    assert res.resolved_reason == "stale", (res.resolved_reason, res.evidence)
    assert res.evidence["missing_group"] == HARMED
    # Stale one window (60 s) after the harmed group's data last filled the window: never before.
    harmed_last_seen = (T0 + (last_harmed + 1) * TICK_MS) / 1000
    assert res.event_time >= harmed_last_seen + 60
