"""Sequential rules: a CUSUM per slice fires within seconds of a change, keeps its false-alarm bound, and survives
a checkpoint."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.sequential import Cusum
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


def test_the_false_alarm_rate_stays_within_its_bound() -> None:
    """At the baseline rate, a CUSUM with h = 5 restarted after each alarm alarms at most once per e^h updates (Lorden's bound), Bernoulli and Poisson alike."""
    rng = random.Random(7)
    h, p0, p1, updates = 5.0, 0.04, 0.08, 50_000
    for share in (True, False):
        c, alarms = Cusum(), 0
        for _ in range(updates):
            k = sum(rng.random() < p0 for _ in range(5))
            if c.update(k, 5, p0, p1, share) >= h:
                alarms += 1
                c = Cusum()
        assert alarms <= updates / math.exp(h), (share, alarms)


def test_a_checkpoint_keeps_the_statistic() -> None:
    """A restored evaluator continues each test from its checkpointed statistic: the same firing at the same time."""
    stream = _stream(ONSET + 300, 4)
    whole = make({"rules": [RULES[1]]})
    expected = [t.to_record() for b in stream for t in whole.process(b)[1]]
    first = make({"rules": [RULES[1]]})
    cut = ONSET // 10 + 3  # 30 s after the onset: the statistic is on its way up
    got = [t.to_record() for b in stream[:cut] for t in first.process(b)[1]]
    state = decode_state(encode_state(first.evaluator.snapshot(["m"])))
    assert isinstance(state, ModelsState)
    assert state.sequential
    second = make({"rules": [RULES[1]]})
    second.ingestor = first.ingestor  # the ingest side is not what is checkpointed here
    second.evaluator.restore(state)
    got += [t.to_record() for b in stream[cut:] for t in second.process(b)[1]]
    assert got == expected


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"metric": "psi", "feature": "score", "threshold": 0.2, "resolve_threshold": 0.1}, "not a proportion"),
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
