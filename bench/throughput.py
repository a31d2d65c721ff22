"""Benchmark: events/s through Kafka for a raw consumer, a bare Faust agent and a driftwatch worker.

One run produces the same simulated events (``complaint-spike``) into two
topic pairs (predictions + interactions, 4 co-partitioned partitions,
murmur2 of ``request_id``): one event per message, and newline-delimited
envelopes of 100 events. Then, for each layout and in a fresh process each:

(a) raw ceiling      aiokafka reads every message of both topics from the
                     start; envelopes are split (``split_messages``) and every
                     event is msgspec-decoded (``EventDecoder.decode_batch``);
(b) framework ceiling a bare Faust app (the worker's Faust settings) whose one
                     agent over both topics counts messages and does nothing,
                     in batches of ``kafka.batch_size`` messages (2,000) within
                     ``kafka.batch_wait`` (0.2 s) as driftwatch's ingest agent
                     (Faust's ``take_events``), and (b') with plain iteration;
(c) driftwatch       a :class:`~driftwatch.daemon.worker.Worker` until its
                     evaluation stage has applied every summary message its
                     ingest stage sent, and every event was counted; it
                     also reports its event loop's longest stall (how late
                     a 0.1 s timer woke: folds and evaluations hold the
                     loop while they run).

Clocks start at the first message received (the first non-empty ``getmany``
for (a), a Faust sensor's ``on_message_in`` for (b) and (c)), so group
joins and connection set-up are excluded; each rate is events/s (all N
events, whatever the layout). Each process's peak RSS is its own
``ru_maxrss`` (``os.wait4``). Last, a worker runs on a config whose slice
space exceeds 1,000 slices (250 regions x 50 languages rewritten into the
simulator's predictions) to show its peak RSS. Figures are printed, never
asserted: the machine is shared and noisy, compare the ratios.

    python bench/throughput.py                      # 1,000,000 events, own Tansu broker
    python bench/throughput.py --quick              # 50,000 events (wide run: 100,000): what make bench runs
    python bench/throughput.py --events 200000 --repeat 3       # medians of 3 interleaved rounds
    python bench/throughput.py --events 200000 --profile 30     # + pyinstrument profiles of (b) and (c)
    python bench/throughput.py --bootstrap 127.0.0.1:9092
    python bench/throughput.py --fetch-max-wait-ms 100          # diagnostic: Faust's 1.5 s fetch wait lowered

Without ``--bootstrap`` a Tansu broker is started on a free loopback port
and stopped at exit (also on Ctrl-C or an error). ``DRIFTWATCH_PSEUDONYM_KEY``
is set to a bench-only constant if unset. The 2-core machines this runs on
are shared: single runs vary by +-20 %, so use ``--repeat`` before reading a
PASS or MISS.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# Bench-only pseudonymisation key (the example config pseudonymises age_band); never a real secret.
os.environ.setdefault("DRIFTWATCH_PSEUDONYM_KEY", "driftwatch-bench-only-pseudonym-key")

import argparse  # noqa: E402  (thread pools must be pinned before numpy loads)
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402

from driftwatch.config import Config, KafkaConfig, TopicConfig, load_config, load_key  # noqa: E402
from driftwatch.core.slicing import coders_from_config  # noqa: E402
from driftwatch.demo.broker import tansu_broker  # noqa: E402
from driftwatch.events import EventDecoder, split_messages  # noqa: E402
from driftwatch.simulate import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "driftwatch.example.yaml"
PARTITIONS = 4
ENVELOPE = 100
SCENARIO = "complaint-spike"
RATE = 100.0
SEED = 11
SESSION_TIMEOUT = 2.0  # the dev broker's first group join waits about half of it
POLL = 0.1  # seconds between a driftwatch worker's checks for the finish line
# driftwatch's ingest batching: the kafka.batch_size / batch_wait defaults
BATCH_SIZE = KafkaConfig.model_fields["batch_size"].default
BATCH_WAIT = KafkaConfig.model_fields["batch_wait"].default

PRODUCER_BATCH_BYTES = 64 * 1024
WIDE_REGIONS, WIDE_LANGUAGES, WIDE_MAX_VALUES = 250, 50, 100
QUICK_EVENTS, QUICK_WIDE_EVENTS = 50_000, 100_000  # --quick (make bench)
RESULT_TAG = "@@bench-result "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MODES = ("raw", "bare-take", "bare-iter", "driftwatch")
MODE_TITLES = {
    "raw": "(a) raw aiokafka + decode",
    "bare-take": "(b) bare Faust, take_events",
    "bare-iter": "(b') bare Faust, plain iteration",
    "driftwatch": "(c) driftwatch worker",
}
# The Faust settings of driftwatch.daemon.worker.Worker, shared by the bare app (apples to apples).
FAUST_SETTINGS: dict[str, Any] = {
    "value_serializer": "raw",
    "key_serializer": "raw",
    "broker_session_timeout": SESSION_TIMEOUT,
    "broker_heartbeat_interval": max(SESSION_TIMEOUT / 6, 0.5),
    "store": "memory://",
    "web_enabled": False,
    "consumer_auto_offset_reset": "earliest",
    "topic_allow_declare": False,
    "topic_disable_leader": True,
    "producer_linger": 0.005,
    "producer_max_request_size": 8 * 1024 * 1024,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Batching:
    """How the ingest agent (and the bare agent) batch messages: at most ``size`` messages, or what came ``within``
    ``wait`` seconds (driftwatch's batches also end at ``kafka.batch_bytes``: envelopes only ever reach it)."""

    size: int = BATCH_SIZE
    wait: float = BATCH_WAIT


@dataclasses.dataclass(frozen=True, slots=True)
class Dataset:
    """One produced topic pair: its layout, topic names and how many events and messages it holds."""

    name: str
    envelope: int
    predictions: str
    interactions: str
    events: int
    messages: int
    wide: bool = False


# ------------------------------------------------------------------ production


class _PartitionWriter:
    """Packs values into producer record batches for one topic partition; sends each when full."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partition: int, futures: list[Any]) -> None:
        self.producer = producer
        self.topic = topic
        self.partition = partition
        self.futures = futures
        self.batch: Any = None
        self.messages = 0

    async def add(self, value: bytes) -> None:
        """Append one message value, sending the current batch first if it is full."""
        if self.batch is None:
            self.batch = self.producer.create_batch()
        if self.batch.append(key=None, value=value, timestamp=None) is None:
            await self.flush()
            self.batch = self.producer.create_batch()
            self.batch.append(key=None, value=value, timestamp=None)
        self.messages += 1

    async def flush(self) -> None:
        """Send the pending batch, if any."""
        if self.batch is not None and self.batch.record_count():
            self.futures.append(await self.producer.send_batch(self.batch, self.topic, partition=self.partition))
        self.batch = None


def _encoded_events(config: Config, key: bytes, events: int, *, wide: bool) -> Iterator[tuple[bool, bytes, bytes]]:
    """(is prediction, request id, event JSON) of the simulated stream, pseudonymised as the Client does."""
    stream, _ = generate(SCENARIO, events=events, seed=SEED, rate=RATE)
    coders = coders_from_config(config, key)
    sensitive = {a for a, ac in config.attributes.items() if ac.sensitive}
    rng = random.Random(SEED)
    enc = msgspec.json.Encoder()
    for event in stream:
        is_prediction = event["type"] == "prediction"
        if is_prediction:
            attrs: dict[str, str] = dict(event["attributes"])  # type: ignore[call-overload]
            if wide:  # rewrite the simulator's attributes: many more distinct values, so many more slices
                attrs["region"] = f"r{rng.randrange(WIDE_REGIONS):03d}"
                attrs["language"] = f"l{rng.randrange(WIDE_LANGUAGES):02d}"
            event["attributes"] = {
                a: (coders[a].code(v) if a in sensitive else v) for a, v in attrs.items() if a in config.attributes
            }
        yield is_prediction, str(event["request_id"]).encode(), enc.encode(event)


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def produce(
    bootstrap: str, config: Config, key: bytes, run: str, events: int, layouts: dict[str, int], *, wide: bool = False
) -> list[Dataset]:
    """Produce ``events`` simulated events once into one fresh topic pair per layout (name -> envelope size)."""
    pairs = {name: (f"dwbench-{run}-{name}-predictions", f"dwbench-{run}-{name}-interactions") for name in layouts}
    await _create_topics(bootstrap, [t for pair in pairs.values() for t in pair])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_batch_size=PRODUCER_BATCH_BYTES, max_request_size=8 * 1024 * 1024, linger_ms=5
    )
    await producer.start()
    futures: list[Any] = []
    writers = {
        (name, is_pred, p): _PartitionWriter(producer, pairs[name][0 if is_pred else 1], p, futures)
        for name in layouts
        for is_pred in (True, False)
        for p in range(PARTITIONS)
    }
    envelopes: dict[tuple[str, bool, int], list[bytes]] = {k: [] for k in writers}
    step = max(events // 10, 1)
    t0 = time.perf_counter()
    n = 0
    try:
        for is_pred, rid, data in _encoded_events(config, key, events, wide=wide):
            p = (murmur2(rid) & 0x7FFFFFFF) % PARTITIONS  # Kafka's default partitioner, as the Client
            for name, size in layouts.items():
                k = (name, is_pred, p)
                if size == 1:
                    await writers[k].add(data)
                    continue
                buf = envelopes[k]
                buf.append(data)
                if len(buf) == size:
                    await writers[k].add(b"\n".join(buf))
                    buf.clear()
            n += 1
            if n % step == 0:
                el = time.perf_counter() - t0
                print(f"  produced {n:>10,} / {events:,} events  ({n / el:,.0f} events/s)", flush=True)
                await asyncio.gather(*futures)
                futures.clear()
        for k, buf in envelopes.items():
            if buf:
                await writers[k].add(b"\n".join(buf))
        for w in writers.values():
            await w.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    out = []
    for name, size in layouts.items():
        msgs = sum(w.messages for (ln, _, _), w in writers.items() if ln == name)
        out.append(Dataset(name, size, pairs[name][0], pairs[name][1], n, msgs, wide))
    print(f"  produced {n:,} events into {len(layouts)} topic pairs in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


# ---------------------------------------------------------------- measurement


def _thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


class _Clock:
    """Wall time and per-thread CPU from the first message received to the moment the work is complete."""

    def __init__(self, on_start: Callable[[], None] | None = None) -> None:
        self.t0: float | None = None
        self.t1: float | None = None
        self.cpu0: dict[int, float] = {}
        self.cpu1: dict[int, float] = {}
        self.on_start = on_start

    def start(self) -> None:
        """Start the clock (only the first call counts)."""
        if self.t0 is None:
            self.cpu0 = _thread_cpu()
            self.t0 = time.perf_counter()
            if self.on_start is not None:
                self.on_start()

    def elapsed(self) -> float:
        """Seconds since the clock started (0 before)."""
        return 0.0 if self.t0 is None else time.perf_counter() - self.t0

    def stop(self) -> None:
        """Stop the clock (only the first call counts)."""
        if self.t1 is None:
            self.t1 = time.perf_counter()
            self.cpu1 = _thread_cpu()

    def report(self, events: int, messages: int) -> dict[str, Any]:
        """Rates and CPU seconds per thread over the measured interval."""
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the clock was not started and stopped")
        seconds = max(self.t1 - self.t0, 1e-9)
        names = {t.native_id: t.name for t in threading.enumerate()}
        threads = {
            names.get(tid, f"tid-{tid}"): round(cpu - self.cpu0.get(tid, 0.0), 2)
            for tid, cpu in self.cpu1.items()
            if cpu - self.cpu0.get(tid, 0.0) >= 0.01
        }
        return {
            "seconds": seconds,
            "events": events,
            "messages": messages,
            "events_per_s": events / seconds,
            "messages_per_s": messages / seconds,
            "thread_cpu_s": threads,
        }


_LEFT_BEHIND: list[str] = []
"""Temp dirs of this process that :func:`_emit` removes (it leaves by ``os._exit``: no atexit handlers run)."""


def _emit(result: dict[str, Any]) -> None:
    """Hand the result to the parent and leave at once (Faust's shutdown is not part of any figure)."""
    result["self_maxrss_mb"] = _self_rss_mb()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    data = (RESULT_TAG + json.dumps(result) + "\n").encode()
    while data:  # straight to fd 1: Faust may have replaced sys.stdout by a logger
        data = data[os.write(1, data) :]
    for path in _LEFT_BEHIND:
        shutil.rmtree(path, ignore_errors=True)
    os._exit(0)


def _profiler(enabled: bool) -> Any:
    """A pyinstrument profiler of this (main) thread, or None if not wanted or not installed."""
    if not enabled:
        return None
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("note: pyinstrument is not installed (pip install pyinstrument); no profile", flush=True)
        return None
    return Profiler(interval=0.001, async_mode="disabled")


def _profile_text(profiler: Any) -> str:
    """Stop ``profiler``; the top of its flat (self time) view and of its call tree."""
    profiler.stop()
    flat = profiler.output_text(unicode=False, color=False, flat=True).splitlines()
    tree = profiler.output_text(unicode=False, color=False).splitlines()
    return "\n".join(["-- flat, by self time:", *flat[:40], "-- call tree:", *tree[:90]])


def _first_message_sensor(clock: _Clock) -> Any:
    """A Faust sensor that starts ``clock`` when the first message enters the app (after the group join)."""
    from faust.sensors.base import Sensor

    class FirstMessage(Sensor):
        """Starts the clock on the first message in."""

        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            clock.start()

    return FirstMessage()


def _self_rss_mb() -> float:
    """This process's peak RSS so far, in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_config(ds: Dataset, run: str, batching: Batching = Batching()) -> Config:
    """The example config on the dataset's topics, with a unique app id and unique output topics."""
    base = load_config(EXAMPLE)
    kafka = base.kafka.model_copy(
        update={
            "app_id": f"dwbench-{run}",
            "predictions": TopicConfig(name=ds.predictions, partitions=PARTITIONS),
            "interactions": TopicConfig(name=ds.interactions, partitions=PARTITIONS),
            "summaries": TopicConfig(name=f"dwbench-{run}-summaries", partitions=1),
            "alerts": TopicConfig(name=f"dwbench-{run}-alerts", partitions=1),
            "dead_letter": TopicConfig(name=f"dwbench-{run}-dead-letter", partitions=1),
            # Fresh state topics per run: a worker must not recover (and skip) what an earlier run processed.
            "ingest_state": f"dwbench-{run}-ingest-state",
            "eval_state": f"dwbench-{run}-eval-state",
            "session_timeout": SESSION_TIMEOUT,
            "batch_size": batching.size,
            "batch_wait": batching.wait,
        }
    )
    update: dict[str, Any] = {"kafka": kafka, "metrics": base.metrics.model_copy(update={"port": 0})}
    if ds.wide:  # track enough values that 250 regions and 50 languages (x 5 age bands) all become slices
        update["attributes"] = {
            name: ac.model_copy(update={"max_values": WIDE_MAX_VALUES}) if name in ("region", "language") else ac
            for name, ac in base.attributes.items()
        }
    return base.model_copy(update=update)


async def measure_raw(ds: Dataset, bootstrap: str) -> dict[str, Any]:
    """(a) aiokafka without a group: every message of both topics from offset 0, split and decoded."""
    config = load_config(EXAMPLE)
    decoder = EventDecoder(config.attributes, max_event_bytes=config.max_event_bytes)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    clock = _Clock()
    messages = events = rejected = 0
    try:
        tps = [TopicPartition(t, p) for t in (ds.predictions, ds.interactions) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while messages < ds.messages:
            batch = await consumer.getmany(timeout_ms=1000)
            if batch:
                clock.start()
            for records in batch.values():
                raws, _ = split_messages([r.value or b"" for r in records])
                decoded = decoder.decode_batch(raws)
                events += len(decoded.predictions) + len(decoded.interactions)
                rejected += len(decoded.errors)
                messages += len(records)
        clock.stop()
    finally:
        await consumer.stop()
    return {**clock.report(events + rejected, messages), "decoded": events, "rejected": rejected}


def _run_faust(app: Any) -> None:
    from faust.worker import Worker as FaustWorker

    FaustWorker(
        app, loglevel="warning", quiet=True, redirect_stdouts=False, loop=asyncio.new_event_loop()
    ).execute_from_commandline()


def measure_bare(
    ds: Dataset, bootstrap: str, *, iterate: bool, profile: float | None, batching: Batching = Batching()
) -> None:
    """(b) a bare Faust agent over both topics that counts messages and does nothing else; exits when done.

    With ``profile`` (seconds), the run is profiled and ends after that long if it has not finished.
    """
    import faust

    from driftwatch.daemon.worker import faust_datadir

    app_id = f"dwbench-bare-{uuid.uuid4().hex[:12]}"
    # Faust's data dir in a temp dir of this process, as the worker's: never in the working directory (removed by
    # _emit, or by the next run if this one was killed).
    _LEFT_BEHIND.append(faust_datadir("dwbench-bare"))
    app = faust.App(app_id, broker=f"kafka://{bootstrap}", datadir=_LEFT_BEHIND[-1], **FAUST_SETTINGS)
    topic = app.topic(ds.predictions, ds.interactions, value_type=bytes, key_type=bytes)
    profiler = _profiler(profile is not None)
    clock = _Clock(on_start=profiler.start if profiler is not None else None)
    app.sensors.add(_first_message_sensor(clock))
    seen = 0

    def done() -> None:
        clock.stop()
        events = ds.events if seen >= ds.messages else round(seen * ds.events / ds.messages)
        result = {
            **clock.report(events, seen),
            "iteration": "plain" if iterate else f"take_events({batching.size}, {batching.wait:g})",
        }
        if profiler is not None:
            result["profile"] = _profile_text(profiler)
        result["complete"] = seen >= ds.messages
        _emit(result)

    async def profile_deadline() -> None:
        if profile is not None and clock.elapsed() > profile and not clock.t1:
            done()

    async def count(stream: Any) -> None:
        nonlocal seen
        if iterate:
            async for _ in stream:
                seen += 1
                if seen >= ds.messages:
                    done()
        else:
            async for events in stream.take_events(batching.size, within=batching.wait):
                seen += len(events)
                if seen >= ds.messages:
                    done()

    app.agent(topic, name="count")(count)
    if profile is not None:
        app.timer(0.5)(profile_deadline)
    _run_faust(app)


def _state_bytes(evaluator: Any) -> int:
    """Bytes of the count matrices the evaluator keeps (open ticks, window buckets and totals, since start).

    Open ticks and window buckets are sparse (``Sparse.nbytes``), totals dense.
    """
    total = 0
    for stream in evaluator.streams.values():
        store = stream.store
        matrices = [*store.open_cells.values(), store.since]
        for w in store.windows.values():
            matrices += [m for _, m in w.buckets] + [m for parts in w.late.values() for m in parts] + [w.total]
        total += sum(m.nbytes for m in matrices if m is not None)
    return total


class _CountingTopic:
    """A stand-in for the worker's summaries topic that counts what is sent through it (data and heartbeats)."""

    def __init__(self, topic: Any, on_send: Callable[[], None]) -> None:
        self._topic = topic
        self._on_send = on_send

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        """Count, then send (counted first: it may be evaluated before this returns)."""
        self._on_send()
        return await self._topic.send(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._topic, name)


def measure_driftwatch(ds: Dataset, bootstrap: str, *, profile: float | None, batching: Batching = Batching()) -> None:
    """(c) a driftwatch Worker until every event is counted and every summary it sent was evaluated.

    With ``profile`` (seconds), the run is profiled and ends after that long if it has not finished.
    """
    from driftwatch.daemon.topics import ensure_topics
    from driftwatch.daemon.worker import Worker

    run = uuid.uuid4().hex[:12]
    config = bench_config(ds, run, batching)
    asyncio.run(ensure_topics(bootstrap, config.kafka))
    key = load_key(config.privacy).get_secret_value()

    profiler = _profiler(profile is not None)
    clock = _Clock(on_start=profiler.start if profiler is not None else None)

    class BenchWorker(Worker):
        """The worker with a finish line: counts summary messages sent and evaluated."""

        def __init__(self) -> None:
            super().__init__(config, key, bootstrap=bootstrap, worker_id=f"bench-{run}")
            self.summaries_sent = 0
            self.summaries_evaluated = 0
            self.ingest_batches = 0
            self.finished = False
            self.ingested_at: float | None = None
            self.summaries = _CountingTopic(self.summaries, self._sent)  # type: ignore[assignment]
            # The event loop's longest stall while data flows: how late the 0.1 s timer below wakes (a fold or an
            # evaluation runs on the loop's thread and holds everything else up while it runs).
            self.polled_at: float | None = None
            self.longest_stall = 0.0
            self.app.timer(POLL)(self._poll)
            self.app.sensors.add(_first_message_sensor(clock))

        def _sent(self) -> None:
            self.summaries_sent += 1

        async def ingest_batch(self, messages: Any) -> None:
            self.ingest_batches += 1
            await super().ingest_batch(messages)
            if self.ingested_at is None and self._counted() >= ds.events:
                self.ingested_at = time.perf_counter()  # the ingest stage is done; evaluation may still lag

        def _counted(self) -> int:
            c = self.core.counters
            return c.predictions + c.interactions + sum(c.rejected.values())

        def evaluate_message(self, data: bytes, partition: int = 0, offset: int = -1, live: bool = True) -> None:
            super().evaluate_message(data, partition=partition, offset=offset, live=live)
            self.summaries_evaluated += 1
            self._check()

        async def _poll(self) -> None:
            now = time.perf_counter()
            if self.polled_at is not None and clock.t0 is not None:
                self.longest_stall = max(self.longest_stall, now - self.polled_at - POLL)
            self.polled_at = now
            self._check()
            if profile is not None and not self.finished and clock.elapsed() > profile:
                self.finished = True
                clock.stop()
                self._finish(self._counted())

        def _check(self) -> None:
            counted = self._counted()
            if not self.finished and counted >= ds.events and self.summaries_evaluated >= self.summaries_sent:
                self.finished = True
                clock.stop()
                self._finish(counted)

        def _finish(self, counted: int) -> None:
            c = self.core.counters
            complete = counted >= ds.events
            result = clock.report(counted, ds.messages if complete else round(counted * ds.messages / ds.events))
            result.update(
                complete=complete,
                counted=counted,
                predictions=c.predictions,
                interactions=c.interactions,
                rejected=sum(c.rejected.values()),
                late_dropped=c.late_dropped,
                reference_learning=c.reference_learning,
                evaluations=c.evaluations,
                alert_transitions=len(self.core.transitions),
                summaries=self.summaries_sent,
                ingest_batches=self.ingest_batches,
                duplicates_skipped=self.duplicates_skipped,
                dead_lettered=self.dead_lettered,
                slices=sum(len(s.space) for s in self.core.evaluator.streams.values()),
                streams=len(self.core.evaluator.streams),
                rss_before_data_mb=rss_before_data,
                evaluator_state_mb=_state_bytes(self.core.evaluator) / 2**20,
                join_entries=len(self.core.ingestor._join),
                longest_stall_ms=self.longest_stall * 1000,
                ingest_seconds=None if self.ingested_at is None or clock.t0 is None else self.ingested_at - clock.t0,
            )
            if profiler is not None:
                result["profile"] = _profile_text(profiler)
            _emit(result)

    worker = BenchWorker()
    rss_before_data = _self_rss_mb()  # imports and an empty worker: the floor under every figure of RSS
    _run_faust(worker.app)


def _override_fetch_max_wait(ms: int) -> None:
    """Make every aiokafka consumer of this process use ``fetch_max_wait_ms=ms`` (Faust hard-codes 1500).

    aiokafka keeps one fetch in flight per broker; while a fetch for partitions with no new data waits
    for ``fetch_max_wait_ms``, partitions that do have data (the summaries topic, the rest of a backlog)
    are not fetched. A diagnostic: the figures without it are driftwatch as shipped.
    """
    import aiokafka

    init = aiokafka.AIOKafkaConsumer.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = ms
        init(self, *args, **kwargs)

    aiokafka.AIOKafkaConsumer.__init__ = patched


def _child(args: argparse.Namespace) -> None:
    """Run one measurement in this (fresh) process and print its result line."""
    ds = Dataset(**json.loads(args.dataset))
    batching = Batching(args.batch_size, args.batch_wait)
    if args.fetch_max_wait_ms is not None:
        _override_fetch_max_wait(args.fetch_max_wait_ms)

    def give_up() -> None:
        print(f"timed out after {args.timeout:g}s", file=sys.stderr, flush=True)
        os._exit(3)

    watchdog = threading.Timer(args.timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    if args.measure == "raw":
        _emit(asyncio.run(measure_raw(ds, args.bootstrap)))
    elif args.measure in ("bare-take", "bare-iter"):
        measure_bare(ds, args.bootstrap, iterate=args.measure == "bare-iter", profile=args.profile, batching=batching)
    else:
        measure_driftwatch(ds, args.bootstrap, profile=args.profile, batching=batching)
    raise SystemExit("the measurement ended without a result")


# --------------------------------------------------------------------- parent


def run_measurement(
    mode: str,
    ds: Dataset,
    bootstrap: str,
    *,
    timeout: float,
    profile: float | None = None,
    batching: Batching = Batching(),
    fetch_max_wait_ms: int | None = None,
) -> dict[str, Any]:
    """Run one measurement in a fresh process of this script; add its peak RSS; {} on failure (tail printed)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        mode,
        "--dataset",
        json.dumps(dataclasses.asdict(ds)),
        "--bootstrap",
        bootstrap,
        "--timeout",
        str(timeout),
        "--batch-size",
        str(batching.size),
        "--batch-wait",
        str(batching.wait),
    ]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    if fetch_max_wait_ms is not None:
        cmd += ["--fetch-max-wait-ms", str(fetch_max_wait_ms)]
    title = MODE_TITLES[mode] + (f" [profiled, at most {profile:g} s]" if profile is not None else "")
    print(f"  {ds.name:<9} {title} ...", flush=True)
    with tempfile.NamedTemporaryFile("w+b", prefix=f"dwbench-{mode}-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        result: dict[str, Any] = {}
        try:
            assert proc.stdout is not None
            for raw_line in proc.stdout:
                line = _ANSI.sub("", raw_line)  # Faust's worker shows and hides the cursor
                if RESULT_TAG in line:
                    result = json.loads(line[line.index(RESULT_TAG) + len(RESULT_TAG) :])
                elif line.strip():
                    print("      " + line.rstrip(), flush=True)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    path = Path(log.name)
    if not result:
        tail = path.read_text(errors="replace")[-3000:]
        print(f"      FAILED (exit {proc.returncode}); log {path}:\n{tail}", flush=True)
        return {}
    path.unlink()
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    extra = f", {result['slices']:,} slices" if "slices" in result else ""
    if "rss_before_data_mb" in result:
        extra += (
            f" (RSS {result['rss_before_data_mb']:.0f} MB before any data, "
            f"evaluator matrices {result['evaluator_state_mb']:.0f} MB, {result['join_entries']:,} join entries, "
            f"event loop's longest stall {result['longest_stall_ms']:.0f} ms, "
            f"{result['ingest_batches']:,} ingest batches, {result['summaries']:,} summary messages)"
        )
    if result.get("ingest_seconds"):
        extra += (
            f"; ingest stage done after {result['ingest_seconds']:.2f} s "
            f"({result['events'] / result['ingest_seconds']:,.0f} events/s)"
        )
    if not result.get("complete", True):
        extra += " [stopped early: profile time cap]"
    print(
        f"      {result['events_per_s']:>12,.0f} events/s  {result['messages_per_s']:>10,.0f} msgs/s  "
        f"{result['seconds']:.2f} s  peak RSS {result['peak_rss_mb']:.0f} MB{extra}  CPU s by thread "
        f"{result['thread_cpu_s']}",
        flush=True,
    )
    return result


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events/s (the lower middle for an even count); {} if every run failed."""
    ok = sorted((r for r in results if r), key=lambda r: float(r["events_per_s"]))
    return ok[(len(ok) - 1) // 2] if ok else {}


def _rate(r: dict[str, Any] | None) -> str:
    """events/s of a result; "-" if not run, "failed" if it produced no result."""
    if r is None:
        return "-"
    return f"{r['events_per_s']:,.0f}" if r else "failed"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return a["events_per_s"] / b["events_per_s"] if a and b else None


def _per_cpu(r: dict[str, Any] | None) -> float | None:
    """Events per CPU-second of the measured process (every thread, over the measured interval)."""
    cpu = sum((r or {}).get("thread_cpu_s", {}).values())
    return r["events"] / cpu if r and cpu > 0 else None


def _cpu_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    x, y = _per_cpu(a), _per_cpu(b)
    return x / y if x is not None and y is not None else None


def _verdict(value: float | None, target: float, *, at_least: bool = True) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if at_least else value <= target
    return "PASS" if ok else "MISS"


def print_report(results: dict[tuple[str, str], dict[str, Any]], datasets: list[Dataset]) -> None:
    """The table of figures, ratios and targets."""
    print()
    iter_title, iter_ratio = "(b') Faust iter", "(c)/(b')"
    hdr = (
        f"{'layout':<10}{'messages':>11}{'(a) raw':>14}{'(b) Faust take':>16}{iter_title:>17}"
        f"{'(c) driftwatch':>16}{'(c)/(b)':>9}{iter_ratio:>9}{'(c)/(a)':>9}"
    )
    print("events/s (first message received -> every event seen)")
    print(hdr)
    print("-" * len(hdr))

    def fmt(x: float | None) -> str:
        return f"{x:.2f}" if x is not None else "n/a"

    for ds in datasets:
        r = {m: results.get((ds.name, m)) for m in MODES}
        print(
            f"{ds.name:<10}{ds.messages:>11,}{_rate(r['raw']):>14}{_rate(r['bare-take']):>16}"
            f"{_rate(r['bare-iter']):>17}{_rate(r['driftwatch']):>16}"
            f"{fmt(_ratio(r['driftwatch'], r['bare-take'])):>9}{fmt(_ratio(r['driftwatch'], r['bare-iter'])):>9}"
            f"{fmt(_ratio(r['driftwatch'], r['raw'])):>9}"
        )
    print()
    print("peak RSS per process (MB)")
    print(f"{'layout':<10}" + "".join(f"{m:>14}" for m in MODES))
    for ds in datasets:
        row = [(results.get((ds.name, m)) or {}).get("peak_rss_mb") for m in MODES]
        print(f"{ds.name:<10}" + "".join(f"{x:>14.0f}" if x is not None else f"{'n/a':>14}" for x in row))
    print()
    print("targets")
    for ds in datasets:
        r = {m: results.get((ds.name, m)) for m in MODES}
        if ds.envelope == 1:
            take, it = _ratio(r["driftwatch"], r["bare-take"]), _ratio(r["driftwatch"], r["bare-iter"])
            print(
                f"  single-event messages: driftwatch >= 85% of bare Faust (take_events): {fmt(take)}  "
                f"{_verdict(take, 0.85)}   (vs plain iteration: {fmt(it)}  {_verdict(it, 0.85)})"
            )
            print(
                "    the same per CPU-second of each process (what each costs, whatever the broker and producer "
                f"took of the cores): {fmt(_cpu_ratio(r['driftwatch'], r['bare-take']))}"
            )
        else:
            raw = _ratio(r["driftwatch"], r["raw"])
            print(f"  envelopes of {ds.envelope}: driftwatch >= 50% of raw: {fmt(raw)}  {_verdict(raw, 0.5)}")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Parse arguments; run the whole benchmark, or (``--measure``) one measurement in this process."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events produced per layout")
    ap.add_argument("--bootstrap", help="an existing broker (default: start a Tansu broker for this run)")
    ap.add_argument(
        "--profile",
        type=float,
        nargs="?",
        const=60.0,
        help="also run (b) and (c) under pyinstrument per layout, each for at most PROFILE seconds (default 60)",
    )
    ap.add_argument("--wide-events", type=int, default=200_000, help="events of the 1,000-slice run (0: skip it)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds one measurement may take")
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds of (a)-(c); the table shows each figure's median (noisy machines)"
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"messages per ingest batch (kafka.batch_size, default {BATCH_SIZE})",
    )
    ap.add_argument(
        "--batch-wait", type=float, default=BATCH_WAIT, help="longest wait to fill a batch (kafka.batch_wait, 0.2 s)"
    )
    ap.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        help="diagnostic: override the consumers' fetch_max_wait_ms (Faust hard-codes 1500) in every measurement",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EVENTS:,} events per layout and {QUICK_WIDE_EVENTS:,} for the wide run (a few minutes; noisier)",
    )
    ap.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.events, args.wide_events = min(args.events, QUICK_EVENTS), min(args.wide_events, QUICK_WIDE_EVENTS)
    if args.measure:
        _child(args)
        return
    modes = [m for m in MODES if m in args.modes.split(",")]
    batching = Batching(args.batch_size, args.batch_wait)
    signal.signal(signal.SIGTERM, _terminate)  # so the broker is stopped on `kill` too
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored

    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap or stack.enter_context(tansu_broker())
        print(f"broker: {bootstrap}{'' if args.bootstrap else ' (Tansu, started for this run)'}", flush=True)
        config = load_config(EXAMPLE)
        key = load_key(config.privacy).get_secret_value()
        run = f"{int(time.time())}-{os.getpid()}"

        print(
            f"producing {args.events:,} {SCENARIO} events (rate {RATE:g}/s of event time) as single events and "
            f"envelopes of {ENVELOPE} ...",
            flush=True,
        )
        datasets = asyncio.run(produce(bootstrap, config, key, run, args.events, {"single": 1, "envelope": ENVELOPE}))
        wide: Dataset | None = None
        if args.wide_events > 0 and "driftwatch" in modes:
            print(
                f"producing {args.wide_events:,} events with {WIDE_REGIONS} regions x {WIDE_LANGUAGES} languages "
                f"(envelopes of {ENVELOPE}) for the 1,000-slice run ...",
                flush=True,
            )
            (wide,) = asyncio.run(produce(bootstrap, config, key, run, args.wide_events, {"wide": ENVELOPE}, wide=True))

        def measure(mode: str, ds: Dataset, profile: float | None = None) -> dict[str, Any]:
            return run_measurement(
                mode,
                ds,
                bootstrap,
                timeout=args.timeout,
                profile=profile,
                batching=batching,
                fetch_max_wait_ms=args.fetch_max_wait_ms,
            )

        results: dict[tuple[str, str], dict[str, Any]] = {}
        fetch_note = "" if args.fetch_max_wait_ms is None else f"; fetch_max_wait_ms={args.fetch_max_wait_ms}"
        print(
            f"measuring (one fresh process each; ingest batches take_events({batching.size}, "
            f"within={batching.wait:g}){fetch_note}) ...",
            flush=True,
        )
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for i in range(args.repeat):  # rounds interleave the modes, so drift on a shared machine hits all alike
            if args.repeat > 1:
                print(f" round {i + 1} of {args.repeat}", flush=True)
            for ds in datasets:
                for mode in modes:
                    runs.setdefault((ds.name, mode), []).append(measure(mode, ds))
        results = {k: _median(v) for k, v in runs.items()}
        profiles: dict[str, dict[str, Any]] = {}
        if args.profile is not None:
            for ds in datasets:
                for mode in ("bare-take", "driftwatch"):
                    if mode in modes:
                        profiles[f"{MODE_TITLES[mode]}, {ds.name} layout"] = measure(mode, ds, profile=args.profile)
        wide_result: dict[str, Any] = {}
        if wide is not None:
            wide_result = measure("driftwatch", wide)

        print_report(results, datasets)
        if args.repeat > 1:
            print()
            print(f"spread over {args.repeat} rounds (events/s, each round's figure; the table shows the median)")
            for (name, mode), rs in runs.items():
                print(f"  {name:<9} {MODE_TITLES[mode]:<34} " + "  ".join(_rate(r) for r in rs))
            for ds in datasets:
                pairs = zip(runs.get((ds.name, "driftwatch"), []), runs.get((ds.name, "bare-take"), []), strict=False)
                each = [x for x in (_ratio(c, b) for c, b in pairs) if x is not None]
                if ds.envelope == 1 and each:
                    print(
                        f"  {ds.name:<9} (c)/(b) round by round (each pair measured back to back): "
                        + "  ".join(f"{x:.2f}" for x in each)
                        + f"  (median {statistics.median(each):.2f})"
                    )
        if wide is not None:
            slices = wide_result.get("slices")
            rss = wide_result.get("peak_rss_mb")
            print(
                f"  1,000 live slices ({wide.events:,} events, {WIDE_REGIONS} regions x {WIDE_LANGUAGES} languages, "
                f"max_values {WIDE_MAX_VALUES}): slices {slices if slices is not None else 'n/a'} "
                f"({_verdict(slices, 1000)} >= 1,000), peak RSS "
                f"{f'{rss:.0f}' if rss is not None else 'n/a'} MB  {_verdict(rss, 300, at_least=False)} (<= 300 MB), "
                f"{_rate(wide_result)} events/s"
            )
        for name, prof in profiles.items():
            print()
            print(f"profile of {name} (main thread; pyinstrument):")
            if prof:
                print(
                    f"  {_rate(prof)} events/s while profiled ({prof['events']:,} events in {prof['seconds']:.1f} s); "
                    f"CPU s by thread {prof['thread_cpu_s']}"
                )
                print(prof.get("profile", "  (no profile: pyinstrument missing)"))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the broker and the measurement in progress were stopped", file=sys.stderr)
        sys.exit(130)
