"""Structured logs: readable lines on a terminal, one JSON object per line otherwise.

Every module logs through :func:`get_logger` with an event name and fields,
never with a formatted message::

    log = get_logger(__name__)
    log.info("partitions_assigned", topic="predictions", partitions=[0, 1])

:func:`configure` is called once by the command line. It routes the standard
library's ``logging`` (Faust, aiokafka, aiohttp) through the same renderer, so
a piped worker writes nothing but JSON lines on stderr. A processor masks the
value of any field whose name says it holds a secret, so a token or key can
never reach a log line by accident; payloads and raw identifiers are never
passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

__all__ = ["QUIET_LIBRARIES", "SECRET_FIELDS", "configure", "get_logger"]

QUIET_LIBRARIES = ("faust", "mode", "aiokafka", "aiohttp.access")
"""Libraries whose INFO is a line per step or request: held at WARNING unless the level is debug."""

SECRET_FIELDS = ("secret", "token", "password", "authorization", "key", "signature")
"""Substrings of field names whose values are always masked."""

_MASK = "***"


def _mask_secrets(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in event:
        lowered = name.lower()
        if name != "event" and any(s in lowered for s in SECRET_FIELDS):
            event[name] = _MASK
    return event


def _shared() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]


def configure(*, json: bool | None = None, level: str = "info", stream: IO[str] | None = None) -> None:
    """Send driftwatch's and every library's logs to ``stream`` (stderr): JSON lines unless it is a terminal."""
    out = stream if stream is not None else sys.stderr
    as_json = not out.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if as_json else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level.lower() == "debug" else logging.WARNING)
    structlog.configure(
        processors=[*_shared(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _identity(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


def get_logger(name: str, **bound: object) -> Any:
    """A structured logger named ``name`` with ``bound`` fields on every line (worker id, model, partition).

    Before :func:`configure` (driftwatch used as a library, or in tests) lines
    go through the standard library's ``logging`` like any library's, never to
    stdout, where ``replay --json`` writes its results.
    """
    if not structlog.is_configured():
        structlog.configure(
            processors=[*_shared(), structlog.processors.KeyValueRenderer(key_order=["event"])],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
    # A lazy proxy: the configuration is read when a line is logged, so a module-level logger created at import
    # (before the command line calls configure()) still renders as configured.
    return structlog.stdlib.get_logger(name, **bound)
