"""Structured logs: JSON lines once configured, whenever the logger was made; secrets masked; libraries held quiet."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from driftwatch._log import QUIET_LIBRARIES, configure, get_logger

EARLY = get_logger("driftwatch.test_early", worker="w-1")
"""Made at import, before configure(), as every module's logger is."""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure() sets process-wide logging; put it back so other tests in this worker are unaffected."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
    structlog.configure(**config)


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_logger_made_before_configure_writes_json_lines() -> None:
    """A module-level logger renders with the configuration in force when it logs, not when it was made."""
    buf = io.StringIO()
    configure(json=True, stream=buf)
    EARLY.info("started", topics=["p"])
    EARLY.bind(partition=3).warning("stalled")
    first, second = _lines(buf)
    assert first["event"] == "started"
    assert first["worker"] == "w-1"
    assert first["level"] == "info"
    assert (second["event"], second["partition"], second["level"]) == ("stalled", 3, "warning")


def test_secret_fields_are_masked() -> None:
    """Fields whose names say they hold a secret never show their value."""
    buf = io.StringIO()
    configure(json=True, stream=buf)
    get_logger("driftwatch.test").info("x", api_token="t0ps3cret", webhook_secret="s3", pseudonym_key="k", n=1)
    (line,) = _lines(buf)
    assert "t0ps3cret" not in buf.getvalue()
    assert (line["api_token"], line["webhook_secret"], line["pseudonym_key"], line["n"]) == ("***", "***", "***", 1)


def test_library_logs_are_json_and_their_info_is_held_back() -> None:
    """Faust's, mode's and aiokafka's records go through the same renderer; their INFO chatter is dropped."""
    buf = io.StringIO()
    configure(json=True, stream=buf)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).info("chatter")
    logging.getLogger("aiokafka").warning("broker down %s", "b1")
    (line,) = _lines(buf)
    assert (line["event"], line["logger"], line["level"]) == ("broker down b1", "aiokafka", "warning")


def test_console_rendering_is_not_json() -> None:
    """On a terminal (or json=False) lines are for people: the event name and fields, not a JSON object."""
    buf = io.StringIO()
    configure(json=False, stream=buf)
    get_logger("driftwatch.test").info("ready", port=9464)
    text = buf.getvalue()
    assert "ready" in text
    assert "port=9464" in text
    assert not text.lstrip().startswith("{")
