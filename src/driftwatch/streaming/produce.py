"""Producing the simulator's traffic to Kafka through the producer client (``driftwatch simulate --bootstrap``)."""

from __future__ import annotations

import time

from driftwatch.client import Client
from driftwatch.config import Config
from driftwatch.simulate import generate

__all__ = ["produce_simulation"]


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
    t0 = time.monotonic()
    n = 0
    try:
        for event in stream:
            if realtime:
                ts = event["ts"]
                ms = ts if isinstance(ts, int) else _ms(str(ts))
                wait = (ms - start_ms) / 1000 - (time.monotonic() - t0)
                if wait > 0:
                    time.sleep(wait)
            client.emit_event(event)
            n += 1
    finally:
        client.close()
    return n


def _ms(rfc3339: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)
