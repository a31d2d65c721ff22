"""``driftwatch run``: one worker of the consumer group, as a Faust app around the pure core.

Topology (DESIGN.md, "Streaming topology we recommend"):

1. **ingest** agent — the prediction and interaction topics (co-partitioned,
   keyed by request id), read as raw bytes in batches (``take_events``),
   envelopes split, decoded by the core's decoder; every invalid event goes
   to the dead-letter topic with its original bytes and headers
   ``driftwatch-reason``, ``driftwatch-field``, ``driftwatch-source``
   (topic:partition:offset) and ``driftwatch-schema-version``. The
   :class:`~driftwatch.ingest.Ingestor` folds the rest into partial
   summaries, sent to the summary topic keyed by model with the batch's
   source offsets and the worker's watermark.
2. **evaluate** agent — the summary topic: merges partials into windows
   (:class:`~driftwatch.evaluate.Evaluator`), closes ticks when the lowest
   watermark of the live ingest workers passes them, evaluates the rules and
   writes alert transitions to the alerts topic (the outbox).
3. A timer sends the worker's watermark even when it has no events
   (heartbeat), and ``/metrics`` is served from the evaluator's live state.

Delivery is at least once. A summary message whose every source range was
already applied is skipped (redelivery after a restart); see the README for
what a restart loses today.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import faust
import msgspec
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config
from driftwatch.events import split_messages
from driftwatch.pipeline import Pipeline
from driftwatch.streaming.wire import SummaryMsg, decode_summary, encode_summary, from_msg, to_msg

__all__ = ["Worker"]

_PARTIALS_PER_MESSAGE = 16


class Worker:
    """One driftwatch worker: its Faust app, the pure core it wraps, and its metrics endpoint."""

    def __init__(self, config: Config, key: bytes | None, *, bootstrap: str, worker_id: str | None = None) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.core = Pipeline(config, key)
        k = config.kafka
        self.app = faust.App(
            k.app_id,
            broker=f"kafka://{bootstrap}",
            value_serializer="raw",
            key_serializer="raw",
            broker_session_timeout=k.session_timeout,
            broker_heartbeat_interval=max(k.session_timeout / 6, 0.5),
            store="memory://",
            web_enabled=False,
            consumer_auto_offset_reset="earliest",
            topic_allow_declare=False,  # topics are created (never altered) by ensure_topics
            topic_disable_leader=True,
            producer_linger=0.005,
            producer_max_request_size=8 * 1024 * 1024,
        )
        self.inputs = self.app.topic(k.predictions.name, k.interactions.name, value_type=bytes, key_type=bytes)
        self.summaries = self.app.topic(k.summaries.name, value_type=bytes, key_type=bytes)
        self.dead_letter = self.app.topic(k.dead_letter.name, value_type=bytes, key_type=bytes)
        self.alerts = self.app.topic(k.alerts.name, value_type=bytes, key_type=bytes)
        self._applied: dict[str, int] = {}  # topic:partition -> highest source offset applied
        self._watermarks: dict[str, tuple[float, float]] = {}  # worker -> (watermark, wall time seen)
        self.duplicates_skipped = 0
        self.summaries_rejected = 0
        self.dead_lettered = 0
        self._last_data: dict[str, float] = {}  # input partition -> wall time it last delivered (or was assigned)
        self.last_evaluation_wall: float | None = None
        self._enc = msgspec.json.Encoder()
        self.lock = threading.Lock()
        self._order = asyncio.Lock()
        self.app.agent(self.inputs, name="ingest")(self._ingest_agent)
        self.app.agent(self.summaries, name="evaluate")(self._evaluate_agent)
        self.app.timer(k.heartbeat)(self._heartbeat)

    # ---------------------------------------------------------------- ingest

    async def _ingest_agent(self, stream: Any) -> None:
        k = self.config.kafka
        async for events in stream.take_events(k.batch_size, within=k.batch_wait):
            await self.ingest_batch([e.message for e in events])

    async def ingest_batch(self, messages: Sequence[Any]) -> None:
        """Decode, dead-letter and fold one batch of Kafka messages, partition by partition."""
        by_tp: dict[str, list[Any]] = {}
        for m in messages:
            by_tp.setdefault(f"{m.topic}:{m.partition}", []).append(m)
        now = time.monotonic()
        for tp in by_tp:
            self._last_data[tp] = now
        self._update_sources(now)
        async with self._order:  # a heartbeat must never overtake the partials of a batch
            for tp, msgs in by_tp.items():
                await self._ingest_partition(tp, msgs)

    async def _ingest_partition(self, tp: str, messages: list[Any]) -> None:
        raws, origin = split_messages([m.value or b"" for m in messages])
        with self.lock:  # /metrics is served from another thread
            decoded, partials = self.core.ingestor.process(raws, source=tp)
        for err in decoded.errors:
            m = messages[origin[err.index]]
            self.dead_lettered += 1
            await self.dead_letter.send(
                key=m.key,
                value=raws[err.index],
                headers=[
                    ("driftwatch-reason", err.reason.encode()),
                    ("driftwatch-field", (err.field or "").encode()),
                    ("driftwatch-message", err.message.encode()[:500]),
                    ("driftwatch-source", f"{m.topic}:{m.partition}:{m.offset}".encode()),
                    ("driftwatch-schema-version", b"1"),
                ],
            )
        offsets = [m.offset for m in messages]
        sources = {tp: (min(offsets), max(offsets))}
        by_model: dict[str, list[Any]] = {}
        for p in partials:
            by_model.setdefault(p.model_id, []).append(to_msg(p))
        wm = self.core.ingestor.watermark
        if not by_model:
            await self._send_summary(SummaryMsg(self.worker_id, wm, sources), key=b"__none__")
        for model, parts in by_model.items():
            # Bounded messages: a batch spanning many ticks is sent in chunks (the last carries the offsets).
            for i in range(0, len(parts), _PARTIALS_PER_MESSAGE):
                last = i + _PARTIALS_PER_MESSAGE >= len(parts)
                chunk = SummaryMsg(self.worker_id, wm, sources if last else {}, parts[i : i + _PARTIALS_PER_MESSAGE])
                await self._send_summary(chunk, key=model.encode())

    def _update_sources(self, now: float) -> None:
        """Wait for every assigned input partition, except those idle for ``kafka.idle_timeout``."""
        names = {self.config.kafka.predictions.name, self.config.kafka.interactions.name}
        assigned = {f"{tp.topic}:{tp.partition}" for tp in self.app.consumer.assignment() if tp.topic in names}
        for tp in assigned:
            self._last_data.setdefault(tp, now)  # the idle clock starts at assignment
        active = {tp for tp in assigned if now - self._last_data[tp] < self.config.kafka.idle_timeout}
        with self.lock:
            self.core.ingestor.set_sources(active)

    async def _send_summary(self, msg: SummaryMsg, key: bytes) -> None:
        await self.summaries.send(key=key, value=encode_summary(msg))

    async def _heartbeat(self) -> None:
        async with self._order:
            await self._send_heartbeat()

    async def _send_heartbeat(self) -> None:
        self._update_sources(time.monotonic())
        wm = self.core.ingestor.watermark
        if wm == -math.inf:
            return
        n = self.config.kafka.summaries.partitions
        for p in range(n):  # every evaluation partition must hear that time moved on
            await self.summaries.send(
                key=b"__heartbeat__", value=encode_summary(SummaryMsg(self.worker_id, wm, {})), partition=p
            )

    # -------------------------------------------------------------- evaluate

    async def _evaluate_agent(self, stream: Any) -> None:
        async for events in stream.take_events(1000, within=0.1):
            for e in events:
                self.evaluate_message(e.message.value or b"")
            transitions = self.advance()
            for t in transitions:
                await self.alerts.send(key=t.fingerprint.encode(), value=self._enc.encode(t.to_record()))

    def evaluate_message(self, data: bytes) -> None:
        """Merge one summary message (idempotent per source offsets) and note its worker's watermark."""
        try:
            msg = decode_summary(data)
        except msgspec.MsgspecError:
            self.summaries_rejected += 1
            return
        now = time.monotonic()
        if msg.watermark != -math.inf:
            self._watermarks[msg.worker] = (msg.watermark, now)
        if not msg.partials:
            return
        # One batch sends one message per model: progress is kept per source partition and model.
        model = msg.partials[0].model_id
        marks = {f"{tp}|{model}": hi for tp, (_, hi) in msg.sources.items()}
        if marks and all(hi <= self._applied.get(m, -1) for m, hi in marks.items()):
            self.duplicates_skipped += 1  # a redelivered batch: already counted
            return
        with self.lock:
            self.core.evaluator.apply([from_msg(p) for p in msg.partials])
        for m, hi in marks.items():
            self._applied[m] = max(hi, self._applied.get(m, -1))

    def advance(self) -> list[AlertTransition]:
        """Close ticks up to the lowest watermark of the ingest workers heard from recently."""
        horizon = time.monotonic() - (3 * self.config.kafka.heartbeat + self.config.kafka.session_timeout)
        live = [wm for wm, seen in self._watermarks.values() if seen >= horizon]
        if not live:
            return []
        self.last_evaluation_wall = time.time()
        with self.lock:
            return self.core.evaluator.advance(min(live))

    # ------------------------------------------------------------------ run

    def serve_metrics(self) -> int:
        """Start ``/metrics`` on the configured address; return the bound port."""
        from driftwatch.exporters.prometheus import registry_for

        m = self.config.metrics
        registry = registry_for(self.core, window=m.window, max_series=m.max_series, lock=self.lock)
        registry.register(_WorkerCollector(self))
        server, _ = start_http_server(
            m.port,
            addr=m.host,
            registry=registry,
        )
        return int(server.server_port)

    def run(self) -> None:
        """Serve /metrics and run until SIGTERM / Ctrl-C: Faust commits offsets and stops the agents; exit code 0."""
        port = self.serve_metrics()
        print(json.dumps({"event": "metrics", "url": f"http://{self.config.metrics.host}:{port}/metrics"}), flush=True)
        self.run_app()

    def run_app(self) -> None:
        """Run the Faust app in this thread until SIGTERM / SIGINT."""
        from faust.worker import Worker as FaustWorker

        FaustWorker(
            self.app, loglevel="warning", quiet=True, redirect_stdouts=False, loop=asyncio.new_event_loop()
        ).execute_from_commandline()


class _WorkerCollector:
    """The worker's own health: partitions owned, dead-lettered events, skipped redeliveries, watermark lag."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        """Read the worker's state at scrape time."""
        w = self.worker
        names = {w.config.kafka.predictions.name, w.config.kafka.interactions.name}
        try:
            assigned = sum(1 for tp in w.app.consumer.assignment() if tp.topic in names)
        except Exception:  # the consumer is not started yet
            assigned = 0
        yield GaugeMetricFamily(
            "driftwatch_input_partitions_assigned",
            "Input partitions (both topics) this worker consumes.",
            value=assigned,
        )
        yield CounterMetricFamily(
            "driftwatch_dead_lettered", "Events this worker sent to the dead-letter topic.", value=w.dead_lettered
        )
        yield CounterMetricFamily(
            "driftwatch_summaries_skipped_duplicate",
            "Summary messages skipped because their source offsets were already applied (redelivery).",
            value=w.duplicates_skipped,
        )
        yield CounterMetricFamily(
            "driftwatch_summaries_rejected", "Summary messages that could not be decoded.", value=w.summaries_rejected
        )
        if w.last_evaluation_wall is not None:
            yield GaugeMetricFamily(
                "driftwatch_last_evaluation_age_seconds",
                "Wall time since the evaluation stage last advanced.",
                value=max(time.time() - w.last_evaluation_wall, 0.0),
            )
