"""Tests for the one alert record type in `driftwatch.alerts.records`: its bytes, its decoder and its errors."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from driftwatch.alerts.engine import AlertTransition
from driftwatch.alerts.records import AlertRecord, AlertRecordError, action_id, decode_record, encode_record
from driftwatch.errors import DriftwatchError

T0 = 1_795_000_000.0
SINCE = "2026-11-18T11:35:30.000Z"


def transition(value: float = 0.129, lo: float = 0.11, hi: float = 0.14) -> AlertTransition:
    labels = {"alertname": "complaint_rate_high", "model": "support-router", "version": "v8"}
    return AlertTransition(
        rule="complaint_rate_high",
        state="firing",
        labels=labels,
        annotations={"summary": "Complaint rate above 8%"},
        fingerprint="a684325636c5e4aa",
        value=value,
        n=1488,
        lo=lo,
        hi=hi,
        window=300.0,
        event_time=T0 + 60,
        active_since=T0,
        severity="critical",
        actions=("rollback_model",),
        evidence={"window_seconds": 300.0, "contributors": [{"slice": "EU", "value": 0.14}]},
    )


def test_engine_record_bytes_keep_the_topic_field_order() -> None:
    """The engine's record encodes to the same bytes as the JSON object the alerts topic has always carried."""
    t = transition()
    want = {
        "rule": t.rule,
        "state": t.state,
        "labels": t.labels,
        "annotations": t.annotations,
        "value": t.value,
        "n": t.n,
        "interval": [t.lo, t.hi],
        "window_seconds": t.window,
        "event_time": "2026-11-18T11:07:40.000Z",
        "active_since": "2026-11-18T11:06:40.000Z",
        "severity": t.severity,
        "fingerprint": t.fingerprint,
        "actions": list(t.actions),
        "evidence": t.evidence,
        "resolved_reason": None,  # added last: readers of older records see its default
    }
    assert encode_record(t.to_record()) == msgspec.json.encode(want)


def test_non_finite_numbers_are_written_as_null() -> None:
    """NaN and infinite values and interval bounds become null, never invalid JSON."""
    data = json.loads(encode_record(transition(math.nan, math.nan, math.inf).to_record()))
    assert (data["value"], data["interval"]) == (None, [None, None])


def test_decode_reads_bytes_mappings_and_records_alike() -> None:
    """Bytes, the decoded mapping and the record itself all give the same record back."""
    rec = transition().to_record()
    raw = encode_record(rec)
    assert decode_record(raw) == rec
    assert decode_record(json.loads(raw)) == rec
    assert decode_record(rec) is rec
    assert rec.event_seconds == T0 + 60
    assert rec.since_seconds == T0


def test_minimal_record_takes_defaults() -> None:
    """Only rule, state, labels, fingerprint and the two times are required."""
    rec = decode_record(
        {
            "rule": "r",
            "state": "resolved",
            "labels": {"model": "m"},
            "fingerprint": "f",
            "event_time": SINCE,
            "active_since": SINCE,
        }
    )
    assert (rec.value, rec.n, rec.interval, rec.actions, rec.evidence, rec.severity) == (
        None,
        0,
        (None, None),
        (),
        {},
        "",
    )


def test_non_finite_value_in_a_mapping_reads_as_null() -> None:
    """A NaN value handed over as a Python mapping reads as null, as the engine would have written it."""
    raw = json.loads(encode_record(transition().to_record()))
    assert decode_record({**raw, "value": math.inf}).value is None


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1, 2]",
        b"{" * 100_000,
        {"rule": "r"},
        {"labels": {"model": 3}},
        {"rule": ""},
        {"fingerprint": ""},
        {"value": True},
        {"value": "0.1"},
        {"actions": "rollback_model"},
        {"active_since": "yesterday"},
        {"event_time": 1795000000},
    ],
    ids=repr,
)
def test_unreadable_records_raise_the_library_error(data: bytes | dict[str, object]) -> None:
    """Anything that is not a whole alert record raises AlertRecordError, a DriftwatchError and a ValueError."""
    if isinstance(data, dict) and set(data) != {"rule"}:
        data = {**json.loads(encode_record(transition().to_record())), **data}
    with pytest.raises(AlertRecordError) as err:
        decode_record(data)
    assert isinstance(err.value, DriftwatchError)
    assert isinstance(err.value, ValueError)


def test_records_are_frozen() -> None:
    """A record cannot be changed once built (the notifier keeps them in its state)."""
    rec = transition().to_record()
    with pytest.raises(AttributeError):
        rec.state = "resolved"  # type: ignore[misc]
    assert isinstance(rec, AlertRecord)


def test_action_id_is_the_documented_hash() -> None:
    """An action id depends on the action name, fingerprint and active_since text, and nothing else."""
    aid = action_id("rollback", "a684325636c5e4aa", SINCE)
    assert aid == "a203daffdb5f28373cbf"
    assert action_id("rollback", "a684325636c5e4aa", SINCE) == aid
    assert (
        len({aid, action_id("rollback", "a684325636c5e4ab", SINCE), action_id("undo", "a684325636c5e4aa", SINCE)}) == 3
    )
