"""``driftwatch run``: one worker of the consumer group, as a Faust app around the pure core.

Topology (docs/architecture.md):

1. **ingest** agent — the prediction and interaction topics (co-partitioned,
   keyed by request id), read as raw bytes in batches bounded in messages
   and bytes (:func:`~driftwatch.daemon.batching.take_batches`),
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

State survives restarts and rebalances: the recovery managers of
:mod:`driftwatch.daemon.recovery` keep each stage's progress. An ingest call
first records each batch's exact offset range and clock (intents), so a
worker taking over an input partition rebuilds the join table, processes the
last call again exactly as it was (the evaluation stage drops what it already
applied, per source partition and model) and skips the rest it had sent; input
the consumer skipped at a rebalance is read again; the evaluation stage checkpoints its
models every ``kafka.checkpoint_interval`` and a worker taking over a summary
partition restores the checkpoint and re-applies the summaries after it
(skipping by offset). README, "State and restarts", lists what is bounded and
what is recomputed.

The worker's life (:meth:`Worker.run`): :meth:`~Worker.startup` (``/metrics``,
the alerting side), :meth:`~Worker.main_loop` (the Faust app, until SIGTERM or
Ctrl-C), :meth:`~Worker.shutdown`. It logs each step as a structured event
(``worker_started``, ``broker_connected``, ``partitions_assigned``,
``recovered``, ``ready``, ``alert_transition``, ``checkpoint_written``,
``stopping``, ``ingest_stopped`` (the stop came while a batch was still being
sent: its partitions' next owner sends it), ``stop_abandoned`` (the app took
longer than ``Worker.stop_grace`` to stop, or a second signal came),
``stopped``; see :mod:`driftwatch._log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import faust
import msgspec
from faust.exceptions import ConsumerNotStarted, NotReady
from faust.tables import TableManager
from faust.worker import Worker as FaustWorker
from prometheus_client import CollectorRegistry

from driftwatch._log import get_logger
from driftwatch.alerts.engine import AlertTransition
from driftwatch.alerts.records import AlertRecord, encode_record
from driftwatch.config import Config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.summary import Partial
from driftwatch.daemon._fetch import Transport as FetchTransport
from driftwatch.daemon._malloc import limit_arenas
from driftwatch.daemon.batching import take_batches, value_bytes
from driftwatch.daemon.exposition import serve_http
from driftwatch.daemon.metrics import (
    EVALUATION_BUCKETS,
    AlertingCollector,
    ReportsCollector,
    WorkerCollector,
    registry_for,
)
from driftwatch.daemon.notifier import api_url
from driftwatch.daemon.recovery import EvalRecovery, IngestIntent, InputRecovery, WorkerContext, encode_intent
from driftwatch.daemon.reports import ReportService
from driftwatch.daemon.topics import bootstrap_hosts
from driftwatch.daemon.wire import SummaryMsg, WireError, decode_summary, encode_summary, to_msgs
from driftwatch.events import DecodeError, split_messages
from driftwatch.profiles import load_profiles
from driftwatch.reports.assemble import spec_of_alert

__all__ = ["DEAD_LETTER_MAX_BYTES", "Worker"]

DEAD_LETTER_MAX_BYTES = 512 * 1024
"""A dead-lettered event longer than this is stored cut to it, with ``driftwatch-truncated: <original length>``
(below the producer's 1 MiB request limit, with room for headers and the batch)."""

_PARTIALS_PER_MESSAGE = 16


class _TableManager(TableManager):
    """Faust's table manager, started only once the consumer thread is up.

    Faust's own waits a fixed 1 s and then asks the consumer for its assignment; on a loaded machine the consumer
    thread is not up yet and the worker crashes with ConsumerNotStarted (faust-streaming#446). driftwatch keeps no
    Faust tables; this only removes the race.
    """

    @classmethod
    def _init_subclass_logger(cls) -> None:
        cls.logger = logging.getLogger(
            TableManager.__module__
        )  # Faust's (held at WARNING by driftwatch._log), not driftwatch's

    async def on_start(self) -> None:
        while not self.should_stop:
            try:
                self.app.consumer.assignment()
                break
            except ConsumerNotStarted:
                await self.sleep(0.1)
        await super().on_start()


class _KafkaClientNoise(logging.Filter):
    """Drops (and counts) the Kafka client's records while a worker stops: with its broker gone, aiokafka logs a
    connection error per retry, hundreds a second, until the stop gives up; the worker says it in one line. Once
    the stop is ``abandoned``, also what Faust, mode and asyncio say about the tasks cancelled with it."""

    _ALWAYS = ("aiokafka",)
    _ABANDONED = ("aiokafka", "faust", "mode", "asyncio")

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self.abandoned = False

    def filter(self, record: logging.LogRecord) -> bool:
        root = record.name.partition(".")[0]
        if root in (self._ABANDONED if self.abandoned else self._ALWAYS):
            self.dropped += 1
            return False
        return True


class _FaustWorker(FaustWorker):
    """Faust's worker, leaving logging as :func:`driftwatch._log.configure` set it (no handlers of its own, no
    spinner); it says when the app has connected and when it starts to stop.

    The first SIGTERM / SIGINT stops the app, waiting at most the driftwatch worker's ``stop_grace`` (Faust's own
    stop waits for a commit without end when the broker is gone); a second signal stops waiting at once.
    """

    events: Any = None  # the driftwatch worker's logger (``log`` is Faust's own)
    owner: Any = None  # the driftwatch Worker: its stop_grace and noise filter, and where a cut-short stop is noted
    _forced: asyncio.Future[None] | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if not self._shutdown_immediately:  # the app has joined its group and is consuming
            self.events.info("broker_connected")

    async def on_stop(self) -> None:
        self.events.info("stopping")
        self.owner.stopping = True
        await self.owner.final_checkpoints()
        await super().on_stop()

    def _on_sigint(self) -> None:
        self._on_stop_signal(signal.SIGINT)

    def _on_sigterm(self) -> None:
        self._on_stop_signal(signal.SIGTERM)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._forced is None:
            self._forced = self.loop.create_future()
            self.owner.quiet_kafka_client()
            self._schedule_shutdown(sig)
        elif not self._forced.done():
            self._forced.set_result(None)

    async def _stop_on_signal(self, sig: signal.Signals) -> None:
        grace = float(self.owner.stop_grace)
        stopping = asyncio.ensure_future(self.stop())
        waits: set[asyncio.Future[None]] = {stopping}
        if self._forced is not None:
            waits.add(self._forced)
        done, _ = await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            await stopping
        else:  # left to Faust's loop shutdown, which cancels what is still running
            reason = "second_signal" if self._forced is not None and self._forced.done() else "grace_elapsed"
            self.owner.stop_abandoned = reason
            noise = self.owner.kafka_noise
            self.events.warning(
                "stop_abandoned",
                reason=reason,
                grace_seconds=grace,
                kafka_client_errors=noise.dropped if noise is not None else 0,
            )
            if noise is not None:
                noise.abandoned = True
            # Cancelled coroutines of Faust and aiokafka, garbage-collected unawaited: the stop was cut short.
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
            self._release_consumer_thread()
        if self._starting_fut is not None and not self._starting_fut.done():
            self._starting_fut.cancel()

    def _release_consumer_thread(self) -> None:
        """Tell Faust's consumer thread to stop now, since the app's stop that would have is abandoned: the thread is
        no daemon, so the interpreter would wait for it at exit. Its Kafka consumer's stop fails at once with the
        broker gone (that failure is expected: not printed); if the thread is still alive 2 s later, its loop is
        stopped."""
        service = getattr(getattr(self.app, "_consumer", None), "_thread", None)
        thread = getattr(service, "_thread", None)
        if service is None or thread is None or not thread.is_alive():
            return
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if args.thread is not thread:
                previous(args)

        threading.excepthook = hook

        def stop_loop() -> None:
            if thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    service.thread_loop.call_soon_threadsafe(service.thread_loop.stop)

        service._stopped_set()
        later = threading.Timer(2.0, stop_loop)
        later.daemon = True
        later.start()


def faust_datadir(app_id: str, parent: str | None = None) -> str:
    """A fresh temp dir for Faust's data, named after this process; first remove those of workers of ``app_id``
    that are gone (a SIGKILLed worker cannot remove its own)."""
    parent = parent or tempfile.gettempdir()
    prefix = f"driftwatch-{app_id}-"
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            # "<prefix><pid>-<mkdtemp's 8 characters>": another app whose id extends this one's never matches.
            pid_text, _, suffix = entry.name[len(prefix) :].partition("-")
            mine = entry.name.startswith(prefix) and pid_text.isdigit() and len(suffix) == 8 and "-" not in suffix
            if not mine or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:  # that worker is gone
                shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:  # alive, another user's
                continue
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def _faust_app(config: Config, bootstrap: str) -> faust.App:
    """The Faust app of a worker: raw bytes in and out, topics created beforehand, a short fetch wait."""
    k = config.kafka
    app = faust.App(
        k.app_id,
        broker=f"kafka://{bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        broker_session_timeout=k.session_timeout,
        broker_heartbeat_interval=max(k.session_timeout / 6, 0.5),
        store="memory://",
        # Faust keeps nothing there with memory stores, but creates it: a temp dir, removed on shutdown, not an
        # "<app_id>-data" folder left in the working directory (and those of killed workers removed at start).
        datadir=faust_datadir(k.app_id),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # topics are created (never altered) by ensure_topics
        topic_disable_leader=True,
        producer_linger=0.005,
        producer_max_request_size=8 * 1024 * 1024,
        # Messages fetched ahead of the agents: not Faust's 4,096 (with envelopes of 100 events that buffer held
        # ~100 MB of a backlog, the largest part of a wide worker's peak memory). A count, whatever the messages'
        # size: ingest batches are bounded in bytes too (take_batches), this is what waits behind them.
        stream_buffer_maxsize=_STREAM_BUFFER,
        TableManager=_TableManager,
    )
    app.transport = FetchTransport(app.conf.broker_consumer, app)  # fetch wait 100 ms, not 1.5 s
    return app


_STREAM_BUFFER = 1000
"""Messages Faust fetches ahead per stream: ~25 MB of envelopes of 100 events, ~250 KB of single events."""

_FOLD_TOGETHER_BYTES = 1 << 20
"""An ingest call folds its input partitions together while their messages add up to this many bytes: a fold of a
few dozen events costs ~4 times more per event than one of a few thousand, and larger batches gain nothing from it
but would all be held decoded at once (envelopes of 100 events: ~40 MB more at a wide worker's peak)."""


def by_bytes(messages: Sequence[Any], budget: int, size: Callable[[Any], int] = value_bytes) -> list[Sequence[Any]]:
    """Consecutive runs of ``messages`` whose values (or ``size``) add up to at most ``budget`` bytes (a larger
    message alone).

    >>> from types import SimpleNamespace as M
    >>> [[m.value for m in run] for run in by_bytes([M(value=b"aa"), M(value=b"b"), M(value=b"cccc"), M(value=None)], 3)]
    [[b'aa', b'b'], [b'cccc'], [None]]
    """
    runs: list[Sequence[Any]] = []
    start = total = 0
    for i, m in enumerate(messages):
        n = size(m)
        if i > start and total + n > budget:
            runs.append(messages[start:i])
            start, total = i, 0
        total += n
    if start < len(messages):
        runs.append(messages[start:] if start else messages)
    return runs


def _by_topic(tps: Iterable[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for tp in sorted(tps):
        out.setdefault(tp.topic, []).append(tp.partition)
    return out


class Worker:
    """One driftwatch worker: its Faust app, the pure core it wraps, and its metrics endpoint."""

    stop_grace: float = 30.0
    """Seconds the Faust app may take to stop on SIGTERM / Ctrl-C (streams drained, offsets committed, producer
    flushed) before the worker stops waiting for it (its broker gone); the alerting side gets as long again."""
    stop_abandoned: str | None = None
    """Why the last stop was cut short (``"grace_elapsed"``, ``"second_signal"``); None after a complete stop."""
    kafka_noise: _KafkaClientNoise | None = None
    stopping = False
    """Set when the stop begins: from then on, a send refused because the producer has stopped ends the ingest
    agent quietly instead of crashing the app. Faust acknowledges the batch the agent leaves, so the group may
    commit past it; the partitions' next owner reads it again, as after any crash (the intents say how far each
    was processed)."""

    def __init__(self, config: Config, key: bytes | None, *, bootstrap: str, worker_id: str | None = None) -> None:
        limit_arenas()  # before Faust's threads start (see driftwatch.daemon._malloc)
        self.config = config
        self.bootstrap = bootstrap
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.log = get_logger(__name__, worker=self.worker_id)
        self.core = Pipeline(config, key, load_profiles(config))
        self.lock = threading.Lock()  # held around every change of the core: /metrics reads it from its own thread
        # Reports of firing alerts (docs/reports.md): assembled at the tick they fire, built off the stream.
        self.reports: ReportService | None = None
        self._report_ids: dict[tuple[str, float], str] = {}  # (fingerprint, event time) -> report id
        if config.reports.enabled:
            self.reports = ReportService(config.reports)
            self.core.evaluator.on_tick = self._assemble_reports
        self._order = asyncio.Lock()  # a heartbeat must never overtake the partials of a batch
        # Held by a round of evaluation (its ticks closed, their transitions handed to the producer) and by the stop's
        # checkpoints: a checkpoint never holds a tick whose transitions are still to be handed over.
        self._evaluating = asyncio.Lock()
        k = config.kafka
        self.app = _faust_app(config, bootstrap)
        self.inputs = self.app.topic(k.predictions.name, k.interactions.name, value_type=bytes, key_type=bytes)
        self.summaries = self.app.topic(k.summaries.name, value_type=bytes, key_type=bytes)
        self.dead_letter = self.app.topic(k.dead_letter.name, value_type=bytes, key_type=bytes)
        self.alerts = self.app.topic(k.alerts.name, value_type=bytes, key_type=bytes)
        self.ingest_state = self.app.topic(k.ingest_state, value_type=bytes, key_type=bytes)
        self.eval_state = self.app.topic(k.eval_state, value_type=bytes, key_type=bytes)
        context = WorkerContext(config, bootstrap, self.core, self.lock, self.log)
        self.input_recovery = InputRecovery(context, resend=self._process_again)
        self.eval_recovery = EvalRecovery(context, topic=self.eval_state, replay=self._replay)
        # Read on the Faust loop only (other threads must never touch app.consumer: mode binds it to the loop of
        # the thread that first uses it); /metrics and /readyz read these copies.
        self.assignment: frozenset[tuple[str, int]] = frozenset()
        self.highwater: dict[str, int] = {}
        self.position: dict[str, int] = {}  # input partition -> next offset to process
        self.committed: dict[str, int] = {}  # input partition -> the group's committed offset (next to process)
        self.log_start: dict[str, int] = {}  # input partition -> its first offset (read while nothing is committed)
        self._log_start_read: asyncio.Future[None] | None = None
        self.progress_wall: dict[str, float] = {}  # input partition -> wall time it last advanced
        self._last_data: dict[str, float] = {}  # input partition -> wall time it last delivered (or was assigned)
        # (worker, summary partition) -> (watermark, wall time seen). Per partition: a watermark read on one partition
        # says nothing about partials of that worker still unread on another (Kafka orders within a partition only).
        self._watermarks: dict[tuple[str, int], tuple[float, float]] = {}
        self._ready = False
        self.joined = False  # the group has assigned this worker its partitions at least once (maybe none)
        # Health, read by /metrics.
        self.dead_lettered = 0
        self.duplicates_skipped = 0
        self.summaries_rejected = 0
        self.evaluation_seconds = [0] * (len(EVALUATION_BUCKETS) + 1)  # histogram counts (last: +Inf)
        self.evaluation_seconds_sum = 0.0
        self.last_evaluation_wall: float | None = None
        self.registry: CollectorRegistry | None = None
        self.alerting: Any = None  # AlertingService, once started
        self.app.agent(self.inputs, name="ingest")(self._ingest_agent)
        self.app.agent(self.summaries, name="evaluate")(self._evaluate_agent)
        self.app.timer(k.heartbeat)(self._heartbeat)
        self.app.on_partitions_assigned.connect(self._log_partitions("partitions_assigned"))
        self.app.on_partitions_assigned.connect(self._joined_group())
        self.app.on_partitions_revoked.connect(self._log_partitions("partitions_revoked"))

    # ------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Start up, run until SIGTERM / Ctrl-C (offsets committed; exit code 0), shut down."""
        try:
            self.startup()
        except BaseException:  # the caller says what failed; nothing is left behind in the temp dir
            shutil.rmtree(str(self.app.conf.datadir), ignore_errors=True)
            raise
        try:
            self.main_loop()
        finally:
            self.shutdown()

    def startup(self, *, wait: bool = True) -> int:
        """Serve ``/metrics`` and start the alerting side (``wait``: until it is up); return the ``/metrics`` port."""
        k = self.config.kafka
        topics = [k.predictions.name, k.interactions.name, k.summaries.name]
        self.log.info("worker_started", topics=topics, bootstrap=bootstrap_hosts(self.bootstrap))
        port = self.serve_metrics()
        self.log.info("metrics_listening", url=f"http://{self.config.metrics.host}:{port}/metrics")
        self.start_alerting(wait=wait)
        return port

    def main_loop(self) -> None:
        """Run the Faust app in this thread until SIGTERM / SIGINT (Faust then raises SystemExit)."""
        faust_worker = _FaustWorker(
            self.app,
            quiet=True,
            redirect_stdouts=False,
            override_logging=False,
            loop=asyncio.new_event_loop(),
        )
        faust_worker.spinner = None
        faust_worker.events = self.log
        faust_worker.owner = self
        faust_worker.execute_from_commandline()

    def quiet_kafka_client(self) -> None:
        """From now until :meth:`shutdown` ends, drop the Kafka client's log records (counted in ``stop_abandoned``)."""
        if self.kafka_noise is None:
            self.kafka_noise = _KafkaClientNoise()
            for handler in logging.getLogger().handlers:
                handler.addFilter(self.kafka_noise)

    def shutdown(self) -> None:
        """Stop the alerting side (after the Faust app has stopped, within ``stop_grace``) and remove Faust's
        temporary data dir. After an abandoned stop the Kafka client stays quiet (its tasks are still dying)."""
        if self.alerting is not None:
            self.alerting.stop(timeout=self.stop_grace)
        if self.reports is not None:
            self.reports.close()
        shutil.rmtree(str(self.app.conf.datadir), ignore_errors=True)
        if self.kafka_noise is not None and not self.kafka_noise.abandoned:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self.kafka_noise)
            self.kafka_noise = None
        self.log.info("stopped")

    def serve_metrics(self) -> int:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on the configured address; return the bound port."""
        m = self.config.metrics
        registry = registry_for(self.core, window=m.window, max_series=m.max_series, lock=self.lock)
        registry.register(WorkerCollector(self))
        if self.reports is not None:
            registry.register(ReportsCollector(self.reports))
        self.registry = registry
        return serve_http(m.host, m.port, registry, self.ready)

    def ready(self) -> bool:
        """Recovered, and the alerting side (when it runs) has loaded its state: ``/readyz``."""
        return self.recovered() and (self.alerting is None or bool(self.alerting.ready()))

    def start_alerting(self, *, wait: bool = True) -> Any:
        """Start the notifier, action runner, API and audit trail in their own thread (after :meth:`serve_metrics`)."""
        from driftwatch.daemon.alerting import AlertingService

        self.alerting = AlertingService(
            self.config,
            self.bootstrap,
            versions_seen=self.versions_seen,
            alerts=self.open_alerts,
            pipeline_ready=self.recovered,
            reports=self.reports,
        )
        self.alerting.start(wait=wait)
        if self.registry is not None:
            self.registry.register(AlertingCollector(self.alerting))
        return self.alerting

    def _joined_group(self) -> Callable[..., None]:
        """A handler of Faust's assignment signal: the group has given this worker its partitions, maybe none (more
        workers than partitions)."""

        def handler(sender: Any, tps: Iterable[Any], **_: Any) -> None:
            self._refresh_assignment()  # before ``joined``: recovered() must not see an old, empty assignment
            self.joined = True

        return handler

    def _log_partitions(self, event: str) -> Callable[..., None]:
        """A handler of Faust's rebalance signals: logs ``event`` per topic with the partitions the signal names."""

        def handler(sender: Any, tps: Iterable[Any], **_: Any) -> None:
            for topic, parts in _by_topic(tps).items():
                self.log.info(event, topic=topic, partitions=parts)

        return handler

    # ---------------------------------------------------------------- ingest

    async def _ingest_agent(self, stream: Any) -> None:
        k = self.config.kafka
        async for events in take_batches(stream, k.batch_size, k.batch_bytes, k.batch_wait):
            try:
                await self.ingest_batch([e.message for e in events])
            except NotReady:
                if not self.stopping:
                    raise
                # The producer stopped under a batch (a takeover's re-sends can still be running when the stop
                # begins): as after a crash, the intents let the next owner send exactly what was missing.
                self.log.info("ingest_stopped", reason="producer_stopped")
                break

    async def ingest_batch(self, messages: Sequence[Any]) -> None:
        """Decode, dead-letter and fold one batch of Kafka messages, its input partitions together; in several calls
        of at most ``kafka.batch_bytes`` of message values each (at least one message), in order."""
        calls = []
        for part in by_bytes(messages, self.config.kafka.batch_bytes):
            by_tp: dict[str, list[Any]] = {}
            for m in part:
                by_tp.setdefault(f"{m.topic}:{m.partition}", []).append(m)
            calls.append(by_tp)
        now = time.monotonic()
        for by_tp in calls:
            for tp in by_tp:
                self._last_data[tp] = now
        self._update_sources(now)
        for by_tp in calls:
            await self._ingest_call(by_tp)

    async def _ingest_call(self, by_tp: dict[str, list[Any]]) -> None:
        """Fold the messages of one call (by input partition, in offset order)."""
        async with self._order:
            if any(tp not in self.input_recovery.recovered for tp in by_tp):
                await self._recover_assigned()
            work = []
            for tp, msgs in by_tp.items():
                fresh = self.input_recovery.fresh(tp, msgs)  # some may have been sent before a restart or rebalance
                if fresh:
                    gap = self.input_recovery.gap(tp, fresh[0].offset)
                    if gap is not None:  # skipped by the consumer: read them first
                        fresh = [*(await self.input_recovery.refetch(tp, *gap)), *fresh]
                    work.append((tp, fresh))
            await self._process_partitions(work)

    async def _process_again(self, work: Sequence[tuple[str, Sequence[Any], IngestIntent]]) -> None:
        """Process the last ingest call of a previous owner again: the same batches, judged as they were then."""
        await self._process_partitions(
            [(tp, messages) for tp, messages, _ in work], judged={tp: it for tp, _, it in work}
        )

    async def _process_partitions(
        self, work: Sequence[tuple[str, Sequence[Any]]], judged: dict[str, IngestIntent] | None = None
    ) -> None:
        """Fold one batch per input partition, several in one fold: intents first (all awaited), then summaries (all
        awaited), one set of messages per partition.

        Write-ahead: a partition's intent is durable before any summary of its batch leaves (see
        :meth:`InputRecovery.assign`); awaiting the batch's sends together keeps it to two round trips per batch.
        Every batch of the call is judged by the clock as it stood before the call, recorded in its intent
        (``judged``: the intents of a call processed again after a restart, whose clocks are used instead).
        """
        ranges = []
        intents = []
        clocks = []
        call = uuid.uuid4().hex
        ing = self.core.ingestor
        with self.lock:
            wm = ing.watermark
            now = time.time()
            for tp, _ in work:
                before = (judged or {}).get(tp)
                clocks.append(
                    (*ing.clock_of(tp), now)
                    if before is None or not before.call  # an intent from before clocks were recorded
                    else (before.clock_own, before.clock_others, before.wall)
                )
        for (tp, messages), (own, others, wall) in zip(work, clocks, strict=True):
            topic, _, part = tp.rpartition(":")
            offsets = [m.offset for m in messages]
            lo, hi = min(offsets), max(offsets)
            rebuild_from = self.input_recovery.rebuild_from(tp, lo)
            intent = IngestIntent(topic, int(part), lo, hi, rebuild_from, self.worker_id, wm, call, own, others, wall)
            intents.append(
                await self.ingest_state.send(key=tp.encode(), value=encode_intent(intent), partition=int(part))
            )
            ranges.append((lo, hi))
        for fut in intents:
            await fut
        pending: list[Any] = []
        done: list[tuple[str, int, int, int]] = []
        # The batch's messages announce the watermark as it was before the batch: a message read first (another
        # model's, a chunk held until its batch's last) must not let the evaluation stage close a tick whose
        # partials are still to come. The new watermark follows once everything is sent.
        announced = self.core.ingestor.watermark
        batches = [
            (tp, messages, lo, hi, clock) for (tp, messages), (lo, hi), clock in zip(work, ranges, clocks, strict=True)
        ]
        # The call's partitions are folded together, up to _FOLD_TOGETHER_BYTES of messages at a time (a few dozen
        # events per partition cost several times more per event alone); each still gets summaries of its own.
        for group in by_bytes(batches, _FOLD_TOGETHER_BYTES, size=lambda b: sum(map(value_bytes, b[1]))):
            counts = await self._fold_partitions(group, pending, announced)
            done.extend((tp, lo, hi, n) for (tp, _, lo, hi, _), n in zip(group, counts, strict=True))
        for fut in pending:
            await fut  # delivered before the batch is acknowledged (and its offsets committed)
        if self.core.ingestor.watermark != announced:
            await self._send_heartbeat()
        now = time.time()
        for tp, lo, hi, events in done:
            self.input_recovery.remember(tp, lo, events)
            self.position[tp] = hi + 1
            self.input_recovery.processed(tp, hi)
            self.progress_wall[tp] = now

    async def _fold_partitions(
        self,
        batches: Sequence[tuple[str, Sequence[Any], int, int, tuple[float, float, float]]],
        pending: list[Any],
        announced: float,
    ) -> list[int]:
        """Decode and fold the batches of some input partitions (``(partition, messages, first offset, last offset,
        clock)``) in one fold, each judged by its clock (the source's and the other sources' newest event times, and
        the wall time); queue their dead letters and each partition's summaries (carrying the watermark
        ``announced``); return the events folded per batch.

        Each partition's summaries go in messages of their own, marked with its offsets alone, as if it had been
        folded alone: the evaluation stage applies or drops each partition's batch on its own (a batch sent again by
        the partition's next owner, or late by a worker that stalled past its session, is dropped whole).
        """
        split = [split_messages([m.value or b"" for m in messages]) for _, messages, _, _, _ in batches]
        with self.lock:  # /metrics is served from another thread
            decoded, partials = self.core.ingestor.process_sources(
                [
                    (raws, tp, (own, others), self.config.windows.event_time_range(wall, live=True))
                    for (tp, _, _, _, (own, others, wall)), (raws, _) in zip(batches, split, strict=True)
                ]
            )
        for (_, messages, _, _, _), (raws, origin), dec in zip(batches, split, decoded, strict=True):
            for err in dec.errors:
                pending.append(await self._dead_letter(messages[origin[err.index]], raws[err.index], err))
        for (tp, _, lo, hi, _), own in zip(batches, partials, strict=True):
            await self._send_partials({tp: (lo, hi)}, own, pending, announced)
        return [len(d.predictions) + len(d.interactions) for d in decoded]

    async def _send_partials(
        self, sources: dict[str, tuple[int, int]], partials: Sequence[Partial], pending: list[Any], wm: float
    ) -> None:
        """Queue the summary messages of one partition's batch (``sources``: its offsets): per model, in chunks."""
        by_model: dict[str, list[Partial]] = {}
        for p in partials:
            by_model.setdefault(p.model_id, []).append(p)
        if not by_model:
            pending.append(await self._send_summary(SummaryMsg(self.worker_id, wm, sources), key=b"__none__"))
        for model, parts in by_model.items():
            # Bounded messages: a batch spanning many ticks is sent in chunks, applied together when the last arrives.
            for i in range(0, len(parts), _PARTIALS_PER_MESSAGE):
                last = i + _PARTIALS_PER_MESSAGE >= len(parts)
                keys, msgs = to_msgs(parts[i : i + _PARTIALS_PER_MESSAGE])
                chunk = SummaryMsg(self.worker_id, wm, sources, msgs, final=last, keys=keys)
                pending.append(await self._send_summary(chunk, key=model.encode()))

    async def _dead_letter(self, m: Any, value: bytes, err: DecodeError) -> Any:
        """Send one event set aside to the dead-letter topic; return the send's future."""
        self.dead_lettered += 1
        # Headers say why and where, never what: a decoder message can quote the offending value. No key: it is
        # normally the request id, an identifier (the value still holds it; the source position finds the message).
        headers = [
            ("driftwatch-reason", err.reason.encode()),
            ("driftwatch-field", (err.field or "").encode()[:256]),
            ("driftwatch-source", f"{m.topic}:{m.partition}:{m.offset}".encode()),
            ("driftwatch-schema-version", b"1"),
        ]
        if len(value) > DEAD_LETTER_MAX_BYTES:  # the producer would refuse it, and the agent must go on
            headers.append(("driftwatch-truncated", str(len(value)).encode()))
            value = value[:DEAD_LETTER_MAX_BYTES]
        return await self.dead_letter.send(key=None, value=value, headers=headers)

    def _assigned_inputs(self) -> set[str]:
        """The input partitions the consumer owns (raises ConsumerNotStarted before it has started)."""
        names = {self.config.kafka.predictions.name, self.config.kafka.interactions.name}
        return {f"{tp.topic}:{tp.partition}" for tp in self.app.consumer.assignment() if tp.topic in names}

    def _update_sources(self, now: float) -> None:
        """Wait for every assigned input partition, except those idle for ``kafka.idle_timeout``."""
        assigned = self._assigned_inputs()
        for tp in assigned:
            self._last_data.setdefault(tp, now)  # the idle clock starts at assignment
        active = {tp for tp in assigned if now - self._last_data[tp] < self.config.kafka.idle_timeout}
        with self.lock:
            self.core.ingestor.set_sources(active)

    async def _send_summary(self, msg: SummaryMsg, key: bytes) -> Any:
        return await self.summaries.send(key=key, value=encode_summary(msg))

    def _refresh_assignment(self) -> None:
        """Copy the consumer's assignment, high watermarks and committed offsets for other threads (called on the
        Faust loop), so consumer lag covers input partitions not processed yet; read the log start of those with
        nothing committed (where the group starts reading them)."""
        try:
            tps = list(self.app.consumer.assignment())
        except ConsumerNotStarted:
            return
        before = self.assignment
        self.assignment = frozenset((tp.topic, tp.partition) for tp in tps)
        # Faust's own copy of the group's committed offsets: read when partitions are assigned, kept on each commit.
        committed = getattr(self.app.consumer, "_committed_offset", {})
        names = {self.config.kafka.predictions.name, self.config.kafka.interactions.name}
        now = time.time()
        unknown = []
        for tp in tps:
            key = f"{tp.topic}:{tp.partition}"
            hw = self.app.consumer.highwater(tp)
            if hw is not None:
                self.highwater[key] = int(hw)
            if tp.topic not in names:
                continue
            offset = committed.get(tp)
            if offset is not None and offset >= 0:
                self.committed[key] = int(offset)
            if (tp.topic, tp.partition) not in before:
                self.progress_wall[key] = now  # a partition that never advances here is stalled since its assignment
            if key not in self.position and key not in self.committed:
                unknown.append(tp)
        if unknown and (self._log_start_read is None or self._log_start_read.done()):

            async def read_log_start() -> None:
                try:
                    starts = await self.app.consumer.earliest_offsets(*unknown)
                except Exception as e:  # the next heartbeat tries again
                    self.log.warning("log_start_unreadable", error=type(e).__name__)
                    return
                self.log_start.update({f"{tp.topic}:{tp.partition}": int(o) for tp, o in starts.items()})

            self._log_start_read = asyncio.ensure_future(read_log_start())

    async def _heartbeat(self) -> None:
        self._refresh_assignment()
        async with self._order:
            await self._recover_assigned()
            await self._send_heartbeat()
        ready = self.recovered()
        if ready and not self._ready:
            self.log.info("ready", partitions=len(self.assignment))
        self._ready = ready

    async def _recover_assigned(self) -> None:
        """Recover partitions assigned but silent since: inputs (their last batch may need re-sending) and summaries
        (so an idle worker turns ready)."""
        try:
            assigned = self._assigned_inputs()
        except Exception:  # the consumer is not started yet
            return
        pending = self.input_recovery.pending(assigned)
        if pending:
            await self.input_recovery.assign(pending)
        self.input_recovery.keep_only(assigned)
        summaries = self.config.kafka.summaries.name
        for topic, partition in sorted(self.assignment):
            if topic == summaries:
                await self.eval_recovery.take_over_idle(partition)

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
                if not await self.eval_recovery.admit(m.partition, m.offset):
                    continue  # applied before a restart (restored from the checkpoint or re-applied)
                self.evaluate_message(m.value or b"", partition=m.partition, offset=m.offset)
                self.eval_recovery.offset[m.partition] = m.offset
                touched.add(m.partition)
            await self.advance()
            for p in self.eval_recovery.due(touched):
                await self.eval_recovery.checkpoint(p)
            self._drop_revoked()

    def _drop_revoked(self) -> None:
        """Forget the models of summary partitions this worker no longer owns (another worker restores them)."""
        try:
            owned = {
                tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.config.kafka.summaries.name
            }
        except Exception:  # the consumer is not started yet
            return
        self.eval_recovery.keep_only(owned)

    def _replay(self, data: bytes, partition: int, offset: int) -> None:
        self.evaluate_message(data, partition=partition, offset=offset, live=False)

    def evaluate_message(self, data: bytes, partition: int = 0, offset: int = -1, live: bool = True) -> None:
        """Merge one summary message (idempotent per source offsets) and note its worker's watermark."""
        try:
            msg = decode_summary(data)
        except msgspec.MsgspecError:
            self.summaries_rejected += 1
            return
        if live and msg.watermark != -math.inf:
            self._watermarks[(msg.worker, partition)] = (msg.watermark, time.monotonic())
        try:
            if msg.partials and not self.eval_recovery.merge(msg, partition, offset):
                self.duplicates_skipped += 1  # a redelivered batch: already counted
        except WireError:  # a partial naming slice keys its message does not carry
            self.summaries_rejected += 1

    def _assemble_reports(self, _end: float, transitions: list[AlertTransition]) -> None:
        """At the tick they fire (evaluator hook, under the core's lock): the spec of each reportable firing, queued
        for the report process (cheap here: one stream's metric rows and its sample)."""
        assert self.reports is not None
        for t in transitions:
            spec = spec_of_alert(self.core.evaluator, t)
            if spec is not None and self.reports.submit(spec):
                self._report_ids[(t.fingerprint, t.event_time)] = spec.report_id

    def _record(self, t: AlertTransition) -> AlertRecord:
        """The alert record of ``t``; a firing whose report is being built links it (``annotations.report_url``)."""
        rec = t.to_record()
        rid = self._report_ids.pop((t.fingerprint, t.event_time), None)
        base = api_url(self.config)
        if rid is None or base is None:
            return rec
        return msgspec.structs.replace(rec, annotations={**rec.annotations, "report_url": f"{base}/api/reports/{rid}"})

    async def advance(self) -> None:
        """Close ticks up to the lowest watermark of the ingest workers heard from recently, on every summary
        partition this worker owns, and send their alert transitions to the alerts topic.

        A tick closes only once each owned partition has carried, from each live ingest worker, a watermark past it:
        that worker's partials for the tick were written to the partition before it, so they have all been merged.
        A watermark read on another partition proves nothing (Kafka orders messages within a partition only), and an
        owned partition not heard from yet holds evaluation back (every worker's heartbeat reaches every partition).

        Ticks are evaluated one at a time, letting the event loop run in between: a worker catching up on a backlog
        closes dozens at once, which took it 2 s in one go with 1,677 slices (the ingest agent, the timers and
        /metrics waited). The ticks evaluated and what they give are those of one go. Once a stop has begun, the
        round ends after the tick at hand and the stop's checkpoint waits for it: the checkpoint holds every tick
        closed, their transitions are all handed to the producer, and the next owner of the partition closes the rest.
        """
        watermark = self._evaluation_watermark()
        if watermark is None:
            return
        async with self._evaluating:
            took = await self._close_ticks(watermark)
        self.evaluation_seconds[sum(1 for b in EVALUATION_BUCKETS if took > b)] += 1
        self.evaluation_seconds_sum += took
        self.last_evaluation_wall = time.time()

    async def _close_ticks(self, watermark: float) -> float:
        """Close the ticks up to ``watermark`` one at a time and send their transitions; return the seconds spent
        evaluating."""
        took = 0.0
        while True:
            started = time.perf_counter()
            with self.lock:
                transitions = self.core.evaluator.advance(watermark, budget=1)
                more = self.core.evaluator.behind(watermark)
            took += time.perf_counter() - started
            for t in transitions:
                await self.alerts.send(key=t.fingerprint.encode(), value=encode_record(self._record(t)))
                self.log.info(
                    "alert_transition",
                    rule=t.rule,
                    state=t.state,
                    model=t.labels.get("model"),
                    version=t.labels.get("version"),
                    fingerprint=t.fingerprint,
                )
            if not more or self.stopping:
                return took
            await asyncio.sleep(0)

    def _evaluation_watermark(self) -> float | None:
        """The lowest watermark of the live ingest workers over the owned summary partitions; None while a partition
        owned has not heard from any (or none is owned)."""
        horizon = time.monotonic() - (3 * self.config.kafka.heartbeat + self.config.kafka.session_timeout)
        owned = {p for t, p in self.assignment if t == self.config.kafka.summaries.name}
        lowest: dict[int, float] = {}
        for key, (wm, seen) in list(self._watermarks.items()):
            if seen < horizon:
                del self._watermarks[key]  # a worker gone (its partitions are another's now)
            elif key[1] in owned:
                lowest[key[1]] = min(wm, lowest.get(key[1], math.inf))
        if not owned or lowest.keys() != owned:
            return None
        return min(lowest.values())

    async def final_checkpoints(self) -> None:
        """On a graceful stop: checkpoint every summary partition this worker evaluates, so whoever takes it over
        re-applies nothing. A third of ``stop_grace`` at most: a broker gone must not hold the rest of the stop."""

        async def write_all() -> None:
            async with self._evaluating:  # after the round of evaluation under way, which ends at its current tick
                for partition in sorted(self.eval_recovery.offset):
                    await self.eval_recovery.checkpoint(partition)

        # Not cancelled when late: Faust's send callbacks fail loudly on a cancelled send. Left to the stop.
        task = asyncio.ensure_future(write_all())
        done, _ = await asyncio.wait({task}, timeout=self.stop_grace / 3)
        failed = task.exception() if done else TimeoutError()
        if failed is not None:  # the stop goes on; the last periodic checkpoints still hold
            self.log.warning("checkpoint_failed", stage="stop", error=type(failed).__name__)

    # ------------------------------------------------ read from other threads

    @property
    def recovery(self) -> dict[str, float]:
        """How long the last recovery of each partition took: ``"input <topic:partition>"``, ``"summaries <p>"``."""
        return {**self.input_recovery.seconds, **self.eval_recovery.seconds}

    @property
    def checkpoints_written(self) -> int:
        """Evaluation checkpoints this worker has written."""
        return self.eval_recovery.checkpoints_written

    @property
    def input_refetched(self) -> int:
        """Input records read again because the consumer skipped them (a rebalance during a fetch)."""
        return self.input_recovery.refetched

    @property
    def input_skipped(self) -> int:
        """Input offsets skipped because the group's offsets were reset past them (see InputRecovery.gap)."""
        return self.input_recovery.skipped

    def versions_seen(self, model: str) -> list[str]:
        """A model's versions in the order this worker first saw them (rollback targets)."""
        with self.lock:
            return list(self.core.ingestor.versions.get(model, []))

    def open_alerts(self) -> list[AlertRecord]:
        """The latest record of every pending or firing alert (for the API)."""
        with self.lock:
            return self.core.evaluator.open_records()

    def recovered(self) -> bool:
        """Whether every assigned partition's state has been recovered (``/readyz``): also true for a worker the
        group gave no partition (more workers than partitions), which has nothing to recover."""
        k = self.config.kafka
        assignment = self.assignment
        if not assignment:
            return self.joined
        for topic, part in assignment:
            if topic in (k.predictions.name, k.interactions.name):
                if f"{topic}:{part}" not in self.input_recovery.recovered:
                    return False
            elif topic == k.summaries.name and part not in self.eval_recovery.offset:
                return False
        return True
