"""Batches of a Faust stream bounded by messages *and* bytes.

Faust's ``Stream.take_events(n, within)`` counts messages only. The ingest agent reads two kinds of message: one
event of ~250 bytes, or an envelope of 100 events (~25 KB). One count cannot suit both: a count large enough that
single events fold in batches of a few thousand (a fold of a few dozen events costs several times more per event)
holds a hundred times more bytes when the messages are envelopes. :func:`take_batches` ends a batch at whichever
bound comes first.

It works as ``take_events`` does: a stream processor collects each event as the stream is drained in the
background, and holds the stream while a batch is processed (so at most one batch is buffered here, and Kafka
fetches no further than Faust's stream buffer). Events are acknowledged once the batch is processed, so their
offsets are committed only then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["take_batches", "value_bytes"]


_STREAM_INTERNALS = ("_enable_passive", "_processors", "add_processor", "current_event", "wait_for_stopped")
"""What :func:`take_batches` uses of a Faust stream, its private drain and processor list included (as Faust's own
``take_events`` does; faust-streaming 0.15)."""


def _faust_version() -> str:
    try:
        return version("faust-streaming")
    except PackageNotFoundError:
        return "version unknown"


def value_bytes(message: Any) -> int:
    """Bytes of a Kafka message's value (what batches and ingest calls are bounded by)."""
    return len(message.value or b"")


async def take_batches(stream: Any, max_messages: int, max_bytes: int, within: float) -> AsyncIterator[list[Any]]:
    """Batches of ``stream``'s events: each ends at ``max_messages`` messages, once its message values reach
    ``max_bytes`` bytes (a batch never holds more than that plus one message), or ``within`` seconds after the
    previous batch was taken if it has any event.

    Each batch's events are acknowledged when the loop body that got it ends (also by an exception or a ``break``).
    """
    if max_messages < 1 or max_bytes < 1 or within <= 0:
        raise ValueError(f"take_batches: bounds must be positive, got {max_messages}, {max_bytes}, {within}")
    missing = [name for name in _STREAM_INTERNALS if not hasattr(stream, name)]
    if missing:
        raise RuntimeError(
            f"take_batches needs Faust's Stream.{', Stream.'.join(missing)}, which this faust-streaming "
            f"({_faust_version()}) lacks: install the version driftwatch is tested with (faust-streaming>=0.15,<0.16)"
        )
    events: list[Any] = []
    size = 0
    full = asyncio.Event()  # a bound is reached: the batch is to be taken now
    accepting = asyncio.Event()  # the collector may add events (cleared while a batch is processed)
    accepting.set()

    async def collect(value: Any) -> Any:
        nonlocal size
        while not accepting.is_set():  # a batch is being processed: hold the stream
            await stream.wait(accepting)
            if stream.should_stop:
                return value
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches: a stream processor ran without a current event")
        events.append(event)
        size += value_bytes(event.message)
        if len(events) >= max_messages or size >= max_bytes:
            accepting.clear()
            full.set()
        return value

    acks = stream.enable_acks
    stream.enable_acks = False  # acknowledged here, once processed
    stream.add_processor(collect)
    stream._enable_passive(aiter(stream.channel))  # drain the stream in the background, as take_events does
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within)
            if not events:
                continue
            accepting.clear()
            batch = list(events)
            try:
                yield batch
            finally:
                events.clear()
                size = 0
                for event in batch:
                    await stream.ack(event)
                full.clear()
                accepting.set()
    finally:
        stream.enable_acks = acks
        stream._processors.remove(collect)
