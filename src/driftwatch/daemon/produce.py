"""Producing simulated traffic to Kafka through the producer client (``simulate --bootstrap`` and the demo)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Iterator

from driftwatch.client import Client
from driftwatch.config import Config
from driftwatch.simulate import generate

__all__ = ["event_ms", "paced", "produce_simulation"]


def event_ms(event: dict[str, object]) -> int:
    """An event's time in epoch milliseconds (``ts`` is RFC 3339 or epoch ms)."""
    ts = event["ts"]
    if isinstance(ts, int):
        return ts
    return int(dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp() * 1000)


def paced(
    events: Iterable[dict[str, object]], start_ms: int, stop: threading.Event | None = None, speed: float = 1.0
) -> Iterator[dict[str, object]]:
    """Yield each event when wall time reaches its event time (relative to ``start_ms``, event time running
    ``speed`` times as fast as wall time); end early on ``stop``."""
    stop = stop or threading.Event()
    t0 = time.monotonic()
    for event in events:
        while not stop.is_set():
            wait = (event_ms(event) - start_ms) / 1000 / speed - (time.monotonic() - t0)
            if wait <= 0:
                break
            stop.wait(min(wait, 0.2))
        if stop.is_set():
            return
        yield event


def produce_simulation(
    config: Config,
    key: bytes | None,
    bootstrap: str,
    *,
    scenario: str,
    events: int,
    seed: int,
    rate: float,
    realtime: bool,
) -> int:
    """Produce ``events`` simulated events; with ``realtime`` they are paced at ``rate`` and stamped with wall time."""
    start_ms = int(time.time() * 1000) if realtime else 1_795_000_000_000
    stream, _ = generate(scenario, events=events, seed=seed, rate=rate, start_ms=start_ms)
    client = Client(config, key=key, bootstrap=bootstrap)
    client.start()
    n = 0
    try:
        for event in paced(stream, start_ms) if realtime else stream:
            client.emit_event(event)
            n += 1
    finally:
        client.close()
    return n
