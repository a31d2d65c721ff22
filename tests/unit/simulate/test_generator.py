"""Tests for the seeded synthetic traffic generator `driftwatch.simulate`."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import get_args

import pytest

from driftwatch.simulate import SCENARIOS, Scenario, Truth, generate, write_jsonl

Event = dict[str, object]

N = 20_000
SEED = 42
KINDS = {
    "complaint",
    "escalation",
    "thumbs_down",
    "thumbs_up",
    "override",
    "resolved",
    "label",
}


@cache
def _run(scenario: str, events: int = N, seed: int = SEED) -> tuple[tuple[Event, ...], Truth]:
    stream, truth = generate(scenario, events=events, seed=seed)
    return tuple(stream), truth


def _ms(ts: object) -> int:
    if isinstance(ts, int):
        return ts
    assert isinstance(ts, str)
    return int(datetime.fromisoformat(ts).timestamp() * 1000 + 0.5)


def _attr(event: Event, name: str) -> object:
    attributes = event["attributes"]
    assert isinstance(attributes, dict)
    return attributes[name]


def _feature(event: Event, name: str) -> object:
    features = event["features"]
    assert isinstance(features, dict)
    return features[name]


def _predictions(events: tuple[Event, ...], model_id: str) -> list[Event]:
    return [e for e in events if e["type"] == "prediction" and e["model_id"] == model_id]


def _at(truth: Truth) -> int:
    (injection,) = truth.injections
    return injection.at_ms


def _selection_rate(preds: list[Event]) -> float:
    return sum(1 for p in preds if p["favorable"] is True) / len(preds)


def test_same_seed_gives_identical_events() -> None:
    """Two runs with the same scenario and seed yield equal event sequences."""
    first, _ = generate("bias", events=3_000, seed=7)
    second, _ = generate("bias", events=3_000, seed=7)
    assert list(first) == list(second)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    """Writing the same scenario and seed twice produces byte-identical files."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl("complaint-spike", a, events=3_000, seed=3)
    write_jsonl("complaint-spike", b, events=3_000, seed=3)
    assert a.read_bytes() == b.read_bytes()


def test_different_seeds_give_different_events() -> None:
    """Different seeds yield different event sequences."""
    first, _ = generate("baseline", events=1_000, seed=1)
    second, _ = generate("baseline", events=1_000, seed=2)
    assert list(first) != list(second)


def test_pre_injection_traffic_is_shared_across_scenarios() -> None:
    """For one seed every scenario emits the same events before its injection time."""
    base, _ = _run("baseline")
    for scenario in SCENARIOS[1:]:
        events, truth = _run(scenario)
        at = _at(truth)
        # Interactions before `at` may belong to post-injection predictions only
        # if their prediction is also before `at`, so compare predictions only.
        before = [e for e in events if e["type"] == "prediction" and _ms(e["ts"]) < at]
        base_before = [e for e in base if e["type"] == "prediction" and _ms(e["ts"]) < at]
        assert before == base_before


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_stream_has_exact_count_order_and_valid_joins(scenario: str) -> None:
    """The stream has exactly `events` events in ts order, each joined to an earlier prediction."""
    events, _ = _run(scenario)
    assert len(events) == N
    stamps = [_ms(e["ts"]) for e in events]
    assert stamps == sorted(stamps)
    seen: dict[object, int] = {}
    for event, ts in zip(events, stamps, strict=True):
        if event["type"] == "prediction":
            assert event["request_id"] not in seen
            seen[event["request_id"]] = ts
        else:
            assert event["request_id"] in seen
            assert seen[event["request_id"]] < ts


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_events_match_the_contract(scenario: str) -> None:
    """Every event has the schema-version-1 keys and value types of its type."""
    events, _ = _run(scenario)
    ids: set[object] = set()
    for e in events:
        assert e["schema_version"] == 1
        ts = e["ts"]
        assert (isinstance(ts, str) and ts.endswith("Z")) or (isinstance(ts, int) and not isinstance(ts, bool))
        assert isinstance(e["event_id"], str)
        assert e["event_id"] not in ids
        ids.add(e["event_id"])
        if e["type"] == "interaction":
            assert set(e) == {
                "type",
                "schema_version",
                "event_id",
                "ts",
                "request_id",
                "kind",
                "value",
            }
            assert e["kind"] in KINDS
            if e["kind"] == "label":
                assert e["value"] in ("approve", "deny", True, False)
            else:
                assert e["value"] is None
            continue
        assert e["type"] == "prediction"
        common = {
            "type",
            "schema_version",
            "event_id",
            "ts",
            "model_id",
            "model_version",
            "request_id",
            "attributes",
            "features",
            "prediction",
            "score",
        }
        assert set(_attr_keys(e)) == {"region", "language", "age_band", "channel"}
        score = e["score"]
        assert isinstance(score, float)
        assert 0.0 <= score <= 1.0
        if e["model_id"] == "support-router":
            assert set(e) == common
            assert e["model_version"] in ("v7", "v8")
            assert e["prediction"] == ("human" if score >= 0.5 else "ai")
            assert isinstance(_feature(e, "message_length"), int)
            assert isinstance(_feature(e, "sentiment"), float)
            assert isinstance(_feature(e, "account_age_days"), int)
            assert isinstance(_feature(e, "topic"), str)
        else:
            assert e["model_id"] == "refund-approval"
            assert set(e) == common | {"favorable"}
            assert e["model_version"] == "v3"
            assert e["favorable"] is (e["prediction"] == "approve")
            assert (score >= 0.5) is (e["prediction"] == "approve")
            assert isinstance(_feature(e, "amount"), float)
            assert isinstance(_feature(e, "prior_refunds"), int)
            assert isinstance(_feature(e, "reason"), str)


def _attr_keys(event: Event) -> list[str]:
    attributes = event["attributes"]
    assert isinstance(attributes, dict)
    return list(attributes)


def test_both_timestamp_and_label_forms_are_emitted() -> None:
    """About 1 in 10 ts values are epoch ms and labels come as strings and booleans."""
    events, _ = _run("baseline")
    int_share = sum(isinstance(e["ts"], int) for e in events) / len(events)
    assert 0.07 < int_share < 0.13
    labels = Counter(type(e["value"]) for e in events if e.get("kind") == "label")
    assert labels[bool] > 0.4 * sum(labels.values())
    assert labels[str] > 0.4 * sum(labels.values())


def test_baseline_rates_match_the_domain() -> None:
    """Baseline traffic has ~50/50 models, ~0.3 human routing and the stated rate."""
    events, truth = _run("baseline")
    preds = [e for e in events if e["type"] == "prediction"]
    support = _predictions(events, "support-router")
    assert 0.45 < len(support) / len(preds) < 0.55
    human = sum(1 for p in support if p["prediction"] == "human") / len(support)
    assert 0.27 < human < 0.33
    span_s = (_ms(preds[-1]["ts"]) - _ms(preds[0]["ts"])) / 1000
    assert 18.0 < len(preds) / span_s < 22.0
    # end_ms is the expected end, so the actual last event lands close to it.
    assert abs(_ms(events[-1]["ts"]) - truth.end_ms) < 0.05 * (truth.end_ms - truth.start_ms)


def test_baseline_selection_rate_is_equal_across_age_bands() -> None:
    """At baseline refund-approval selection rates per age band are within 0.05 of each other."""
    events, truth = _run("baseline", 100_000)
    assert truth.injections == ()
    groups: defaultdict[object, list[Event]] = defaultdict(list)
    for p in _predictions(events, "refund-approval"):
        groups[_attr(p, "age_band")].append(p)
    rates = [_selection_rate(g) for g in groups.values()]
    assert len(rates) == 5
    assert max(rates) - min(rates) <= 0.05
    assert all(0.64 < r < 0.74 for r in rates)


def test_bias_lowers_selection_rate_for_65_plus_only() -> None:
    """After the bias injection 65+ is approved below 0.4 while other bands stay above 0.6."""
    events, truth = _run("bias")
    (injection,) = truth.injections
    assert (injection.attribute, injection.value) == ("age_band", "65+")
    assert injection.expected_rule == "selection_rate_disparity"
    after = [p for p in _predictions(events, "refund-approval") if _ms(p["ts"]) >= injection.at_ms]
    senior = [p for p in after if _attr(p, "age_band") == "65+"]
    others: defaultdict[object, list[Event]] = defaultdict(list)
    for p in after:
        if _attr(p, "age_band") != "65+":
            others[_attr(p, "age_band")].append(p)
    assert _selection_rate(senior) < 0.4
    assert all(_selection_rate(g) > 0.6 for g in others.values())


def test_feature_drift_triples_eu_message_length_only() -> None:
    """After the drift injection EU message_length median rises >= 2.5x; others move < 15%."""
    events, truth = _run("feature-drift")
    (injection,) = truth.injections
    assert injection.feature == "message_length"
    assert injection.expected_rule == "feature_drift_psi"
    at = injection.at_ms

    def median(eu: bool, after: bool) -> float:
        return statistics.median(
            float(str(_feature(p, "message_length")))
            for p in _predictions(events, "support-router")
            if (_attr(p, "region") == "EU") is eu and (_ms(p["ts"]) >= at) is after
        )

    assert median(True, True) >= 2.5 * median(True, False)
    assert abs(median(False, True) / median(False, False) - 1) < 0.15


def test_complaint_spike_introduces_v8_with_high_complaint_rate() -> None:
    """v8 appears only after the injection and draws complaints on more than 10% of predictions."""
    events, truth = _run("complaint-spike")
    (injection,) = truth.injections
    assert (injection.model_version, injection.attribute) == ("v8", None)
    assert injection.expected_rule == "complaint_rate_high"
    support = _predictions(events, "support-router")
    v8 = [p for p in support if p["model_version"] == "v8"]
    assert v8
    assert all(_ms(p["ts"]) >= injection.at_ms for p in v8)
    after = [p for p in support if _ms(p["ts"]) >= injection.at_ms]
    assert 0.4 < len(v8) / len(after) < 0.6
    # Ignore the tail whose complaints (<= 120 s later) may fall past the end.
    cutoff = _ms(events[-1]["ts"]) - 120_000
    complained = {e["request_id"] for e in events if e.get("kind") == "complaint"}

    def rate(preds: list[Event]) -> float:
        kept = [p for p in preds if _ms(p["ts"]) <= cutoff]
        return sum(1 for p in kept if p["request_id"] in complained) / len(kept)

    assert rate(v8) > 0.1
    assert rate([p for p in support if p["model_version"] == "v7"]) < 0.04


def test_label_shift_lowers_ja_tpr_but_not_selection_rate() -> None:
    """After the label shift ja TPR is below 0.65 and others above 0.85; ja selection stays ~0.69."""
    events, truth = _run("label-shift")
    (injection,) = truth.injections
    assert (injection.attribute, injection.value) == ("language", "ja")
    assert injection.expected_rule == "tpr_gap"
    labels = {e["request_id"]: e["value"] in (True, "approve") for e in events if e.get("kind") == "label"}
    after = [p for p in _predictions(events, "refund-approval") if _ms(p["ts"]) >= injection.at_ms]

    def tpr(preds: list[Event]) -> float:
        positives = [p for p in preds if labels.get(p["request_id"]) is True]
        return sum(1 for p in positives if p["favorable"] is True) / len(positives)

    ja = [p for p in after if _attr(p, "language") == "ja"]
    rest = [p for p in after if _attr(p, "language") != "ja"]
    assert tpr(ja) < 0.65
    assert tpr(rest) > 0.85
    assert abs(_selection_rate(ja) - 0.69) < 0.07


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_is_known_before_iterating(scenario: str) -> None:
    """Truth is returned up front with injections at 40% of the expected duration."""
    stream, truth = generate(scenario, events=N, seed=SEED, rate=10.0, start_ms=1_000)
    assert (truth.scenario, truth.seed, truth.events, truth.start_ms) == (
        scenario,
        SEED,
        N,
        1_000,
    )
    expected = truth.end_ms - truth.start_ms
    if scenario == "baseline":
        assert truth.injections == ()
    else:
        (injection,) = truth.injections
        assert injection.kind == scenario
        assert abs(injection.at_ms - (1_000 + 0.4 * expected)) <= 1
    first = next(stream)
    assert first["ts"] in (1_000, "1970-01-01T00:00:01.000Z")


def test_write_jsonl_writes_events_and_truth(tmp_path: Path) -> None:
    """write_jsonl writes one JSON object per line plus a parseable FILE.truth.json."""
    path = tmp_path / "traffic.jsonl"
    truth = write_jsonl("bias", path, events=2_000, seed=5)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2_000
    stream, _ = generate("bias", events=2_000, seed=5)
    assert [json.loads(line) for line in lines] == list(stream)
    doc = json.loads((tmp_path / "traffic.jsonl.truth.json").read_text(encoding="utf-8"))
    assert doc == truth.to_json()
    assert doc["injections"][0]["expected_rule"] == "selection_rate_disparity"
    assert doc["injections"][0]["at"].endswith("Z")


def test_zero_events_yields_nothing() -> None:
    """Asking for zero events yields an empty stream."""
    stream, truth = generate("baseline", events=0, seed=1)
    assert list(stream) == []
    assert truth.events == 0


def test_unknown_scenario_raises_with_valid_names() -> None:
    """An unknown scenario raises ValueError naming every valid scenario."""
    with pytest.raises(ValueError, match="unknown scenario") as info:
        generate("nope", events=10, seed=1)
    for name in SCENARIOS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("events", "seed", "rate", "message"),
    [(-1, 1, 20.0, "events"), (10, -1, 20.0, "seed"), (10, 1, 0.0, "rate")],
)
def test_invalid_arguments_raise(events: int, seed: int, rate: float, message: str) -> None:
    """Negative events or seed and a non-positive rate raise ValueError eagerly."""
    with pytest.raises(ValueError, match=message):
        generate("baseline", events=events, seed=seed, rate=rate)


def test_scenarios_match_the_scenario_type() -> None:
    """SCENARIOS lists exactly the names of the Scenario literal type."""
    assert get_args(Scenario) == SCENARIOS
