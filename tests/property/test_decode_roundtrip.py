"""Property: valid prediction and interaction events survive encode -> decode with every field preserved."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwatch.events import INTERACTION_KINDS, EventDecoder, ts_seconds

ATTRS = ("region", "age_band")
ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=128)
labels = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=64)
timestamps = st.one_of(
    st.integers(0, 2**42),
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]
        ),
    ),
)
features = st.dictionaries(
    st.text(max_size=20),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=256)),
    max_size=5,
)
prediction = st.fixed_dictionaries(
    {
        "type": st.just("prediction"),
        "schema_version": st.just(1),
        "event_id": ids,
        "ts": timestamps,
        "model_id": labels,
        "model_version": labels,
        "request_id": ids,
        "prediction": labels,
    },
    optional={
        "attributes": st.fixed_dictionaries({}, optional=dict.fromkeys(ATTRS, labels)),
        "features": features,
        "score": st.floats(0.0, 1.0),
        "favorable": st.booleans(),
    },
)
interaction = st.fixed_dictionaries(
    {
        "type": st.just("interaction"),
        "schema_version": st.just(1),
        "event_id": ids,
        "ts": timestamps,
        "request_id": ids,
        "kind": st.sampled_from([k for k in INTERACTION_KINDS if k != "label"]),
    },
    optional={"value": st.one_of(st.booleans(), st.integers(-(2**53), 2**53), labels)},
)


def _wire(ev: dict[str, object]) -> dict[str, object]:
    out = dict(ev)
    if isinstance(out["ts"], dt.datetime):
        out["ts"] = out["ts"].isoformat()
    return out


@settings(max_examples=100, deadline=None)
@given(prediction)
def test_prediction_round_trip(ev: dict[str, object]) -> None:
    """Every field of a valid prediction is preserved by encode -> decode."""
    raw = msgspec.json.encode(_wire(ev))
    decoder = EventDecoder(attributes=ATTRS)
    out = decoder.decode_batch([raw])
    assert out.errors == []
    assert out.interactions == []
    (p,) = out.predictions
    for f in ("event_id", "model_id", "model_version", "request_id", "prediction"):
        assert getattr(p, f) == ev[f]
    assert p.ts == ev["ts"]
    assert ts_seconds(p.ts) == (ev["ts"] / 1000.0 if isinstance(ev["ts"], int) else ev["ts"].timestamp())  # type: ignore[union-attr,operator]
    assert p.score == ev.get("score")
    assert p.favorable == ev.get("favorable")
    assert p.features == ev.get("features", {})
    attrs = ev.get("attributes", {})
    assert isinstance(attrs, dict)
    assert msgspec.structs.asdict(p.attributes) == {a: attrs.get(a) for a in ATTRS}
    # Re-encoding the decoded struct and decoding again is a fixed point.
    # (the same decoder: each decoder builds its own Attributes struct type)
    again = decoder.decode_batch([msgspec.json.encode(p)]).predictions
    assert again == [p]


@settings(max_examples=100, deadline=None)
@given(interaction)
def test_interaction_round_trip(ev: dict[str, object]) -> None:
    """Every field of a valid interaction is preserved by encode -> decode."""
    out = EventDecoder(attributes=ATTRS).decode_batch([msgspec.json.encode(_wire(ev))])
    assert out.errors == []
    assert out.predictions == []
    (i,) = out.interactions
    assert (i.event_id, i.request_id, i.kind, i.ts) == (ev["event_id"], ev["request_id"], ev["kind"], ev["ts"])
    assert i.value == ev.get("value")
    assert type(i.value) is type(ev.get("value"))
