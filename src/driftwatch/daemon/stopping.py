"""Starting and stopping the alerting side's Kafka consumers within a bound.

aiokafka's ``AIOKafkaConsumer.stop()`` waits for the group request in flight. A JoinGroup sent while the broker
still counts another member of the group (a worker restarted within its session timeout, or killed) is answered
only when that rebalance ends, up to the other member's session timeout later: Ctrl-C at that moment used to
hold the worker ~10 s, and then cancelled tasks were reported at exit as "Task was destroyed but it is
pending!" and "Unclosed AIOKafkaConsumer". :func:`start_consumer` gives up a start when the stop comes first, and
:func:`stop_consumer` waits at most a bound (the consumer is marked closed before anything is awaited, and its
offsets were committed record by record); the alerting thread's ``asyncio.Runner`` then cancels and awaits what the
client left pending before its loop closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer

from driftwatch._log import get_logger

__all__ = ["CONSUMER_STOP_SECONDS", "start_consumer", "stop_consumer"]

CONSUMER_STOP_SECONDS = 3.0
"""Longest wait for a consumer to leave its group; a clean leave takes milliseconds."""
_JOINING_STOP_SECONDS = 1.0
"""The same for a consumer stopped before its first assignment (its JoinGroup is answered when the rebalance ends)."""

log = get_logger(__name__)


async def stop_consumer(consumer: AIOKafkaConsumer, what: str, timeout: float = CONSUMER_STOP_SECONDS) -> bool:
    """Stop ``consumer`` (``what``: whose, for the log), waiting at most ``timeout`` seconds; False when cut short.

    Cut short, the broker drops the member once its session times out; nothing is lost (offsets are committed as
    records are handled), and the tasks the consumer leaves are cancelled when its loop closes."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(consumer.stop(), timeout)
    except TimeoutError:
        log.info("kafka_consumer_stop_cut_short", consumer=what, waited_seconds=round(time.monotonic() - started, 1))
        return False
    return True


async def start_consumer(consumer: AIOKafkaConsumer, stop: asyncio.Event, what: str) -> bool:
    """Start ``consumer`` unless ``stop`` is set first; True once started. A consumer given its topics waits in
    ``start()`` for its first assignment, i.e. for its group's rebalance: a stop meanwhile cancels the start and
    stops the consumer (briefly: see :func:`stop_consumer`)."""
    starting = asyncio.ensure_future(consumer.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if starting.done():
        starting.result()  # what the start raised, if anything
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    await stop_consumer(consumer, what, timeout=_JOINING_STOP_SECONDS)
    return False
