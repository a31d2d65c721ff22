"""``driftwatch sidecar``: model servers in any language send events over localhost HTTP; the sidecar produces them.

    POST /v1/events    NDJSON (``application/x-ndjson``) or a JSON array (``application/json``) of events
                       -> 202 {"accepted": n, "rejected": [{"index": i, "reason": r, "field": path}]}
    GET  /metrics      the producer side, ``driftwatch_sidecar_*`` (its own registry)
    GET  /healthz      200 while the process runs
    GET  /readyz       200 once Kafka answers; 503 while the last produce or metadata request failed

The rules are the Python :class:`~driftwatch.client.Client`'s, from the same
code: events are validated by :class:`~driftwatch.events.EventDecoder` (a
reject carries a bounded reason and the field at fault, never a value);
attributes the config does not name are dropped; sensitive values become
keyed tokens (:class:`~driftwatch.client.Minimiser`) before anything leaves;
events are grouped by the partition Kafka's murmur2 gives their
``request_id`` into NDJSON envelopes of up to ``envelope_size`` events
(:func:`~driftwatch.client.envelopes`), so two replicas put a request's
prediction and interactions on one partition and the worker decodes them as
it decodes the client's.

Order of checks on a POST: the token (constant time, before the body is
read: 401), ``Content-Length`` and then the streamed size against
``max_body_bytes`` (413), framing (400 for a JSON array body that is not
JSON), the buffer (429), then each event. No input yields a 5xx.

Backpressure: events wait in a bounded buffer (events and bytes) until Kafka
acknowledges them; a failed envelope is produced again (at least once). A
request never waits for Kafka: when the buffer cannot take its events it is
answered 429 with ``Retry-After`` and nothing of it is kept (``on_full:
reject``), or the events that do not fit are dropped and counted (``on_full:
drop``). On SIGTERM the sidecar stops accepting (503), gives the buffer
``drain_grace`` to reach Kafka and logs how many events were not confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import signal
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import numpy  # noqa: F401  # loaded, partitions_for hashes request ids in bulk (~3.5x faster than per key)
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from driftwatch._log import get_logger
from driftwatch.client import Envelope, Minimiser, cut, group_placed, partitions_for
from driftwatch.config import Config, SidecarConfig
from driftwatch.events import REASONS, DecodeError, EventDecoder

__all__ = [
    "NDJSON_TYPES",
    "Intake",
    "Sidecar",
    "SidecarMetrics",
    "Taken",
    "parse_body",
    "run_sidecar",
]

log = get_logger(__name__)

NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
"""Content types read as one event per line."""

_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_NON_SPACE = re.compile(rb"\S")
_ENC = msgspec.json.Encoder()
_RETRY_AFTER = "1"
_BACKOFF = (0.1, 2.0)
_PROBE_EVERY = 2.0
_MAX_REQUEST = 8 * 1024 * 1024
_BATCH_BYTES = 512 * 1024
_SLICE = 1024
_BOM = b"\xef\xbb\xbf"


def parse_body(body: bytes, content_type: str = "") -> list[bytes] | None:
    r"""Split a request body into raw events; None when a JSON array body is not valid JSON.

    ``application/x-ndjson`` (and its aliases): one event per non-blank line.
    ``application/json``: a JSON array of events, or one event. Anything else
    (curl's default, none): a JSON array if the first non-blank byte is ``[``,
    else NDJSON. A UTF-8 byte order mark at the start is skipped (RFC 8259 lets
    a parser ignore it; Windows tools write one).

    >>> parse_body(b'{"a":1}\n\n{"b":2}\r\n', "application/x-ndjson")
    [b'{"a":1}', b'{"b":2}']
    >>> parse_body(b' [{"a":1}, 2]', "application/json"), parse_body(b'[{"a":1', ""), parse_body(b"  ")
    ([b'{"a":1}', b'2'], None, [])
    """
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    first = _NON_SPACE.search(body)
    if first is None:
        return []
    head = body[first.start() : first.start() + 1]
    if content_type not in NDJSON_TYPES and head == b"[":
        try:
            return [bytes(raw) for raw in _RAW_LIST.decode(body)]
        except msgspec.DecodeError:
            return None
    if content_type == "application/json":
        return [body.strip()]
    return [line for line in map(bytes.strip, body.split(b"\n")) if line]


class Taken(NamedTuple):
    """What :meth:`Intake.take` made of a request's events."""

    items: list[tuple[str, bytes, bytes]]
    """``(topic, request id, minimised event json)`` of every valid event, predictions first."""
    predictions: int
    interactions: int
    nbytes: int
    errors: list[DecodeError]


class Intake:
    """Raw events in; validated, minimised, re-encoded events out, with the rejects (no sockets).

    >>> config = Config.model_validate({"attributes": {"region": {}}, "models": {"m": {"favorable": ["yes"]}}})
    >>> t = Intake(config, None).take([b'{"type":"interaction","schema_version":1,"event_id":"i","ts":0,'
    ...                                b'"request_id":"r","kind":"complaint","ssn":"123"}', b'{"type":"nope"}'])
    >>> t.items[0][:2], b"ssn" in t.items[0][2], [(e.index, e.reason, e.field) for e in t.errors]
    (('driftwatch-interactions', b'r'), False, [(1, 'unknown_type', 'type')])
    """

    def __init__(self, config: Config, key: bytes | None) -> None:
        self.decoder = EventDecoder(config.attributes, max_event_bytes=config.max_event_bytes)
        self.minimiser = Minimiser(config, key)
        self.topics = (config.kafka.predictions.name, config.kafka.interactions.name)

    def take(self, raws: Sequence[bytes]) -> Taken:
        """Decode every event; re-encode the valid ones as they will travel (unknown fields and attributes gone,
        sensitive values as tokens)."""
        decoded = self.decoder.decode_batch(raws)
        encode = _ENC.encode
        ptopic, itopic = self.topics
        items = [(ptopic, ev.request_id.encode(), encode(ev)) for ev in self.minimiser.decoded(decoded.predictions)]
        items += [(itopic, iv.request_id.encode(), encode(iv)) for iv in decoded.interactions]
        nbytes = sum(len(data) for _, _, data in items)
        return Taken(items, len(decoded.predictions), len(decoded.interactions), nbytes, decoded.errors)


class SidecarMetrics:
    """The producer side on ``/metrics``: its own registry, base units, counters end in ``_total``."""

    def __init__(
        self,
        *,
        buffer_events: Callable[[], float],
        buffer_bytes: Callable[[], float],
        capacity: SidecarConfig,
        broker_up: Callable[[], float],
    ) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "driftwatch_sidecar_requests", "POST /v1/events requests by response status.", ["code"], registry=r
        )
        self.accepted = Counter(
            "driftwatch_sidecar_events_accepted", "Events taken into the buffer (answered 202).", ["type"], registry=r
        )
        self.rejected = Counter(
            "driftwatch_sidecar_events_rejected", "Invalid events answered with a reason.", ["reason"], registry=r
        )
        self.dropped = Counter(
            "driftwatch_sidecar_events_dropped",
            "Valid events not produced: buffer full with on_full: drop, or unconfirmed when the drain grace ended.",
            ["cause"],
            registry=r,
        )
        self.produced = Counter(
            "driftwatch_sidecar_events_produced", "Events acknowledged by Kafka.", ["type"], registry=r
        )
        self.broker_errors = Counter(
            "driftwatch_sidecar_broker_errors",
            "Failed connections, produce and metadata requests, by error type.",
            ["error"],
            registry=r,
        )
        Gauge(
            "driftwatch_sidecar_buffer_events", "Events held until Kafka acknowledges them.", registry=r
        ).set_function(buffer_events)
        Gauge("driftwatch_sidecar_buffer_bytes", "Bytes of events held likewise.", registry=r).set_function(
            buffer_bytes
        )
        Gauge("driftwatch_sidecar_buffer_capacity_events", "sidecar.buffer_events.", registry=r).set(
            capacity.buffer_events
        )
        Gauge("driftwatch_sidecar_buffer_capacity_bytes", "sidecar.buffer_bytes.", registry=r).set(
            capacity.buffer_bytes
        )
        Gauge(
            "driftwatch_sidecar_broker_up", "1 while the last produce or metadata request succeeded.", registry=r
        ).set_function(broker_up)
        self.envelope_events = Histogram(
            "driftwatch_sidecar_envelope_events",
            "Events per produced envelope (Kafka message).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10000),
            registry=r,
        )
        self.envelope_bytes = Histogram(
            "driftwatch_sidecar_envelope_bytes",
            "Bytes per produced envelope.",
            buckets=tuple(float(4**k * 256) for k in range(9)),
            registry=r,
        )
        self.produce_latency = Histogram(
            "driftwatch_sidecar_produce_latency_seconds",
            "From handing an envelope to the producer to Kafka's acknowledgement.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        for code in ("202", "400", "401", "413", "429", "503"):
            self.requests.labels(code)
        for kind in ("prediction", "interaction"):
            self.accepted.labels(kind)
            self.produced.labels(kind)
        for reason in REASONS:
            self.rejected.labels(reason)
        for cause in ("buffer_full", "shutdown"):
            self.dropped.labels(cause)


class _Buffer:
    """Events between 202 and Kafka's acknowledgement: pending, in flight, or waiting to be produced again."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.pending: list[tuple[str, bytes, bytes]] = []
        self.retry: list[Envelope] = []
        self.events = 0
        self.bytes = 0

    def full(self) -> bool:
        return self.events >= self.max_events or self.bytes >= self.max_bytes

    def fits(self, events: int, nbytes: int) -> bool:
        return self.events + events <= self.max_events and self.bytes + nbytes <= self.max_bytes

    def add(self, items: list[tuple[str, bytes, bytes]], nbytes: int) -> None:
        self.pending.extend(items)
        self.events += len(items)
        self.bytes += nbytes

    def add_what_fits(self, items: list[tuple[str, bytes, bytes]]) -> int:
        room_events = self.max_events - self.events
        room_bytes = self.max_bytes - self.bytes
        n = used = 0
        for item in items:
            size = len(item[2])
            if n >= room_events or used + size > room_bytes:
                break
            n += 1
            used += size
        self.add(items[:n], used)
        return n

    def release(self, env: Envelope) -> None:
        self.events -= env.events
        self.bytes -= len(env.value) - env.events + 1  # the envelope's newlines were never held


class Sidecar:
    """The HTTP server and the producer, on one event loop: :meth:`start`, then :meth:`stop` (drains)."""

    def __init__(self, config: Config, key: bytes | None, *, bootstrap: str, token: bytes | None = None) -> None:
        self.config = config
        self.settings = config.sidecar
        self.bootstrap = bootstrap
        self.intake = Intake(config, key)
        self._token = hashlib.sha256(token).digest() if token is not None else None
        self._buffer = _Buffer(self.settings.buffer_events, self.settings.buffer_bytes)
        self.metrics = SidecarMetrics(
            buffer_events=lambda: self._buffer.events,
            buffer_bytes=lambda: self._buffer.bytes,
            capacity=self.settings,
            broker_up=lambda: 1.0 if self._broker_ok else 0.0,
        )
        self._producer: AIOKafkaProducer | None = None
        self._partitions: list[int] = []
        self._broker_ok = False
        self._last_ok = 0.0
        self._failures = 0
        self._accepting = True
        self._draining = False
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.address = ""
        self.port = 0
        self.produced = 0
        """Events Kafka acknowledged."""
        self.dropped_full = 0
        """Events dropped because the buffer was full (``on_full: drop``)."""

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen (TCP or Unix socket) and start producing in the background; Kafka may come later."""
        app = web.Application()
        app.router.add_post("/v1/events", self._post_events)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        s = self.settings
        try:
            if s.unix_socket is not None:
                site: web.BaseSite = web.UnixSite(runner, s.unix_socket, backlog=1024)
                await site.start()
                os.chmod(s.unix_socket, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP)
                self.address = f"unix:{s.unix_socket}"
            else:
                site = web.TCPSite(runner, s.host, s.port, backlog=1024)
                await site.start()
                self.port = int(runner.addresses[0][1])
                self.address = f"http://{s.host}:{self.port}"
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._probe())]
        log.info("sidecar_listening", address=self.address, bootstrap=self.bootstrap, on_full=s.on_full)

    async def stop(self) -> int:
        """Stop accepting, give the buffer ``drain_grace`` to reach Kafka, stop; return the events not confirmed."""
        if self._runner is None:
            return 0
        self._accepting = False
        self._draining = True
        grace = self.settings.drain_grace
        log.info("sidecar_draining", buffered_events=self._buffer.events, grace_seconds=grace)
        self._wake.set()
        self._full.set()
        deadline = time.monotonic() + grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lost = self._buffer.events
        if lost:
            self.metrics.dropped.labels("shutdown").inc(lost)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), max(1.0, deadline - time.monotonic()))
            self._producer = None
        await self._runner.cleanup()
        self._runner = None
        (log.warning if lost else log.info)(
            "sidecar_stopped", dropped=lost, dropped_buffer_full=self.dropped_full, produced=self.produced
        )
        return lost

    # ---------------------------------------------------------------- HTTP

    def _reply(
        self, status: int, body: Mapping[str, object], headers: Mapping[str, str] | None = None, *, close: bool = False
    ) -> web.Response:
        self.metrics.requests.labels(str(status)).inc()
        resp = web.Response(status=status, body=_ENC.encode(body), content_type="application/json", headers=headers)
        if close:
            resp.force_close()  # the body was not read (or could not be): the connection cannot be reused
        return resp

    def _authorised(self, header: str | None) -> bool:
        assert self._token is not None
        scheme, _, credentials = (header or "").strip().partition(" ")
        given = hashlib.sha256(credentials.strip().encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(given, self._token) & (scheme.lower() == "bearer")

    async def _post_events(self, request: web.Request) -> web.StreamResponse:
        if self._token is not None and not self._authorised(request.headers.get("Authorization")):
            return self._reply(
                401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="driftwatch"'}, close=True
            )
        if not self._accepting:
            return self._reply(503, {"error": "shutting_down"}, {"Retry-After": _RETRY_AFTER}, close=True)
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._reply(413, {"error": "body_too_large", "limit_bytes": limit}, close=True)
        try:
            body = await _read_body(request, limit)
        except Exception:  # a broken chunked or compressed body: the client's fault, never a 5xx
            request.content.feed_eof()  # nothing more will be read: aiohttp must not linger over the broken rest
            return self._reply(400, {"error": "unreadable_body", "accepted": 0, "rejected": []}, close=True)
        if body is None:
            return self._reply(413, {"error": "body_too_large", "limit_bytes": limit}, close=True)
        raws = parse_body(body, request.content_type)
        if raws is None:
            return self._reply(400, {"error": "invalid_json", "accepted": 0, "rejected": []})
        buf = self._buffer
        if len(raws) > buf.max_events:
            return self._reply(413, {"error": "too_many_events", "limit_events": buf.max_events})
        reject_when_full = self.settings.on_full == "reject"
        if reject_when_full and buf.full():
            return self._full_reply()
        taken = self.intake.take(raws)
        if reject_when_full and not buf.fits(len(taken.items), taken.nbytes):
            return self._full_reply()
        m = self.metrics
        rejected = [{"index": e.index, "reason": e.reason, "field": e.field} for e in taken.errors]
        for e in taken.errors:
            m.rejected.labels(e.reason).inc()
        out: dict[str, object] = {"accepted": len(taken.items), "rejected": rejected}
        if reject_when_full:
            buf.add(taken.items, taken.nbytes)
            m.accepted.labels("prediction").inc(taken.predictions)
            m.accepted.labels("interaction").inc(taken.interactions)
        else:
            kept = buf.add_what_fits(taken.items)
            preds = min(kept, taken.predictions)
            m.accepted.labels("prediction").inc(preds)
            m.accepted.labels("interaction").inc(kept - preds)
            m.dropped.labels("buffer_full").inc(len(taken.items) - kept)
            self.dropped_full += len(taken.items) - kept
            out["accepted"], out["dropped"] = kept, len(taken.items) - kept
        if buf.pending:
            self._drained.clear()
            self._wake.set()
            if len(buf.pending) >= self._flush_at():
                self._full.set()
        return self._reply(202, out)

    def _full_reply(self) -> web.Response:
        return self._reply(
            429,
            {"error": "buffer_full", "retry_after_seconds": int(_RETRY_AFTER)},
            {"Retry-After": _RETRY_AFTER},
        )

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        if self._draining:
            return web.json_response({"ready": False, "reason": "draining"}, status=503)
        if not self._broker_ok:
            reason = "broker_unreachable" if self._producer is not None else "connecting"
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True})

    # ---------------------------------------------------------------- Kafka

    def _flush_at(self) -> int:
        """Pending events that fill an envelope on every partition of both topics: produce without lingering."""
        return self.settings.envelope_size * max(1, len(self._partitions)) * 2

    def _broker(self, ok: bool, error: BaseException | None = None, *, during: str = "produce") -> None:
        if ok:
            self._last_ok = time.monotonic()
            self._failures = 0
            if not self._broker_ok:
                log.info("sidecar_broker_ok", bootstrap=self.bootstrap, partitions=len(self._partitions))
        else:
            name = type(error).__name__ if error is not None else "Unknown"
            self.metrics.broker_errors.labels(name).inc()
            self._failures += 1
            if self._failures & (self._failures - 1) == 0:  # the 1st, 2nd, 4th, 8th ... failure in a row
                log.warning(
                    "sidecar_broker_unreachable",
                    during=during,
                    error=name,
                    detail=str(error)[:200],
                    failures=self._failures,
                )
        self._broker_ok = ok

    async def _connect(self) -> bool:
        s = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="driftwatch-sidecar",
            acks="all",
            linger_ms=5,
            request_timeout_ms=int(s.produce_timeout * 1000),
            retry_backoff_ms=100,
            max_request_size=_MAX_REQUEST,
            # Several envelopes of a partition share one record batch (aiokafka's 16 KiB default gives every
            # envelope its own): a third of the producer's CPU per event, and well under brokers' 1 MiB limit.
            max_batch_size=_BATCH_BYTES,
        )
        try:
            await asyncio.wait_for(producer.start(), s.produce_timeout)
            found = [sorted(await producer.partitions_for(t) or ()) for t in self.intake.topics]
            parts = found[0]
            if len(parts) != len(found[1]) or not parts:
                raise _NotCoPartitionedError(
                    f"{' and '.join(self.intake.topics)} have {len(parts)} and {len(found[1])} partitions"
                )
        except Exception as e:
            self._broker(False, e, during="connect")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), s.produce_timeout)
            return False
        self._producer, self._partitions = producer, parts
        self._broker(True)
        return True

    async def _pump(self) -> None:
        """Produce what the buffer holds, forever: envelopes per partition, each acknowledged or produced again."""
        backoff = _BACKOFF[0]
        while True:
            try:
                if self._producer is None and not await self._connect():
                    ok = False
                else:
                    await self._await_work()
                    ok = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never let the producer task die: log, back off, go on
                log.error("sidecar_pump_failed", error=type(e).__name__, detail=str(e)[:200])
                ok = False
            if ok:
                backoff = _BACKOFF[0]
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF[1])

    async def _await_work(self) -> None:
        buf = self._buffer
        if buf.retry or (self._draining and buf.pending):
            return
        if not buf.pending:
            self._wake.clear()
            await self._wake.wait()
        if not self._draining and len(buf.pending) < self._flush_at():
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.settings.linger)

    async def _round(self) -> bool:
        """Produce the retries and everything pending; True if Kafka acknowledged every envelope."""
        producer, buf = self._producer, self._buffer
        assert producer is not None
        parts = producer.client.cluster.partitions_for_topic(self.intake.topics[0])
        if parts:
            self._partitions = sorted(parts)
        todo, buf.retry = buf.retry, []
        if buf.pending:
            items, buf.pending = buf.pending, []
            parts = self._partitions
            groups: dict[tuple[str, int], list[bytes]] = {}
            for i in range(0, len(items), _SLICE):  # the murmur2 of many ids, in slices: requests are served between
                chunk = items[i : i + _SLICE]
                group_placed(groups, chunk, partitions_for([rid for _, rid, _ in chunk], parts))
                await asyncio.sleep(0)
            todo += cut(groups, self.settings.envelope_size)
        if not todo:
            return True
        failed: list[Envelope] = []
        error: BaseException | None = None
        sent: list[tuple[Envelope, asyncio.Future[Any]]] = []
        for i, env in enumerate(todo):
            try:
                fut = await producer.send(env.topic, env.value, partition=env.partition)
            except MessageSizeTooLargeError as e:  # over the producer's max_request_size: send it in halves
                failed += _split(env)
                error = e
                continue
            except Exception as e:  # no metadata, accumulator full past the timeout: the rest would wait as long
                failed += todo[i:]
                error = e
                break
            fut.add_done_callback(self._latency(time.perf_counter()))
            sent.append((env, fut))
            if i % 16 == 15:
                await asyncio.sleep(0)
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        m = self.metrics
        ptopic = self.intake.topics[0]
        for (env, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                error = result
                failed.extend(_split(env) if isinstance(result, MessageSizeTooLargeError) else [env])
                continue
            buf.release(env)
            self.produced += env.events
            m.produced.labels("prediction" if env.topic == ptopic else "interaction").inc(env.events)
            m.envelope_events.observe(env.events)
            m.envelope_bytes.observe(len(env.value))
        if buf.events == 0:
            self._drained.set()
        if failed:
            buf.retry = failed + buf.retry
            self._broker(False, error)
            return False
        self._broker(True)
        return True

    def _latency(self, t0: float) -> Callable[[asyncio.Future[Any]], None]:
        def observe(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                self.metrics.produce_latency.observe(time.perf_counter() - t0)

        return observe

    async def _probe(self) -> None:
        """Ask Kafka for metadata whenever nothing was acknowledged for a while, so readiness follows the broker."""
        while True:
            await asyncio.sleep(_PROBE_EVERY)
            producer = self._producer
            if producer is None or time.monotonic() - self._last_ok < _PROBE_EVERY:
                continue
            try:
                ok = bool(
                    await asyncio.wait_for(producer.client.force_metadata_update(), self.settings.produce_timeout)
                )
                error: BaseException | None = None if ok else _MetadataFailedError("no broker answered")
            except Exception as e:
                ok, error = False, e
            self._broker(ok, error, during="metadata")


class _NotCoPartitionedError(Exception):
    """The predictions and interactions topics differ in partition count."""


class _MetadataFailedError(Exception):
    """No broker answered a metadata request."""


def _split(env: Envelope) -> list[Envelope]:
    """Halve an envelope Kafka refused as too large; a single event is produced alone again."""
    lines = env.value.split(b"\n")
    if len(lines) < 2:
        return [env]
    mid = len(lines) // 2
    return [
        Envelope(env.topic, env.partition, b"\n".join(lines[:mid]), mid),
        Envelope(env.topic, env.partition, b"\n".join(lines[mid:]), len(lines) - mid),
    ]


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, read as it streams in; None as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def run_sidecar(config: Config, key: bytes | None, *, bootstrap: str, token: bytes | None) -> int:
    """Run until SIGTERM or SIGINT, then drain; the exit code (1 if the address cannot be bound)."""

    async def main() -> int:
        sidecar = Sidecar(config, key, bootstrap=bootstrap, token=token)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await sidecar.start()
        except OSError as e:
            log.error("sidecar_cannot_listen", error=type(e).__name__, detail=str(e)[:200])
            return 1
        await stop.wait()
        await sidecar.stop()
        return 0

    return asyncio.run(main())
