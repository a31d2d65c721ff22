"""``driftwatch run``: one worker of the consumer group, as a Faust app around the pure core.

Topology (DESIGN.md, "Streaming topology we recommend"):

1. **ingest** agent — the prediction and interaction topics (co-partitioned,
   keyed by request id), read as raw bytes in batches (``take_events``),
   envelopes split, decoded by the core's decoder; every invalid event goes
   to the dead-letter topic with its original bytes and headers
   ``driftwatch-reason``, ``driftwatch-field``, ``driftwatch-source``
   (topic:partition:offset) and ``driftwatch-schema-version``. The
   :class:`~driftwatch.core.ingest.Ingestor` folds the rest into partial
   summaries, sent to the summary topic keyed by model with the batch's
   source offsets and the worker's watermark.
2. **evaluate** agent — the summary topic: merges partials into windows
   (:class:`~driftwatch.core.evaluate.Evaluator`), closes ticks when the lowest
   watermark of the live ingest workers passes them, evaluates the rules and
   writes alert transitions to the alerts topic (the outbox).
3. A timer sends the worker's watermark even when it has no events
   (heartbeat), and ``/metrics`` is served from the evaluator's live state.

State survives restarts and rebalances (:mod:`driftwatch.daemon.recovery`):
an ingest batch first records its exact offset range (intent), so a worker
taking over an input partition rebuilds the join table, re-sends exactly
that batch (the evaluation stage drops what it already applied, per source
partition and model) and skips the rest it had sent; the evaluation stage
checkpoints its models every ``kafka.checkpoint_interval`` and a worker
taking over a summary partition restores the checkpoint and re-applies the
summaries after it (skipping by offset). README, "State and restarts", lists
what is bounded and what is recomputed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import faust
import msgspec
from faust.exceptions import ConsumerNotStarted
from faust.tables import TableManager
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.snapshot import decode_state, encode_state
from driftwatch.daemon._fetch import Transport as FetchTransport
from driftwatch.daemon.recovery import (
    IngestIntent,
    encode_chunk,
    encode_intent,
    last_checkpoint,
    last_intents,
    read_range,
    split_chunks,
)
from driftwatch.daemon.wire import SummaryMsg, decode_summary, encode_summary, from_msg, to_msg
from driftwatch.events import split_messages
from driftwatch.profiles import load_profiles

__all__ = ["Worker"]

_PARTIALS_PER_MESSAGE = 16
_EVAL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _TableManager(TableManager):
    """Faust's table manager, started only once the consumer thread is up.

    Faust's own waits a fixed 1 s and then asks the consumer for its assignment; on a loaded machine the consumer
    thread is not up yet and the worker crashes with ConsumerNotStarted (faust-streaming#446). driftwatch keeps no
    Faust tables; this only removes the race.
    """

    async def on_start(self) -> None:
        while not self.should_stop:
            try:
                self.app.consumer.assignment()
                break
            except ConsumerNotStarted:
                await self.sleep(0.1)
        await super().on_start()


class Worker:
    """One driftwatch worker: its Faust app, the pure core it wraps, and its metrics endpoint."""

    def __init__(self, config: Config, key: bytes | None, *, bootstrap: str, worker_id: str | None = None) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.core = Pipeline(config, key, load_profiles(config))
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
            TableManager=_TableManager,
        )
        self.app.transport = FetchTransport(self.app.conf.broker_consumer, self.app)  # fetch wait 100 ms, not 1.5 s
        self.inputs = self.app.topic(k.predictions.name, k.interactions.name, value_type=bytes, key_type=bytes)
        self.summaries = self.app.topic(k.summaries.name, value_type=bytes, key_type=bytes)
        self.dead_letter = self.app.topic(k.dead_letter.name, value_type=bytes, key_type=bytes)
        self.alerts = self.app.topic(k.alerts.name, value_type=bytes, key_type=bytes)
        self.ingest_state = self.app.topic(k.ingest_state, value_type=bytes, key_type=bytes)
        self.eval_state = self.app.topic(k.eval_state, value_type=bytes, key_type=bytes)
        # Ingest progress per input partition: recovered yet, sent up to, and batches that may still feed the join.
        self._input_recovered: set[str] = set()
        self._skip_to: dict[str, int] = {}
        self._join_batches: dict[str, deque[tuple[float, int, int]]] = {}  # tp -> (max event time, lo, events)
        # Evaluation progress per summary partition: recovered yet, last offset applied, its models, last checkpoint.
        self._eval_offset: dict[int, int] = {}
        self._eval_models: dict[int, set[str]] = {}
        self._eval_checkpointed: dict[int, float] = {}
        # Chunks of a batch not yet complete: mark -> ((source range, worker), first offset, partials so far).
        self._held: dict[str, tuple[tuple[tuple[int, int], str], int, list[Any]]] = {}
        self.recovery: dict[str, float] = {}  # what the last recoveries replayed (for logs and /metrics)
        self.checkpoints_written = 0
        self._checkpoint_key = f"{k.app_id}/{k.summaries.name}".encode()
        self.registry: CollectorRegistry | None = None
        # Read on the Faust loop only (other threads must never touch app.consumer: mode binds it to the loop of
        # the thread that first uses it); /metrics and /readyz read these copies.
        self._assignment: frozenset[tuple[str, int]] = frozenset()
        self._highwater: dict[str, int] = {}
        self.alerting: Any = None  # AlertingService, once run() starts it
        self._position: dict[str, int] = {}  # input partition -> next offset to process
        self._progress_wall: dict[str, float] = {}  # input partition -> wall time it last advanced
        self.evaluation_seconds = [0] * (len(_EVAL_BUCKETS) + 1)  # histogram counts (last: +Inf)
        self.evaluation_seconds_sum = 0.0
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
            if any(tp not in self._input_recovered for tp in by_tp):
                await self._recover_assigned()
            work = []
            for tp, msgs in by_tp.items():
                skip = self._skip_to.get(tp, -1)
                fresh = [m for m in msgs if m.offset > skip]  # already sent before a restart or rebalance
                if fresh:
                    work.append((tp, fresh))
            await self._process_partitions(work)

    async def _process_partition(self, tp: str, messages: Sequence[Any]) -> None:
        await self._process_partitions([(tp, messages)])

    async def _process_partitions(self, work: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Fold one batch per input partition: intents first (all awaited), then summaries (all awaited).

        Write-ahead: a partition's intent is durable before any summary of its batch leaves (see
        :meth:`_recover_inputs`); awaiting the batch's sends together keeps it to two round trips per batch.
        """
        ranges = []
        intents = []
        for tp, messages in work:
            topic, _, part = tp.rpartition(":")
            offsets = [m.offset for m in messages]
            lo, hi = min(offsets), max(offsets)
            batches = self._join_batches.setdefault(tp, deque())
            intent = IngestIntent(
                topic, int(part), lo, hi, batches[0][1] if batches else lo, self.worker_id, self.core.ingestor.watermark
            )
            intents.append(
                await self.ingest_state.send(key=tp.encode(), value=encode_intent(intent), partition=int(part))
            )
            ranges.append((lo, hi))
        for fut in intents:
            await fut
        pending: list[Any] = []
        done = []
        for (tp, messages), (lo, hi) in zip(work, ranges, strict=True):
            events = await self._fold_partition(tp, messages, lo, hi, pending)
            done.append((tp, lo, hi, events))
        for fut in pending:
            await fut  # delivered before the batch is acknowledged (and its offsets committed)
        now = time.time()
        for tp, lo, hi, events in done:
            self._remember_join_batch(self._join_batches[tp], lo, events)
            self._position[tp] = hi + 1
            self._progress_wall[tp] = now

    async def _fold_partition(self, tp: str, messages: Sequence[Any], lo: int, hi: int, pending: list[Any]) -> int:
        """Decode and fold one partition's messages; queue its dead letters and summaries; return events folded."""
        raws, origin = split_messages([m.value or b"" for m in messages])
        with self.lock:  # /metrics is served from another thread
            decoded, partials = self.core.ingestor.process(raws, source=tp)
        for err in decoded.errors:
            m = messages[origin[err.index]]
            self.dead_lettered += 1
            pending.append(
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
            )
        sources = {tp: (lo, hi)}
        by_model: dict[str, list[Any]] = {}
        for p in partials:
            by_model.setdefault(p.model_id, []).append(to_msg(p))
        wm = self.core.ingestor.watermark
        if not by_model:
            pending.append(await self._send_summary(SummaryMsg(self.worker_id, wm, sources), key=b"__none__"))
        for model, parts in by_model.items():
            # Bounded messages: a batch spanning many ticks is sent in chunks, applied together when the last arrives.
            for i in range(0, len(parts), _PARTIALS_PER_MESSAGE):
                last = i + _PARTIALS_PER_MESSAGE >= len(parts)
                chunk = SummaryMsg(self.worker_id, wm, sources, parts[i : i + _PARTIALS_PER_MESSAGE], final=last)
                pending.append(await self._send_summary(chunk, key=model.encode()))
        return len(decoded.predictions) + len(decoded.interactions)

    def _remember_join_batch(self, batches: deque[tuple[float, int, int]], lo: int, events: int) -> None:
        """Track the oldest batch whose events may still matter to the join, for the TTL (within max_entries):
        predictions can be joined that long, and a label marks its request as labelled that long."""
        ing = self.core.ingestor
        batches.append((ing.max_ts, lo, events))
        j = self.config.join
        horizon = ing.watermark - j.ttl
        total = sum(n for _, _, n in batches)
        while len(batches) > 1 and (batches[0][0] < horizon or total - batches[0][2] >= self.config.join.max_entries):
            total -= batches.popleft()[2]

    async def _recover_inputs(self, tps: Sequence[str]) -> None:
        """Take over input partitions: rebuild their join state, then re-send each one's last batch exactly.

        The last intent of a partition names the batch that was being sent when its previous owner stopped and
        where its join state can be rebuilt from. Rebuilding comes first for every partition (predictions before
        interactions); only then are the batches re-sent (the evaluation stage drops what it had already applied),
        and everything up to each batch's end is skipped when Kafka redelivers it.
        """
        started = time.monotonic()
        preds = self.config.kafka.predictions.name
        ordered = sorted(tps, key=lambda tp: (not tp.startswith(preds + ":"), tp))
        intents: dict[str, IngestIntent] = {}
        for tp in ordered:
            topic, _, part = tp.rpartition(":")
            found = (await last_intents(self.bootstrap, self.config.kafka.ingest_state, int(part), [topic])).get(topic)
            if found is not None:
                intents[tp] = found
        rebuilt: dict[str, int] = {}
        for tp in ordered:
            it = intents.get(tp)
            if it is None or it.rebuild_from >= it.lo:
                continue
            records: list[Any] = []
            await read_range(self.bootstrap, it.topic, it.partition, it.rebuild_from, it.lo, records.append)
            n = 0
            with self.lock:
                for i in range(0, len(records), 5000):  # join state only: these were counted before
                    raws, _ = split_messages([r.value or b"" for r in records[i : i + 5000]])
                    n += self.core.ingestor.rebuild(raws)
            rebuilt[tp] = n
            self._join_batches[tp] = deque([(self.core.ingestor.max_ts, it.rebuild_from, n)])
        crash_wm = max((it.watermark for it in intents.values()), default=-math.inf)
        with self.lock:
            self.core.ingestor.rebuilt(crash_wm)
            # Event time resumes where it stood: waiting interactions expire when they would have.
            self.core.ingestor.seed_sources(dict.fromkeys(intents, crash_wm + self.config.windows.lateness))
        for tp in ordered:
            self._input_recovered.add(tp)
            it = intents.get(tp)
            if it is None:
                continue  # a partition never processed
            batch: list[Any] = []
            await read_range(self.bootstrap, it.topic, it.partition, it.lo, it.hi + 1, batch.append)
            if batch:
                await self._process_partition(tp, batch)
            self._skip_to[tp] = it.hi
            self.recovery[f"input {tp}"] = time.monotonic() - started
        if intents:
            print(
                json.dumps(
                    {
                        "event": "recovered_input",
                        "partitions": {
                            tp: {"join_events_rebuilt": rebuilt.get(tp, 0), "resent": [it.lo, it.hi]}
                            for tp, it in intents.items()
                        },
                        "seconds": round(time.monotonic() - started, 3),
                    }
                ),
                flush=True,
            )

    def _update_sources(self, now: float) -> None:
        """Wait for every assigned input partition, except those idle for ``kafka.idle_timeout``."""
        names = {self.config.kafka.predictions.name, self.config.kafka.interactions.name}
        assigned = {f"{tp.topic}:{tp.partition}" for tp in self.app.consumer.assignment() if tp.topic in names}
        for tp in assigned:
            self._last_data.setdefault(tp, now)  # the idle clock starts at assignment
        active = {tp for tp in assigned if now - self._last_data[tp] < self.config.kafka.idle_timeout}
        with self.lock:
            self.core.ingestor.set_sources(active)

    async def _send_summary(self, msg: SummaryMsg, key: bytes) -> Any:
        return await self.summaries.send(key=key, value=encode_summary(msg))

    def _refresh_assignment(self) -> None:
        """Copy the consumer's assignment and high watermarks for other threads (called on the Faust loop)."""
        try:
            tps = list(self.app.consumer.assignment())
        except ConsumerNotStarted:
            return
        self._assignment = frozenset((tp.topic, tp.partition) for tp in tps)
        for tp in tps:
            hw = self.app.consumer.highwater(tp)
            if hw is not None:
                self._highwater[f"{tp.topic}:{tp.partition}"] = int(hw)

    async def _heartbeat(self) -> None:
        self._refresh_assignment()
        async with self._order:
            await self._recover_assigned()
            await self._send_heartbeat()

    async def _recover_assigned(self) -> None:
        """Recover input partitions assigned but silent since (their last batch may need re-sending)."""
        names = {self.config.kafka.predictions.name, self.config.kafka.interactions.name}
        try:
            assigned = {f"{tp.topic}:{tp.partition}" for tp in self.app.consumer.assignment() if tp.topic in names}
        except Exception:  # the consumer is not started yet
            return
        if assigned - self._input_recovered:
            await self._recover_inputs(sorted(assigned - self._input_recovered))
        self._input_recovered &= assigned  # a partition that comes back later is recovered again

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
            touched: set[int] = set()
            for e in events:
                m = e.message
                if m.partition not in self._eval_offset:
                    await self._recover_eval(m.partition, m.offset)
                if m.offset <= self._eval_offset[m.partition]:
                    continue  # applied before a restart (restored from the checkpoint or re-applied)
                self.evaluate_message(m.value or b"", partition=m.partition, offset=m.offset)
                self._eval_offset[m.partition] = m.offset
                touched.add(m.partition)
            transitions = self.advance()
            for t in transitions:
                await self.alerts.send(key=t.fingerprint.encode(), value=self._enc.encode(t.to_record()))
            now = time.monotonic()
            for p in touched:
                if now - self._eval_checkpointed.get(p, 0.0) >= self.config.kafka.checkpoint_interval:
                    await self.checkpoint(p)
            self._drop_revoked()

    async def checkpoint(self, partition: int) -> None:
        """Write the state of the models on one summary partition to its eval-state partition (chunked; awaited)."""
        models = self._eval_models.get(partition, set())
        with self.lock:
            blob = encode_state(self.core.evaluator.snapshot(models))
        applied = {k: v for k, v in self._applied.items() if k.rpartition("|")[2] in models}
        # Resume before the first chunk of a batch still incomplete: complete batches before it are skipped by mark.
        resume = min(
            [self._eval_offset.get(partition, -1)]
            + [first - 1 for mark, (_, first, _) in self._held.items() if mark.rpartition("|")[2] in models]
        )
        chunks = split_chunks(uuid.uuid4().hex, blob, resume, applied)
        futs = [
            await self.eval_state.send(key=self._checkpoint_key, value=encode_chunk(c), partition=partition)
            for c in chunks
        ]
        for f in futs:
            await f
        self._eval_checkpointed[partition] = time.monotonic()
        self.checkpoints_written += 1

    async def _recover_eval(self, partition: int, offset: int) -> None:
        """Take over a summary partition: restore its last checkpoint, then re-apply the summaries after it."""
        started = time.monotonic()
        got = await last_checkpoint(self.bootstrap, self.config.kafka.eval_state, partition, self._checkpoint_key)
        start = 0
        models: set[str] = set()
        if got is not None:
            blob, last = got
            state = decode_state(blob)
            models = {s.model_id for s in state.streams}
            with self.lock:
                self.core.evaluator.restore(state)
            for k, v in last.applied.items():
                self._applied[k] = max(v, self._applied.get(k, -1))
            start = last.offset + 1
        self._eval_models[partition] = models
        self._eval_offset[partition] = start - 1
        replayed = 0

        def apply(rec: Any) -> None:
            nonlocal replayed
            self.evaluate_message(rec.value or b"", partition=partition, offset=rec.offset, live=False)
            self._eval_offset[partition] = rec.offset
            replayed += 1

        await read_range(self.bootstrap, self.config.kafka.summaries.name, partition, start, offset, apply)
        self._eval_checkpointed[partition] = time.monotonic() if got is None else 0.0
        self.recovery[f"summaries {partition}"] = time.monotonic() - started
        if got is not None or replayed:
            print(
                json.dumps(
                    {
                        "event": "recovered_evaluation",
                        "partition": partition,
                        "checkpoint_offset": start - 1,
                        "models": sorted(models),
                        "summaries_replayed": replayed,
                        "seconds": round(time.monotonic() - started, 3),
                    }
                ),
                flush=True,
            )

    def _drop_revoked(self) -> None:
        """Forget the models of summary partitions this worker no longer owns (another worker restores them)."""
        try:
            owned = {
                tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.config.kafka.summaries.name
            }
        except Exception:  # the consumer is not started yet
            return
        for p in [p for p in self._eval_offset if p not in owned]:
            with self.lock:
                self.core.evaluator.drop(self._eval_models.pop(p, set()))
            del self._eval_offset[p]
            self._eval_checkpointed.pop(p, None)

    def evaluate_message(self, data: bytes, partition: int = 0, offset: int = -1, live: bool = True) -> None:
        """Merge one summary message (idempotent per source offsets) and note its worker's watermark."""
        try:
            msg = decode_summary(data)
        except msgspec.MsgspecError:
            self.summaries_rejected += 1
            return
        now = time.monotonic()
        if live and msg.watermark != -math.inf:
            self._watermarks[msg.worker] = (msg.watermark, now)
        if not msg.partials:
            return
        # One batch sends its partials per model (in one or more messages): progress is kept per source and model.
        model = msg.partials[0].model_id
        self._eval_models.setdefault(partition, set()).add(model)
        marks = {f"{tp}|{model}": hi for tp, (_, hi) in msg.sources.items()}
        if marks and all(hi <= self._applied.get(m, -1) for m, hi in marks.items()):
            self.duplicates_skipped += 1  # a redelivered batch: already counted
            return
        parts = msg.partials
        if len(marks) == 1:
            (mark,) = marks
            ident = (msg.sources[mark.rpartition("|")[0]], msg.worker)
            held = self._held.get(mark)
            if held is not None and held[0] != ident:
                held = None  # an unfinished batch of a worker that stopped: its re-sent batch replaces it
            if not msg.final:
                self._held[mark] = (ident, offset, [*(held[2] if held else []), *parts])
                return
            if held is not None:
                parts = [*held[2], *parts]
            self._held.pop(mark, None)
        with self.lock:
            self.core.evaluator.apply([from_msg(p) for p in parts])
        for m, hi in marks.items():
            self._applied[m] = max(hi, self._applied.get(m, -1))

    def advance(self) -> list[AlertTransition]:
        """Close ticks up to the lowest watermark of the ingest workers heard from recently."""
        horizon = time.monotonic() - (3 * self.config.kafka.heartbeat + self.config.kafka.session_timeout)
        live = [wm for wm, seen in self._watermarks.values() if seen >= horizon]
        if not live:
            return []
        started = time.perf_counter()
        with self.lock:
            out = self.core.evaluator.advance(min(live))
        took = time.perf_counter() - started
        self.evaluation_seconds[sum(1 for b in _EVAL_BUCKETS if took > b)] += 1
        self.evaluation_seconds_sum += took
        self.last_evaluation_wall = time.time()
        return out

    # ------------------------------------------------------------------ run

    def serve_metrics(self) -> int:
        """Start ``/metrics`` on the configured address; return the bound port."""
        from driftwatch.daemon.metrics import registry_for

        m = self.config.metrics
        registry = registry_for(self.core, window=m.window, max_series=m.max_series, lock=self.lock)
        registry.register(_WorkerCollector(self))
        self.registry = registry
        server, _ = start_http_server(
            m.port,
            addr=m.host,
            registry=registry,
        )
        return int(server.server_port)

    def run(self) -> None:
        """Serve /metrics, start the alerting side and run until SIGTERM / Ctrl-C (offsets committed; exit code 0)."""
        port = self.serve_metrics()
        print(json.dumps({"event": "metrics", "url": f"http://{self.config.metrics.host}:{port}/metrics"}), flush=True)
        alerting = self.start_alerting()
        try:
            self.run_app()
        finally:
            alerting.stop()

    def start_alerting(self, *, wait: bool = True) -> Any:
        """Start the notifier, action runner, API and audit trail in their own thread (after :meth:`serve_metrics`)."""
        from driftwatch.daemon.alerting import AlertingService

        self.alerting = AlertingService(
            self.config,
            self.bootstrap,
            versions_seen=self.versions_seen,
            alerts=self.open_alerts,
            pipeline_ready=self.recovered,
        )
        self.alerting.start(wait=wait)
        if self.registry is not None:
            self.registry.register(self.alerting)
        return self.alerting

    def versions_seen(self, model: str) -> list[str]:
        """A model's versions in the order this worker first saw them (rollback targets)."""
        with self.lock:
            return list(self.core.ingestor.versions.get(model, []))

    def open_alerts(self) -> list[dict[str, object]]:
        """The latest record of every pending or firing alert (for the API)."""
        with self.lock:
            active = self.core.evaluator.engine.active()
            latest = {t.fingerprint: t for t in self.core.evaluator.transitions if t.fingerprint in active}
            return [t.to_record() for t in latest.values()]

    def recovered(self) -> bool:
        """Whether every assigned partition's state has been recovered (``/readyz``)."""
        k = self.config.kafka
        assignment = self._assignment
        if not assignment:
            return False
        for topic, part in assignment:
            if topic in (k.predictions.name, k.interactions.name):
                if f"{topic}:{part}" not in self._input_recovered:
                    return False
            elif topic == k.summaries.name and part not in self._eval_offset:
                return False
        return True

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
        assigned = sum(1 for topic, _ in w._assignment if topic in names)
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
        closed = w.core.evaluator.closed_before
        if closed is not None:
            yield GaugeMetricFamily(
                "driftwatch_last_tick_age_seconds",
                "Wall time minus the end of the last closed tick: how far evaluation lags behind the clock.",
                value=max(time.time() - closed * w.config.windows.tick, 0.0),
            )
        yield from self._lag(names)
        buckets, acc = [], 0
        for bound, n in zip((*map(str, _EVAL_BUCKETS), "+Inf"), w.evaluation_seconds, strict=True):
            acc += n
            buckets.append((bound, acc))
        yield HistogramMetricFamily(
            "driftwatch_evaluation_duration_seconds",
            "Time the evaluation stage took to close ticks and evaluate the rules, per batch of summaries.",
            buckets=buckets,
            sum_value=w.evaluation_seconds_sum,
        )
        yield CounterMetricFamily(
            "driftwatch_checkpoints_written", "Evaluation checkpoints written.", value=w.checkpoints_written
        )
        recovery = GaugeMetricFamily(
            "driftwatch_recovery_seconds",
            "How long the last recovery of a partition's state took (stage: input or summaries).",
            labels=["stage", "partition"],
        )
        for name, secs in sorted(w.recovery.items()):
            stage, _, part = name.partition(" ")
            recovery.add_metric([stage, part], secs)
        yield recovery

    def _lag(self, names: set[str]) -> Iterator[Metric]:
        w = self.worker
        lag = GaugeMetricFamily(
            "driftwatch_consumer_lag",
            "Messages in an input partition not yet processed (high watermark minus position).",
            labels=["topic", "partition"],
        )
        stalled = GaugeMetricFamily(
            "driftwatch_consumer_stalled_seconds",
            "Wall time an input partition with lag has not advanced (0 when caught up); alert above ~60 s.",
            labels=["topic", "partition"],
        )
        now = time.time()
        for topic, part in sorted(tp for tp in w._assignment if tp[0] in names):
            key = f"{topic}:{part}"
            hw = w._highwater.get(key)
            pos = w._position.get(key)
            if hw is None or pos is None:
                continue
            behind = max(int(hw) - pos, 0)
            labels = [topic, str(part)]
            lag.add_metric(labels, behind)
            stalled.add_metric(labels, now - w._progress_wall.get(key, now) if behind else 0.0)
        yield lag
        yield stalled
