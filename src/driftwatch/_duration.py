"""Durations written the way operators write them: ``250ms``, ``10s``, ``5m``, ``1h``, ``7d``."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["Duration", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Return seconds for ``"1h30m"``, ``"10s"``, ``"250ms"`` or a plain number of seconds.

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration(2.5)
    2.5
    """
    if isinstance(value, bool):
        raise ValueError("a duration must be like '10s', '5m', '1h' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"{value!r} is not a duration: write e.g. '10s', '5m', '1h30m'")
    else:
        raise ValueError("a duration must be like '10s', '5m', '1h' or a number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds compactly, the inverse of :func:`parse_duration` for whole units.

    >>> format_duration(300)
    '5m'
    >>> format_duration(3600)
    '1h'
    """
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A pydantic field type: seconds as float, read from ``"5m"``-style strings."""
