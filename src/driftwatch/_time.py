"""Timestamps as driftwatch writes and reads them: RFC 3339 UTC with milliseconds."""

from __future__ import annotations

import datetime as dt

__all__ = ["epoch", "rfc3339"]


def rfc3339(seconds: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with milliseconds.

    >>> rfc3339(0)
    '1970-01-01T00:00:00.000Z'
    """
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(text: object) -> float | None:
    """An RFC 3339 / ISO 8601 timestamp as epoch seconds; None if it is not one.

    >>> epoch("1970-01-01T00:00:01.500Z"), epoch("yesterday"), epoch(3)
    (1.5, None, None)
    """
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
