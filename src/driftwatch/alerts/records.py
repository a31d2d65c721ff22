"""The alert record: what the engine writes for a transition and everything downstream reads.

One type, :class:`AlertRecord`, with one encoder and one decoder. The engine
builds it (:meth:`~driftwatch.alerts.engine.AlertTransition.to_record`); the
worker writes it to the alerts topic and ``replay --json`` prints it, both as
:func:`encode_record` bytes (field order as declared, RFC 3339 times, a
non-finite number as null). The notifier, the action planner and the API read
records with :func:`decode_record` only; a record it cannot read raises
:class:`AlertRecordError`, which callers count and skip.

>>> rec = decode_record(b'{"rule":"r","state":"firing","labels":{"model":"m"},"fingerprint":"f1",'
...                     b'"event_time":"2026-11-18T11:35:30.000Z","active_since":"2026-11-18T11:35:30.000Z"}')
>>> rec.rule, rec.value, rec.interval
('r', None, (None, None))
>>> decode_record(encode_record(rec)) == rec
True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from typing import Annotated

import msgspec

from driftwatch.errors import DriftwatchError

__all__ = ["AlertRecord", "AlertRecordError", "action_id", "decode_record", "encode_record"]

_Text = Annotated[str, msgspec.Meta(min_length=1)]


class AlertRecordError(DriftwatchError, ValueError):
    """An alert record cannot be read: not JSON, not an object, or a field missing or of the wrong type."""


class AlertRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One alert transition as written to the alerts topic; the field order is the JSON order."""

    rule: _Text
    state: _Text
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    value: float | None = None
    n: int = 0
    interval: tuple[float | None, float | None] = (None, None)
    window_seconds: float = 0.0
    event_time: str
    active_since: str
    severity: str = ""
    fingerprint: _Text
    actions: tuple[str, ...] = ()
    evidence: dict[str, object] = {}
    resolved_reason: str | None = None  # a resolution: "healthy", or "stale" (no sufficient data for one window)

    def __post_init__(self) -> None:
        _seconds(self.event_time, "event_time")
        _seconds(self.active_since, "active_since")

    @property
    def event_seconds(self) -> float:
        """``event_time`` as epoch seconds."""
        return _seconds(self.event_time, "event_time")

    @property
    def since_seconds(self) -> float:
        """``active_since`` as epoch seconds."""
        return _seconds(self.active_since, "active_since")


def _seconds(text: str, name: str) -> float:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"{name} must be an RFC 3339 timestamp") from None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(AlertRecord)


def encode_record(record: AlertRecord) -> bytes:
    """The record's JSON bytes, exactly as the alerts topic and ``replay --json`` carry them."""
    return _ENCODER.encode(record)


def decode_record(data: bytes | bytearray | memoryview | Mapping[str, object] | AlertRecord) -> AlertRecord:
    """Read a record from JSON bytes or an already decoded mapping; :class:`AlertRecordError` says what is wrong.

    A non-finite ``value`` (possible only in a mapping) reads as null, as the engine writes it.
    """
    if isinstance(data, AlertRecord):
        return data
    try:
        if isinstance(data, Mapping):
            rec = msgspec.convert(data, AlertRecord)
        else:
            rec = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as e:
        raise AlertRecordError(f"unreadable alert record: {e}") from None
    if rec.value is not None and not math.isfinite(rec.value):
        rec = msgspec.structs.replace(rec, value=None)
    return rec


def action_id(name: str, fingerprint: str, active_since: str) -> str:
    """Deterministic id of one action for one firing of one alert (the record's own ``active_since`` text).

    >>> action_id("rollback", "a684325636c5e4aa", "2026-11-18T11:35:30.000Z")
    'a203daffdb5f28373cbf'
    """
    text = f"{name}\x1f{fingerprint}\x1f{active_since}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]
