"""Tests for the event contract and batch decoder `driftwatch.events`."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from driftwatch.events import MAX_DEPTH, REASONS, EventDecoder, json_schemas, split_messages, too_deep, ts_seconds

PRED = {
    "type": "prediction",
    "schema_version": 1,
    "event_id": "e-1",
    "ts": "2024-05-01T12:00:00Z",
    "model_id": "support-router",
    "model_version": "v1",
    "request_id": "r-1",
    "prediction": "human",
    "attributes": {"region": "EU"},
    "features": {"message_length": 42.0, "topic": "billing"},
    "score": 0.75,
    "favorable": True,
}
INTER = {
    "type": "interaction",
    "schema_version": 1,
    "event_id": "i-1",
    "ts": 1_714_564_800_500,
    "request_id": "r-1",
    "kind": "complaint",
}


def enc(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def without(d: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in d.items() if k != key}


def test_valid_prediction_decodes_with_rfc3339_z_timestamp() -> None:
    """A valid prediction with an RFC 3339 'Z' timestamp decodes into a Prediction with every field kept."""
    out = EventDecoder(attributes=("region",)).decode_batch([enc(PRED)])
    assert out.errors == []
    assert out.interactions == []
    (p,) = out.predictions
    assert p.ts == dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    assert ts_seconds(p.ts) == 1_714_564_800.0
    assert (p.event_id, p.model_id, p.model_version, p.request_id, p.prediction) == (
        "e-1",
        "support-router",
        "v1",
        "r-1",
        "human",
    )
    assert p.attributes.region == "EU"
    assert p.features == {"message_length": 42.0, "topic": "billing"}
    assert p.score == 0.75
    assert p.favorable is True


def test_valid_interaction_decodes_with_epoch_ms_timestamp() -> None:
    """A valid interaction with an epoch-milliseconds timestamp decodes, and ts_seconds converts it to seconds."""
    out = EventDecoder(attributes=("region",)).decode_batch([enc(INTER)])
    assert out.errors == []
    assert out.predictions == []
    (i,) = out.interactions
    assert i.ts == 1_714_564_800_500
    assert ts_seconds(i.ts) == 1_714_564_800.5
    assert (i.request_id, i.kind, i.value) == ("r-1", "complaint", None)


def test_unknown_extra_fields_are_ignored() -> None:
    """Top-level fields the contract does not know are ignored rather than rejected."""
    out = EventDecoder(attributes=("region",)).decode_batch(
        [enc({**PRED, "surprise": {"x": 1}}), enc({**INTER, "extra": 3})]
    )
    assert out.errors == []
    assert len(out.predictions) == 1
    assert len(out.interactions) == 1


def test_unconfigured_attributes_are_dropped_by_the_decoder() -> None:
    """Attributes the config does not name do not survive decoding: the struct has no place for them."""
    raw = enc({**PRED, "attributes": {"region": "EU", "age_band": "65+", "email": "a@b.c"}})
    (p,) = EventDecoder(attributes=("region",)).decode_batch([raw]).predictions
    assert p.attributes.__struct_fields__ == ("region",)
    assert msgspec.structs.asdict(p.attributes) == {"region": "EU"}
    assert b"65+" not in msgspec.json.encode(p)
    assert b"email" not in msgspec.json.encode(p)


def test_configured_attribute_absent_from_event_is_none() -> None:
    """A configured attribute missing from an event decodes as None."""
    (p,) = EventDecoder(attributes=("region", "channel")).decode_batch([enc(without(PRED, "attributes"))]).predictions
    assert p.attributes.region is None
    assert p.attributes.channel is None


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2, 3]", "not_an_object", None),
        (b'"just a string"', "not_an_object", None),
        (enc({**PRED, "type": "click"}), "unknown_type", "type"),
        (enc({**PRED, "schema_version": 2}), "unsupported_schema_version", "schema_version"),
        (enc(without(PRED, "model_id")), "missing_field", "model_id"),
        (enc(without(INTER, "kind")), "missing_field", "kind"),
        (enc(without(PRED, "type")), "missing_field", "type"),
        (enc({**PRED, "score": 1.5}), "invalid_field", "score"),
        (enc({**PRED, "ts": -1}), "invalid_field", "ts"),
        (enc({**PRED, "attributes": {"region": 7}}), "invalid_field", "attributes.region"),
        (enc({**INTER, "kind": "like"}), "invalid_field", "kind"),
    ],
)
def test_each_bad_input_gets_its_reason_and_field(raw: bytes, reason: str, field: str | None) -> None:
    """Each kind of malformed event is rejected with the right bounded reason and the field at fault."""
    out = EventDecoder(attributes=("region",)).decode_batch([raw])
    assert out.predictions == []
    assert out.interactions == []
    (err,) = out.errors
    assert (err.index, err.reason, err.field) == (0, reason, field)
    assert err.reason in REASONS
    assert err.message


def test_oversized_event_is_rejected_before_decoding() -> None:
    """An event longer than max_event_bytes is rejected as 'oversized' even if it is valid JSON."""
    raw = enc(PRED)
    d = EventDecoder(attributes=("region",), max_event_bytes=len(raw) - 1)
    (err,) = d.decode_batch([raw]).errors
    assert (err.reason, err.field) == ("oversized", None)
    assert len(EventDecoder(attributes=("region",), max_event_bytes=len(raw)).decode_batch([raw]).predictions) == 1


def test_every_reason_is_reachable() -> None:
    """Every reason in REASONS is produced by some input, so the bounded set has no dead entries."""
    raws = [
        b"{oops",
        b"17",
        enc({**PRED, "type": "x"}),
        enc({**PRED, "schema_version": 9}),
        enc(without(PRED, "request_id")),
        enc({**PRED, "score": -0.1}),
        enc({**PRED, "features": {"f": "x" * 300}}) + b" " * 70000,
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        enc({**PRED, "ts": "9999-12-31T23:59:59Z"}),
    ]
    out = EventDecoder(attributes=("region",)).decode_batch(raws, time_range=(0.0, 4_000_000_000.0))
    assert sorted(e.reason for e in out.errors) == sorted(REASONS)


def test_bad_event_in_the_middle_of_a_batch_loses_nothing_else() -> None:
    """A bad event mid-batch is rejected with its own index while the events around it are kept in order."""
    raws = [
        enc({**PRED, "event_id": "a"}),
        enc({**INTER, "event_id": "b"}),
        b"garbage",
        enc({**PRED, "event_id": "c"}),
        enc({**INTER, "event_id": "d"}),
    ]
    out = EventDecoder(attributes=("region",)).decode_batch(raws, start=100)
    assert [p.event_id for p in out.predictions] == ["a", "c"]
    assert [i.event_id for i in out.interactions] == ["b", "d"]
    assert [(e.index, e.reason) for e in out.errors] == [(102, "invalid_json")]


@pytest.mark.parametrize(
    "deep",
    [
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b"[" * 1000 + b"]" * 1000,
        b'{"type":"prediction","features":' + b"[" * 1000 + b"]" * 1000 + b"}",
    ],
    ids=["objects", "arrays", "inside-an-event"],
)
def test_deeply_nested_event_is_rejected_and_its_neighbours_kept(deep: bytes) -> None:
    """A 1,000-deep event (2 KB) is rejected as too_deep, never raised, and the events around it are kept."""
    raws = [enc({**PRED, "event_id": "a"}), deep, enc({**INTER, "event_id": "b"})]
    out = EventDecoder(attributes=("region",)).decode_batch(raws)
    assert [p.event_id for p in out.predictions] == ["a"]
    assert [i.event_id for i in out.interactions] == ["b"]
    assert [(e.index, e.reason) for e in out.errors] == [(1, "too_deep")]


def test_deep_envelope_is_passed_on_whole_and_rejected() -> None:
    """An envelope nested 1,000 deep is not split (it would recurse) but rejected as one event."""
    deep = b"[" * 1000 + b"]" * 1000
    parts, origin = split_messages([enc(PRED), deep])
    assert parts == [enc(PRED), deep]
    assert origin == [0, 1]


def test_depth_counts_brackets_outside_strings_only() -> None:
    """Brackets inside string values do not count as nesting; real nesting past the limit does."""
    in_strings = enc({**PRED, "features": {"topic": "[{" * 100}})
    assert not too_deep(in_strings)
    assert len(EventDecoder(attributes=("region",)).decode_batch([in_strings]).predictions) == 1
    assert not too_deep(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert too_deep(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59Z", 0, "1970-01-02T00:00:00Z", "2024-05-01T12:10:01Z"])
def test_event_time_outside_the_accepted_range_is_rejected(ts: object) -> None:
    """An event stamped outside the accepted range (the year 9999, 1970, just past the skew) is rejected by reason
    and field, and the events around it are kept."""
    now = ts_seconds(msgspec.json.decode(b'"2024-05-01T12:00:00Z"', type=dt.datetime))
    raws = [
        enc({**PRED, "event_id": "a"}),
        enc({**PRED, "event_id": "bad", "ts": ts}),
        enc({**INTER, "ts": int(now * 1000)}),
    ]
    out = EventDecoder(attributes=("region",)).decode_batch(raws, time_range=(946_684_800.0, now + 600))
    assert [p.event_id for p in out.predictions] == ["a"]
    assert len(out.interactions) == 1
    assert [(e.index, e.reason, e.field) for e in out.errors] == [(1, "timestamp_out_of_range", "ts")]


def test_event_time_range_bounds_are_inclusive_and_optional() -> None:
    """An event exactly at either bound is kept; without a range any stamp decodes."""
    ts = ts_seconds(msgspec.json.decode(b'"2024-05-01T12:00:00Z"', type=dt.datetime))
    raw = enc(PRED)
    d = EventDecoder(attributes=("region",))
    assert len(d.decode_batch([raw], time_range=(ts, ts)).predictions) == 1
    assert len(d.decode_batch([enc({**PRED, "ts": "9999-12-31T23:59:59Z"})]).predictions) == 1


def test_label_interaction_without_value_is_rejected() -> None:
    """A label interaction needs a value: without one it is an invalid_field error on 'value'."""
    out = EventDecoder(attributes=("region",)).decode_batch(
        [enc({**INTER, "kind": "label"}), enc({**INTER, "kind": "label", "value": False})]
    )
    assert [(e.index, e.reason, e.field) for e in out.errors] == [(0, "invalid_field", "value")]
    (ok,) = out.interactions
    assert ok.value is False


def test_score_outside_unit_interval_is_rejected() -> None:
    """Scores must lie in [0, 1]: the bounds are accepted, values just outside are rejected."""
    d = EventDecoder(attributes=("region",))
    out = d.decode_batch([enc({**PRED, "score": s}) for s in (0.0, 1.0, 1.0000001, -1e-9)])
    assert [p.score for p in out.predictions] == [0.0, 1.0]
    assert [(e.index, e.reason, e.field) for e in out.errors] == [
        (2, "invalid_field", "score"),
        (3, "invalid_field", "score"),
    ]


def test_naive_datetime_is_rejected() -> None:
    """A timestamp without a timezone is ambiguous and rejected, while an explicit offset is accepted."""
    d = EventDecoder(attributes=("region",))
    out = d.decode_batch([enc({**PRED, "ts": "2024-05-01T12:00:00"}), enc({**PRED, "ts": "2024-05-01T14:00:00+02:00"})])
    assert [(e.index, e.reason, e.field) for e in out.errors] == [(0, "invalid_field", "ts")]
    assert ts_seconds(out.predictions[0].ts) == 1_714_564_800.0


def test_decoder_without_attribute_list_keeps_a_dict() -> None:
    """With no attribute list the decoder keeps the attributes as a plain dict."""
    (p,) = EventDecoder().decode_batch([enc({**PRED, "attributes": {"region": "EU", "x": "y"}})]).predictions
    assert p.attributes == {"region": "EU", "x": "y"}


def test_json_schemas_describe_both_event_kinds() -> None:
    """json_schemas() returns a draft 2020-12 JSON Schema dict for prediction and interaction events."""
    schemas = json_schemas()
    assert set(schemas) == {"prediction", "interaction"}
    for name, schema in schemas.items():
        assert isinstance(schema, dict)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert name in str(schema["title"])
        text = msgspec.json.encode(schema).decode()
        assert f'"{name}"' in text  # the tag value
        assert msgspec.json.decode(text) == schema  # plain JSON, round-trips
    pred_text = msgspec.json.encode(schemas["prediction"]).decode()
    for f in ("event_id", "model_id", "request_id", "score", "favorable"):
        assert f in pred_text
    assert "kind" in msgspec.json.encode(schemas["interaction"]).decode()
