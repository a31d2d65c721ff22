"""take_batches leans on a few of Faust's stream internals: a Faust that lacks them fails with a clear error."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest

from driftwatch.daemon.batching import _STREAM_INTERNALS, take_batches


def test_the_installed_faust_stream_has_what_take_batches_uses(tmp_path: Any) -> None:
    app = faust.App("driftwatch-guard-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    stream = app.stream(app.topic("guard-test", value_type=bytes))
    assert [name for name in _STREAM_INTERNALS if not hasattr(stream, name)] == []


class _OldStream:
    """A stream of a Faust without the passive drain take_batches feeds."""

    def __init__(self) -> None:
        self.should_stop = False
        self.enable_acks = True
        self.current_event = None
        self._processors: list[Any] = []

    def add_processor(self, fn: Any) -> None:
        self._processors.append(fn)


def test_a_faust_without_them_is_named_with_the_version_to_install() -> None:
    stream = _OldStream()

    async def first() -> None:
        async for _ in take_batches(stream, 10, 1000, 0.1):
            pass

    with pytest.raises(RuntimeError) as err:
        asyncio.run(first())
    message = str(err.value)
    assert "Stream._enable_passive" in message
    assert "Stream.wait_for_stopped" in message
    assert "faust-streaming>=0.15,<0.16" in message
    assert stream._processors == []  # refused before touching the stream
