"""The producer client model servers embed: validate, pseudonymise at the source, batch into envelopes.

    client = Client(config, key=secret, bootstrap="kafka:9092")
    client.start()
    client.emit_prediction(model_id="support-router", model_version="v7", request_id=rid,
                           prediction="human", score=0.73, attributes={...}, features={...})
    client.emit_interaction(request_id=rid, kind="complaint")
    client.close()   # flushes

- Every event is validated against the event contract before it is queued
  (a :class:`ValueError` names the field), and sensitive attributes are
  replaced by their keyed tokens, so raw values never reach Kafka.
- Events are grouped by the partition their ``request_id`` maps to (Kafka's
  default murmur2 partitioner, the same for both topics since they are
  co-partitioned) into newline-delimited JSON envelopes of up to
  ``envelope_size`` events, sent when full or after ``linger`` seconds.
- The model server is never blocked: ``emit_*`` only appends to a bounded
  buffer; when Kafka is slow and the buffer is full the event is dropped and
  counted in :attr:`Client.dropped`. A background thread owns the producer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from driftwatch.config import Config
from driftwatch.core.slicing import AttributeCoder, coders_from_config
from driftwatch.events import Interaction, Prediction

__all__ = ["Client"]

_ENC = msgspec.json.Encoder()


class Client:
    """A non-blocking, batching producer of driftwatch events (one background thread)."""

    def __init__(
        self,
        config: Config,
        *,
        key: bytes | None,
        bootstrap: str,
        envelope_size: int = 100,
        linger: float = 0.05,
        max_buffer: int = 100_000,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.envelope_size = envelope_size
        self.linger = linger
        self.max_buffer = max_buffer
        self.dropped = 0
        self.sent = 0
        self.errors = 0
        self._coders: dict[str, AttributeCoder] = coders_from_config(config, key)
        self._sensitive = {a for a, ac in config.attributes.items() if ac.sensitive}
        self._buffer: deque[tuple[str, bytes, bytes]] = deque()  # (topic, partition key, event json)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._ids = itertools.count()

    # ----------------------------------------------------------------- public

    def start(self, timeout: float = 30.0) -> None:
        """Connect in the background thread; raise if the broker cannot be reached within ``timeout``."""
        self._thread = threading.Thread(target=self._run, name="driftwatch-client", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            raise ConnectionError(f"driftwatch client cannot reach Kafka at {self.bootstrap}: {self._failure}")

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is buffered and stop the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def emit_prediction(
        self,
        *,
        model_id: str,
        model_version: str,
        request_id: str,
        prediction: str,
        attributes: Mapping[str, str] | None = None,
        features: Mapping[str, float | str | None] | None = None,
        score: float | None = None,
        favorable: bool | None = None,
        ts: dt.datetime | int | None = None,
        event_id: str | None = None,
    ) -> None:
        """Validate, pseudonymise and queue one prediction (raises ValueError on a contract violation)."""
        event = {
            "type": "prediction",
            "schema_version": 1,
            "event_id": event_id or f"p-{next(self._ids)}",
            "ts": _ts(ts),
            "model_id": model_id,
            "model_version": model_version,
            "request_id": request_id,
            "prediction": prediction,
            "attributes": self._minimised(attributes or {}),
            "features": dict(features or {}),
            "score": score,
            "favorable": favorable,
        }
        self._queue(self.config.kafka.predictions.name, request_id, event, Prediction)

    def emit_interaction(
        self,
        *,
        request_id: str,
        kind: str,
        value: bool | int | str | None = None,
        ts: dt.datetime | int | None = None,
        event_id: str | None = None,
    ) -> None:
        """Validate and queue one interaction (complaint, escalation, label, ...)."""
        event = {
            "type": "interaction",
            "schema_version": 1,
            "event_id": event_id or f"i-{next(self._ids)}",
            "ts": _ts(ts),
            "request_id": request_id,
            "kind": kind,
            "value": value,
        }
        self._queue(self.config.kafka.interactions.name, request_id, event, Interaction)

    def emit_event(self, event: Mapping[str, object]) -> None:
        """Queue an already-formed event dict (the simulator's); sensitive attributes are still pseudonymised."""
        if event.get("type") == "prediction":
            attrs = event.get("attributes")
            if isinstance(attrs, dict):
                event = {**event, "attributes": self._minimised(attrs)}
            topic, typ = self.config.kafka.predictions.name, Prediction
        else:
            topic, typ = self.config.kafka.interactions.name, Interaction  # type: ignore[assignment]
        self._queue(topic, str(event.get("request_id", "")), event, typ)

    @property
    def buffered(self) -> int:
        """Events waiting to be sent."""
        return len(self._buffer)

    # ---------------------------------------------------------------- private

    def _minimised(self, attributes: Mapping[str, object]) -> dict[str, object]:
        """Only configured attributes, sensitive ones as keyed tokens: raw values never leave the model server."""
        return {
            a: self._coders[a].code(v) if a in self._sensitive and isinstance(v, str) else v
            for a, v in attributes.items()
            if a in self.config.attributes
        }

    def _queue(self, topic: str, request_id: str, event: Mapping[str, object], typ: type[msgspec.Struct]) -> None:
        data = _ENC.encode(event)
        try:
            msgspec.json.decode(data, type=typ)
        except msgspec.ValidationError as e:
            raise ValueError(f"invalid {typ.__name__.lower()} event: {e}") from None
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                self.dropped += 1
                return
            self._buffer.append((topic, request_id.encode(), data))
        if len(self._buffer) >= self.envelope_size:
            self._wake.set()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_request_size=8 * 1024 * 1024)
        try:
            await producer.start()
            parts = await producer.partitions_for(self.config.kafka.predictions.name)
        except Exception as e:  # any failure to connect is reported to start()
            self._failure = e
            self._ready.set()
            await producer.stop()
            return
        partitions = sorted(parts or {0})
        self._ready.set()
        try:
            while True:
                stopping = self._stop.is_set()
                await asyncio.get_running_loop().run_in_executor(None, self._wake.wait, self.linger)
                self._wake.clear()
                await self._drain(producer, partitions)
                if stopping:
                    break
        finally:
            await self._drain(producer, partitions)
            await producer.stop()

    async def _drain(self, producer: AIOKafkaProducer, partitions: list[int]) -> None:
        with self._lock:
            items = list(self._buffer)
            self._buffer.clear()
        if not items:
            return
        groups: dict[tuple[str, int], list[bytes]] = {}
        for topic, rid, data in items:
            # Kafka's default partitioner (murmur2, positive) so the request's events meet on one partition.
            p = partitions[(murmur2(rid) & 0x7FFFFFFF) % len(partitions)]
            groups.setdefault((topic, p), []).append(data)
        futures = []
        for (topic, p), events in groups.items():
            for i in range(0, len(events), self.envelope_size):
                envelope = b"\n".join(events[i : i + self.envelope_size])
                futures.append(
                    (await producer.send(topic, envelope, partition=p), len(events[i : i + self.envelope_size]))
                )
        for fut, n in futures:
            try:
                await fut
                self.sent += n
            except Exception:  # a failed send is counted, never raised into the model server
                self.errors += n


def _ts(ts: dt.datetime | int | None) -> str | int:
    if ts is None:
        return int(time.time() * 1000)
    if isinstance(ts, int):
        return ts
    return ts.isoformat()
