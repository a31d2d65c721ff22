"""The event contract (schema version 1) and its fast batch decoder.

This is the only module where raw bytes from the wire become Python values.
A bad event never raises out of a batch: it becomes a :class:`DecodeError`
with a reason from a bounded set (:data:`REASONS`), the field at fault and a
human message; the rest of the batch is kept.

Attributes that the config does not name are dropped by the decoder itself
(data minimisation): the decoded struct has no place for them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Final, Literal, NamedTuple

import msgspec

__all__ = [
    "INTERACTION_KINDS",
    "MAX_DEPTH",
    "REASONS",
    "SCHEMA_VERSION",
    "DecodeError",
    "Decoded",
    "EventDecoder",
    "Interaction",
    "Prediction",
    "json_schemas",
    "split_messages",
    "too_deep",
    "ts_seconds",
]

SCHEMA_VERSION: Final = 1
INTERACTION_KINDS: Final = ("complaint", "escalation", "thumbs_down", "thumbs_up", "override", "resolved", "label")
REASONS: Final = (
    "invalid_json",
    "not_an_object",
    "unknown_type",
    "unsupported_schema_version",
    "missing_field",
    "invalid_field",
    "oversized",
    "too_deep",
    "timestamp_out_of_range",
)
"""Every reason a :class:`DecodeError` can carry (a bounded set, safe as a metric label)."""

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Ts = Annotated[dt.datetime, msgspec.Meta(tz=True)] | Annotated[int, msgspec.Meta(ge=0)]
_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Feature = float | Annotated[str, msgspec.Meta(max_length=256)] | None
_Kind = Literal["complaint", "escalation", "thumbs_down", "thumbs_up", "override", "resolved", "label"]


def _types(attributes: tuple[str, ...] | None) -> tuple[type[msgspec.Struct], type[msgspec.Struct]]:
    """Build the Prediction/Interaction structs; with ``attributes`` given, others are dropped at decode."""
    attr_type: object
    if attributes is None:
        attr_type = dict[str, _Label]
    else:
        attr_type = msgspec.defstruct(
            "Attributes",
            [(a, _Label | None, None) for a in attributes],
            gc=False,
            frozen=True,
        )
    attr_default: object = msgspec.field(default_factory=attr_type) if attributes is not None else {}
    prediction = msgspec.defstruct(
        "Prediction",
        [
            ("schema_version", Literal[1]),
            ("event_id", _Id),
            ("ts", _Ts),
            ("model_id", _Label),
            ("model_version", _Label),
            ("request_id", _Id),
            ("prediction", _Label),
            ("attributes", attr_type, attr_default),
            ("features", dict[str, _Feature], {}),
            ("score", Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None, None),
            ("favorable", bool | None, None),
        ],
        tag="prediction",
        tag_field="type",
        gc=False,
        frozen=True,
        module=__name__,
    )
    interaction = msgspec.defstruct(
        "Interaction",
        [
            ("schema_version", Literal[1]),
            ("event_id", _Id),
            ("ts", _Ts),
            ("request_id", _Id),
            ("kind", _Kind),
            ("value", bool | int | _Label | None, None),
        ],
        tag="interaction",
        tag_field="type",
        gc=False,
        frozen=True,
        module=__name__,
    )
    return prediction, interaction


class Prediction(msgspec.Struct, tag="prediction", tag_field="type", gc=False, frozen=True):
    """What a model decided, for whom (segment attributes), from which inputs, with what confidence."""

    schema_version: Literal[1]
    event_id: _Id
    ts: _Ts
    model_id: _Label
    model_version: _Label
    request_id: _Id
    prediction: _Label
    attributes: dict[str, _Label] = {}
    features: dict[str, _Feature] = {}
    score: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    favorable: bool | None = None


class Interaction(msgspec.Struct, tag="interaction", tag_field="type", gc=False, frozen=True):
    """What the customer (or a human reviewer) did next, joined to its prediction by ``request_id``."""

    schema_version: Literal[1]
    event_id: _Id
    ts: _Ts
    request_id: _Id
    kind: _Kind
    value: bool | int | _Label | None = None


class DecodeError(msgspec.Struct, frozen=True):
    """Why one event of a batch was rejected: a bounded ``reason``, the ``field`` at fault, a message."""

    index: int
    reason: str
    field: str | None
    message: str


class Decoded(NamedTuple):
    """A decoded batch: valid predictions and interactions (in input order) and the rejects.

    ``order``: one byte per valid event in input order, 1 for a prediction and 0 for an interaction (how the two
    lists interleave; lateness is judged event by event in that order). None when the batch holds one kind only.
    """

    predictions: list[Prediction]
    interactions: list[Interaction]
    errors: list[DecodeError]
    order: bytes | None = None


MAX_DEPTH: Final = 32
"""Deepest nesting of arrays and objects an event may have (the contract needs 3: event, features or attributes)."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels deep in ``raw`` (JSON text).

    Cheap for ordinary events: text with no more brackets than ``limit``
    cannot nest deeper, and nothing is scanned. Otherwise strings are blanked
    out and the brackets counted without recursion, so a hostile event cannot
    exhaust the stack the way a recursive parser can.

    >>> too_deep(b'{"a":[1,{"b":"[[["}]}', limit=2), too_deep(b'{"a":[1,{"b":"[[["}]}', limit=3)
    (True, False)
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


_AT = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def _classify(err: msgspec.MsgspecError) -> tuple[str, str | None]:
    msg = str(err)
    if not isinstance(err, msgspec.ValidationError):
        return "invalid_json", None
    missing = _MISSING.search(msg)
    at = _AT.search(msg)
    path = at.group(1) if at else None
    if missing:
        field = missing.group(1) if path is None else f"{path}.{missing.group(1)}"
        return "missing_field", field
    if path is None and msg.startswith("Expected `object`"):
        return "not_an_object", None
    if path == "type":
        return "unknown_type", "type"
    if path == "schema_version":
        return "unsupported_schema_version", "schema_version"
    return "invalid_field", path


def ts_seconds(ts: dt.datetime | int) -> float:
    """Event time in epoch seconds from an RFC 3339 datetime or epoch milliseconds.

    >>> ts_seconds(1_700_000_000_500)
    1700000000.5
    """
    return ts / 1000.0 if isinstance(ts, int) else ts.timestamp()


class EventDecoder:
    """Decode batches of raw JSON events; keep only the configured ``attributes``.

    >>> d = EventDecoder(attributes=("region",))
    >>> out = d.decode_batch([b'{"type":"interaction","schema_version":1,"event_id":"i","ts":0,'
    ...                       b'"request_id":"r","kind":"complaint"}', b'{"type":"nope"}'])
    >>> len(out.interactions), out.errors[0].reason
    (1, 'unknown_type')
    """

    def __init__(self, attributes: Iterable[str] | None = None, *, max_event_bytes: int = 65536) -> None:
        attrs = tuple(attributes) if attributes is not None else None
        if attrs is None:
            self.prediction_type: type[msgspec.Struct] = Prediction
            self.interaction_type: type[msgspec.Struct] = Interaction
        else:
            self.prediction_type, self.interaction_type = _types(attrs)
        self._decoder = msgspec.json.Decoder(self.prediction_type | self.interaction_type)
        self.max_event_bytes = max_event_bytes

    def decode_batch(
        self, raws: Sequence[bytes], start: int = 0, *, time_range: tuple[float, float] | None = None
    ) -> Decoded:
        """Decode every raw event; errors carry ``start + position`` as their index.

        With ``time_range`` (epoch seconds, inclusive), an event stamped outside it is rejected as
        ``timestamp_out_of_range``: a stamp from the year 9999 must never move event time.
        """
        ptype = self.prediction_type
        if raws and max(map(len, raws)) <= self.max_event_bytes:
            # Fast path: a clean batch decodes in one comprehension; any error takes the careful path.
            try:
                if any(map(too_deep, raws)):
                    raise RecursionError  # the careful path names the event
                evs = list(map(self._decoder.decode, raws))
                if time_range is not None and not _all_within(evs, time_range):
                    raise RecursionError  # the careful path names the event
            except (msgspec.MsgspecError, RecursionError):
                pass
            else:
                preds = [e for e in evs if e.__class__ is ptype]
                if len(preds) == len(evs):
                    return Decoded(preds, [], [])  # type: ignore[arg-type]  # config-shaped structs (see _types)
                inters = [e for e in evs if e.__class__ is not ptype]
                if not any(e.kind == "label" and e.value is None for e in inters):
                    order = bytes([e.__class__ is ptype for e in evs]) if preds else None
                    return Decoded(preds, inters, [], order)  # type: ignore[arg-type]
        return self._decode_carefully(raws, start, time_range)

    def _decode_carefully(
        self, raws: Sequence[bytes], start: int, time_range: tuple[float, float] | None = None
    ) -> Decoded:
        preds: list[Prediction] = []
        inters: list[Interaction] = []
        errors: list[DecodeError] = []
        order = bytearray()
        decode = self._decoder.decode
        ptype = self.prediction_type
        limit = self.max_event_bytes
        for i, raw in enumerate(raws):
            if len(raw) > limit:
                errors.append(DecodeError(start + i, "oversized", None, f"event is {len(raw)} bytes; limit {limit}"))
                continue
            if too_deep(raw):
                errors.append(DecodeError(start + i, "too_deep", None, f"nested deeper than {MAX_DEPTH} levels"))
                continue
            try:
                ev = decode(raw)
            except msgspec.MsgspecError as e:
                reason, field = _classify(e)
                errors.append(DecodeError(start + i, reason, field, str(e)[:200]))
                continue
            except RecursionError:  # belt and braces: too_deep should have caught it
                errors.append(DecodeError(start + i, "too_deep", None, "nested too deeply to decode"))
                continue
            if time_range is not None and not time_range[0] <= ts_seconds(ev.ts) <= time_range[1]:
                errors.append(
                    DecodeError(start + i, "timestamp_out_of_range", "ts", "event time outside the accepted range")
                )
                continue
            if ev.__class__ is ptype:
                preds.append(ev)  # type: ignore[arg-type]  # a config-shaped Prediction (see _types)
                order.append(1)
            else:
                if ev.kind == "label" and ev.value is None:
                    errors.append(DecodeError(start + i, "invalid_field", "value", "a label needs a value"))
                    continue
                inters.append(ev)
                order.append(0)
        return Decoded(preds, inters, errors, bytes(order) if preds and inters else None)


def _all_within(events: Sequence[msgspec.Struct], time_range: tuple[float, float]) -> bool:
    lo, hi = time_range
    return all(lo <= ts_seconds(e.ts) <= hi for e in events)  # type: ignore[attr-defined]


_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def split_messages(values: Sequence[bytes]) -> tuple[list[bytes], list[int]]:
    r"""Split Kafka message values into single events; return them and the message index of each.

    A message is one JSON object, a JSON array of objects (an envelope), or
    newline-delimited JSON objects. An envelope that is not valid JSON is
    passed on whole, so it is rejected (and dead-lettered) as one event.

    >>> split_messages([b'{"a":1}', b'[{"b":2}, {"c":3}]', b'{"d":4}\n{"e":5}\n'])
    ([b'{"a":1}', b'{"b":2}', b'{"c":3}', b'{"d":4}', b'{"e":5}'], [0, 1, 1, 2, 2])
    """
    out: list[bytes] = []
    origin: list[int] = []
    for i, value in enumerate(values):
        head = value.lstrip()[:1]
        if head == b"[":
            try:
                parts = [bytes(r) for r in _RAW_LIST.decode(value)]
            except (msgspec.MsgspecError, RecursionError):
                parts = [value]  # rejected whole by the decoder, with its reason
        elif b"\n" in value.strip():
            parts = [line for line in (x.strip() for x in value.split(b"\n")) if line]
        else:
            parts = [value]
        out.extend(parts)
        origin.extend([i] * len(parts))
    return out, origin


def json_schemas() -> dict[str, dict[str, object]]:
    """JSON Schema documents for both event kinds, generated from the structs above."""
    out: dict[str, dict[str, object]] = {}
    for name, typ in (("prediction", Prediction), ("interaction", Interaction)):
        schema = msgspec.json.schema(typ)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"driftwatch {name} event, schema version {SCHEMA_VERSION}"
        out[name] = schema
    return out
