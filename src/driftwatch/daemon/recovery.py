"""Durable progress of the two stages, so a restarted or rebalanced worker continues where the last one stopped.

Two state topics, one partition per partition they describe:

- **ingest state** (partition *p* for input partition *p* of both input
  topics): before an ingest call sends its summaries, an
  :class:`IngestIntent` per batch names its exact offset range, the call it
  belongs to, the clock it is judged by and where the join table could be
  rebuilt from. A worker taking over the partition reads the newest intents,
  rebuilds the join table from everything before the last call (counting
  nothing), processes the last call again exactly as it was (the evaluation
  stage drops what it had already applied, per source partition and model),
  and skips everything up to each batch's end.
- **eval state** (partition *p* for summary partition *p*): every
  ``kafka.checkpoint_interval`` the evaluation stage writes a checkpoint of
  the models on that partition (:mod:`driftwatch.core.snapshot`), in chunks, the
  last one marked. A worker taking over reads the last complete checkpoint,
  restores it and re-applies the summary messages after it.

Reads go backwards from the end of a state partition, so recovery time does
not grow with the topic's history (the dev broker does not compact).

The worker keeps each stage's progress in a recovery manager (after
quix-streams' RecoveryManager): :class:`InputRecovery` for the input
partitions and :class:`EvalRecovery` for the summary partitions. Each one
knows what its partitions have done so far; ``assign`` takes partitions
over (restoring their state) and ``keep_only`` forgets those no longer
assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from driftwatch.config import Config
from driftwatch.core.pipeline import Pipeline
from driftwatch.core.snapshot import Codec, decode_checkpoint, encode_checkpoint
from driftwatch.core.summary import Partial
from driftwatch.daemon.offsets import end_offsets
from driftwatch.daemon.wire import SummaryMsg, from_msg
from driftwatch.events import split_messages

__all__ = [
    "CHUNK_BYTES",
    "REFETCH_MAX",
    "EvalChunk",
    "EvalRecovery",
    "IngestIntent",
    "InputRecovery",
    "WorkerContext",
    "decode_chunk",
    "decode_intent",
    "encode_chunk",
    "encode_intent",
    "join_chunks",
    "last_checkpoint",
    "last_intents",
    "read_range",
    "split_chunks",
]

CHUNK_BYTES = 512 * 1024
"""Checkpoint chunk size: well under the 1 MB default message limit of Kafka brokers."""
_CHUNKS_IN_FLIGHT = 4
"""Checkpoint chunks sent and not yet acknowledged, at most."""


class IngestIntent(msgspec.Struct, frozen=True):
    """An ingest batch about to send its summaries: its exact range, and where the join table can be rebuilt from."""

    topic: str
    partition: int
    lo: int
    hi: int
    rebuild_from: int
    worker: str
    watermark: float = float("-inf")  # the ingest watermark before this batch: join expiry is replayed up to it
    # The batches sent together (one ingest call): a restart re-sends the last call of a partition as a whole, in
    # the same order, on the same state ("": written before calls were recorded; every last batch is re-sent).
    call: str = ""
    # How the batch was judged (Ingestor.clock_of, and the wall time that bounded event time), so a re-sent batch is
    # judged exactly the same.
    clock_own: float = float("-inf")
    clock_others: float = float("inf")
    wall: float = 0.0


class EvalChunk(msgspec.Struct, frozen=True):
    """One chunk of an evaluation checkpoint; the last one (``index == count - 1``) carries the offsets it covers."""

    generation: str
    index: int
    count: int
    data: bytes
    offset: int = -1  # last summary offset applied in this partition
    applied: dict[str, int] = {}  # "topic:partition|model" -> highest source offset applied


_INTENT = Codec(IngestIntent)
encode_intent = _INTENT.encode
"""IngestIntent -> msgpack."""
decode_intent = _INTENT.decode
"""msgpack -> IngestIntent (raises msgspec.DecodeError on garbage)."""
_CHUNK = Codec(EvalChunk)
encode_chunk = _CHUNK.encode
"""EvalChunk -> msgpack."""
decode_chunk = _CHUNK.decode
"""msgpack -> EvalChunk (raises msgspec.DecodeError on garbage)."""


def split_chunks(
    generation: str, blob: bytes, offset: int, applied: dict[str, int], size: int = CHUNK_BYTES
) -> Iterator[EvalChunk]:
    """Cut a checkpoint into chunks, one at a time (a checkpoint of a wide worker is tens of MB: a list of copies
    doubled it); the last carries the offsets.

    >>> [(c.index, c.count, len(c.data), c.offset) for c in split_chunks("g", b"x" * 5, 9, {}, size=2)]
    [(0, 3, 2, -1), (1, 3, 2, -1), (2, 3, 1, 9)]
    """
    n = max(1, -(-len(blob) // size))
    for i in range(n):
        last = i == n - 1
        yield EvalChunk(
            generation, i, n, blob[i * size : (i + 1) * size], offset if last else -1, applied if last else {}
        )


def join_chunks(chunks: Sequence[EvalChunk]) -> tuple[bytes, EvalChunk] | None:
    """The newest complete checkpoint among ``chunks`` (in log order): its bytes and its last chunk; None if none.

    >>> cs = [*split_chunks("a", b"old", 1, {}), next(split_chunks("b", b"new!", 2, {}, size=3))]
    >>> join_chunks(cs)[0]
    b'old'
    """
    for end in range(len(chunks) - 1, -1, -1):
        last = chunks[end]
        if last.index != last.count - 1 or end - last.index < 0:
            continue
        run = chunks[end - last.index : end + 1]
        if all(c.generation == last.generation and c.index == k for k, c in enumerate(run)):
            return b"".join(c.data for c in run), last
    return None


async def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await c.start()
    return c


async def read_range(
    bootstrap: str, topic: str, partition: int, start: int, end: int, on_record: Callable[[Any], None]
) -> int:
    """Call ``on_record`` for every record of ``topic``/``partition`` with ``start <= offset < end``; return how many."""
    if end <= start:
        return 0
    tp = TopicPartition(topic, partition)
    c = await _consumer(bootstrap)
    n = 0
    try:
        c.assign([tp])
        first = (await c.beginning_offsets([tp]))[tp]
        c.seek(tp, max(start, first))
        if max(start, first) >= end:
            return 0
        while True:
            batch = await c.getmany(tp, timeout_ms=1000, max_records=5000)
            for rec in batch.get(tp, []):
                if rec.offset >= end:
                    return n
                on_record(rec)
                n += 1
                if rec.offset >= end - 1:
                    return n
            if not batch.get(tp) and await c.position(tp) >= end:
                return n
    finally:
        with contextlib.suppress(Exception):
            await c.stop()


async def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    """The offset the next record of ``topic``/``partition`` will get."""
    tp = TopicPartition(topic, partition)
    c = await _consumer(bootstrap)
    try:
        c.assign([tp])
        return (await end_offsets(c, [tp]))[tp]
    finally:
        with contextlib.suppress(Exception):
            await c.stop()


async def _tail(bootstrap: str, topic: str, partition: int, count: int) -> list[Any]:
    """The last ``count`` records of a partition (fewer if it is shorter)."""
    end = await end_offset(bootstrap, topic, partition)
    out: list[Any] = []
    await read_range(bootstrap, topic, partition, max(0, end - count), end, out.append)
    return out


async def last_intents(
    bootstrap: str, topic: str, partition: int, topics: Sequence[str]
) -> dict[str, tuple[int, IngestIntent]]:
    """The newest intent per input topic in one ingest-state partition, with its offset there (reading back until
    each topic is found)."""
    found: dict[str, tuple[int, IngestIntent]] = {}
    count = 64
    while True:
        records = await _tail(bootstrap, topic, partition, count)
        for rec in records:
            with contextlib.suppress(msgspec.MsgspecError):
                it = decode_intent(rec.value or b"")
                if it.partition == partition:
                    found[it.topic] = (rec.offset, it)
        if all(t in found for t in topics) or len(records) < count:
            return found
        count *= 4


async def last_checkpoint(bootstrap: str, topic: str, partition: int, key: bytes) -> tuple[bytes, EvalChunk] | None:
    """The newest complete evaluation checkpoint written under ``key`` in one eval-state partition, or None."""
    count = 64
    while True:
        records = await _tail(bootstrap, topic, partition, count)
        chunks = []
        for rec in records:
            if rec.key != key:
                continue  # another app sharing the topic by mistake must not be restored here
            with contextlib.suppress(msgspec.MsgspecError):
                chunks.append(decode_chunk(rec.value or b""))
        got = join_chunks(chunks)
        if got is not None or len(records) < count:
            return got
        count *= 4


REFETCH_MAX = 10_000
"""Longest gap in an input partition (messages) read again; a longer one is an operator's offset reset."""

_REBUILD_SLICE = 5000
"""Input records decoded at a time while rebuilding the join state."""


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """What a recovery manager shares with its worker."""

    config: Config
    bootstrap: str
    core: Pipeline
    lock: threading.Lock  # held around every change of the core (/metrics reads it from another thread)
    log: Any  # the worker's logger (bound to its id)


class _Recovery:
    """A recovery manager: the worker's context as attributes."""

    def __init__(self, worker: WorkerContext) -> None:
        self.config = worker.config
        self.bootstrap = worker.bootstrap
        self.core = worker.core
        self.lock = worker.lock
        self.log = worker.log


class InputRecovery(_Recovery):
    """The input partitions of one worker (both input topics, ``"topic:partition"``): which are recovered, where
    each one resumes, and which of its recent batches may still feed the join.

    :meth:`assign` takes partitions over from their last intents; :meth:`keep_only` forgets those no longer
    assigned (one that comes back later is recovered again).
    """

    def __init__(
        self,
        worker: WorkerContext,
        *,
        resend: Callable[[Sequence[tuple[str, Sequence[Any], IngestIntent]]], Awaitable[None]],
    ) -> None:
        super().__init__(worker)
        # Folds and sends batches again as one ingest call, each judged as its intent says.
        self._resend = resend
        self.recovered: set[str] = set()
        self.skip_to: dict[str, int] = {}  # partition -> last offset already sent before a restart or rebalance
        self.join_batches: dict[str, deque[tuple[float, int, int]]] = {}  # partition -> (max event time, lo, events)
        self.seconds: dict[str, float] = {}  # "input <partition>" -> how long its last recovery took
        self.refetched = 0  # records read again because the consumer skipped them (see gap)
        self.skipped = 0  # offsets skipped on purpose (an offset reset of the group, see gap)

    def pending(self, assigned: Iterable[str]) -> list[str]:
        """The assigned partitions not recovered yet, in order."""
        return sorted(set(assigned) - self.recovered)

    def keep_only(self, assigned: set[str]) -> None:
        """Forget the partitions no longer assigned: one that comes back later is recovered again."""
        self.recovered &= assigned

    def fresh(self, tp: str, messages: Sequence[Any]) -> list[Any]:
        """The messages of a partition not already sent (before a restart or rebalance, or redelivered)."""
        skip = self.skip_to.get(tp, -1)
        return [m for m in messages if m.offset > skip]

    def gap(self, tp: str, first: int) -> tuple[int, int] | None:
        """The offsets of a partition never processed before ``first`` (``[lo, hi)``), or None.

        Kafka delivers a partition in order, but Faust drops (and acknowledges, so the group commits past them)
        messages fetched before a rebalance changed the consumer generation: a worker joining a group whose dead
        member has not timed out yet loses a fetch's worth of every partition. The intents say how far this
        partition was processed; whatever lies between that and the first message delivered is read again, up
        to :data:`REFETCH_MAX` messages (a fetch is far smaller). A longer gap is an operator's offset reset
        (``kafka-consumer-groups --reset-offsets``, to skip a backlog): it is honoured, and logged.
        """
        done = self.skip_to.get(tp)
        if done is None or first <= done + 1:
            return None
        if first - (done + 1) > REFETCH_MAX:
            self.skipped += first - (done + 1)
            self.log.warning("input_gap_skipped", partition=tp, offsets=[done + 1, first - 1], reason="offset reset")
            return None
        return done + 1, first

    def processed(self, tp: str, hi: int) -> None:
        """A batch of the partition up to ``hi`` has been sent: redeliveries up to it are skipped."""
        self.skip_to[tp] = max(hi, self.skip_to.get(tp, -1))

    async def refetch(self, tp: str, lo: int, hi: int) -> list[Any]:
        """Read the records ``[lo, hi)`` of an input partition (a :meth:`gap`)."""
        topic, _, part = tp.rpartition(":")
        records: list[Any] = []
        await read_range(self.bootstrap, topic, int(part), lo, hi, records.append)
        self.refetched += len(records)
        self.log.warning("input_gap_refetched", partition=tp, offsets=[lo, hi - 1], records=len(records))
        return records

    def rebuild_from(self, tp: str, lo: int) -> int:
        """Where the partition's join state could be rebuilt from, for a batch starting at ``lo`` (its intent)."""
        batches = self.join_batches.setdefault(tp, deque())
        return batches[0][1] if batches else lo

    def remember(self, tp: str, lo: int, events: int) -> None:
        """Track the oldest batch whose events may still matter to the join (within max_entries): a prediction can
        be joined until ``join.ttl`` after it, an interaction waits ``join.grace`` for its prediction, and a label
        marks its request as labelled as long as the prediction can be joined. Past that, every event that could
        still meet it would be late (see Ingestor._expire)."""
        batches = self.join_batches[tp]
        ing = self.core.ingestor
        batches.append((ing.max_ts, lo, events))
        j = self.config.join
        first_open = ing.closed_before()
        if first_open is None:
            return
        reach = j.ttl + j.grace

        def out_of_reach(newest: float) -> bool:  # -inf: a batch without a valid event
            return not math.isfinite(newest) or math.floor((newest + reach) / ing.tick) < first_open

        total = sum(n for _, _, n in batches)
        while len(batches) > 1 and (out_of_reach(batches[0][0]) or total - batches[0][2] >= j.max_entries):
            total -= batches.popleft()[2]

    async def assign(self, tps: Sequence[str]) -> None:
        """Take over input partitions: rebuild their join state, then re-send the last ingest call of each exactly.

        The newest intents of a partition name the batches of its last ingest call (the one that may have been
        cut short when its previous owner stopped), how each was judged, and where the join state can be rebuilt
        from. Every other batch of the partition was sent whole. So the join state is rebuilt from everything up to
        the last call (predictions before interactions: joins depend on event time only, not on this order), and
        the last call is processed again as one call, its batches in their first order and judged by their
        recorded clocks: it sends exactly what it sent the first time (the evaluation stage drops what it had
        already applied). Everything up to each batch's end is skipped when Kafka redelivers it.
        """
        started = time.monotonic()
        preds = self.config.kafka.predictions.name
        ordered = sorted(tps, key=lambda tp: (not tp.startswith(preds + ":"), tp))
        by_partition: dict[int, list[str]] = {}
        for tp in ordered:
            by_partition.setdefault(int(tp.rpartition(":")[2]), []).append(tp)
        intents: dict[str, IngestIntent] = {}
        last_call: list[tuple[int, int, str]] = []  # (partition, offset of the intent, input partition)
        for part, members in by_partition.items():
            topics = [tp.rpartition(":")[0] for tp in members]
            found = await last_intents(self.bootstrap, self.config.kafka.ingest_state, part, topics)
            mine = {tp: found[tp.rpartition(":")[0]] for tp in members if tp.rpartition(":")[0] in found}
            if not mine:
                continue
            newest = max(mine.values(), key=lambda oi: oi[0])[1].call
            for tp, (offset, it) in mine.items():
                intents[tp] = it
                if not newest or it.call == newest:
                    last_call.append((part, offset, tp))
        again = {tp for _, _, tp in last_call}
        rebuilt = {}
        for tp in ordered:
            if tp in intents:
                it = intents[tp]
                rebuilt[tp] = await self._rebuild_join(tp, it, it.lo if tp in again else it.hi + 1)
        crash_wm = max((it.watermark for it in intents.values()), default=-math.inf)
        with self.lock:
            self.core.ingestor.rebuilt(crash_wm)
            # Event time resumes where it stood.
            self.core.ingestor.seed_sources(dict.fromkeys(intents, crash_wm + self.config.windows.lateness))
        work = []
        for _, _, tp in sorted(last_call):
            it = intents[tp]
            batch: list[Any] = []
            await read_range(self.bootstrap, it.topic, it.partition, it.lo, it.hi + 1, batch.append)
            if batch:
                work.append((tp, batch, it))
        if work:
            await self._resend(work)
        for tp in ordered:
            self.recovered.add(tp)
            if tp in intents:
                self.skip_to[tp] = intents[tp].hi
                self.seconds[f"input {tp}"] = time.monotonic() - started
        if intents:
            self.log.info(
                "recovered",
                stage="input",
                partitions={
                    tp: {"join_events_rebuilt": rebuilt.get(tp, 0), "resent": [it.lo, it.hi] if tp in again else []}
                    for tp, it in intents.items()
                },
                seconds=round(time.monotonic() - started, 3),
            )

    async def _rebuild_join(self, tp: str, it: IngestIntent, end: int) -> int:
        """Fold the partition's records from ``it.rebuild_from`` up to ``end`` into the join state only (they were
        counted before)."""
        self.join_batches[tp] = deque()
        if it.rebuild_from >= end:
            return 0
        records: list[Any] = []
        await read_range(self.bootstrap, it.topic, it.partition, it.rebuild_from, end, records.append)
        n = 0
        ing = self.core.ingestor
        with self.lock:
            ing.rebuilt_max_ts = -math.inf
            for i in range(0, len(records), _REBUILD_SLICE):
                raws, _ = split_messages([r.value or b"" for r in records[i : i + _REBUILD_SLICE]])
                n += ing.rebuild(raws)
            # The rebuilt span stays where the next rebuild starts for as long as its newest event may matter.
            self.join_batches[tp].append((ing.rebuilt_max_ts, it.rebuild_from, n))
        return n


class EvalRecovery(_Recovery):
    """The summary partitions of one worker: what each has applied (per source partition and model, so a re-sent
    batch is applied once), its models, its checkpoints.

    :meth:`assign` takes a partition over from its last checkpoint; :meth:`keep_only` drops the models of the
    partitions no longer assigned (another worker restores them).
    """

    def __init__(self, worker: WorkerContext, *, topic: Any, replay: Callable[[bytes, int, int], None]) -> None:
        super().__init__(worker)
        k = self.config.kafka
        self.topic = topic  # the eval-state topic (Faust), checkpoints are written to
        self._replay = replay  # applies one summary message again (data, partition, offset), without its watermark
        self.key = f"{k.app_id}/{k.summaries.name}".encode()  # checkpoints of another app are never restored
        self.offset: dict[int, int] = {}  # partition -> last summary offset applied (present once recovered)
        self.models: dict[int, set[str]] = {}
        self.checkpointed: dict[int, float] = {}  # partition -> monotonic time of its last checkpoint
        self.applied: dict[str, int] = {}  # "topic:partition|model" -> highest source offset applied
        # Chunks of a batch not yet complete: mark -> ((source range, worker), first offset, partials so far).
        self.held: dict[str, tuple[tuple[tuple[int, int], str], int, list[Partial]]] = {}
        self.seconds: dict[str, float] = {}  # "summaries <partition>" -> how long its last recovery took
        self.checkpoints_written = 0
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, partition: int) -> asyncio.Lock:
        return self._locks.setdefault(partition, asyncio.Lock())

    async def admit(self, partition: int, offset: int) -> bool:
        """Whether the summary message at ``offset`` is still to be applied (the partition is taken over first)."""
        lock = self._lock(partition)
        if partition not in self.offset or lock.locked():  # a take-over in progress must finish first
            async with lock:
                if partition not in self.offset:
                    await self.assign(partition, offset)
        return offset > self.offset[partition]

    async def take_over_idle(self, partition: int) -> None:
        """Take over an assigned summary partition that has delivered nothing yet, up to its end.

        A worker must be ready (``/readyz``) without traffic: restoring the
        partition when its first message arrives would keep an idle worker
        unready, and a rollout waiting forever.
        """
        if partition in self.offset:
            return
        async with self._lock(partition):
            if partition in self.offset:
                return
            end = await end_offset(self.bootstrap, self.config.kafka.summaries.name, partition)
            await self.assign(partition, end)

    async def assign(self, partition: int, up_to: int) -> None:
        """Take over a summary partition: restore its last checkpoint, then re-apply the summaries before ``up_to``."""
        started = time.monotonic()
        got = await last_checkpoint(self.bootstrap, self.config.kafka.eval_state, partition, self.key)
        start = 0
        models: set[str] = set()
        if got is not None:
            blob, last = got
            state = decode_checkpoint(blob)
            models = {s.model_id for s in state.streams}
            with self.lock:
                skipped = self.core.evaluator.restore(state)
            if skipped:
                self.log.warning("checkpoint_models_skipped", partition=partition, models=skipped)
            for k, v in last.applied.items():
                self.applied[k] = max(v, self.applied.get(k, -1))
            start = last.offset + 1
        self.models[partition] = models
        self.offset[partition] = start - 1
        replayed = 0

        def apply(rec: Any) -> None:
            nonlocal replayed
            self._replay(rec.value or b"", partition, rec.offset)
            self.offset[partition] = rec.offset
            replayed += 1

        await read_range(self.bootstrap, self.config.kafka.summaries.name, partition, start, up_to, apply)
        self.checkpointed[partition] = time.monotonic() if got is None else 0.0
        self.seconds[f"summaries {partition}"] = time.monotonic() - started
        if got is not None or replayed:
            self.log.info(
                "recovered",
                stage="summaries",
                partition=partition,
                checkpoint_offset=start - 1,
                models=sorted(models),
                summaries_replayed=replayed,
                seconds=round(time.monotonic() - started, 3),
            )

    def keep_only(self, owned: set[int]) -> None:
        """Forget the models of summary partitions this worker no longer owns (another worker restores them)."""
        for p in [p for p in self.offset if p not in owned]:
            with self.lock:
                self.core.evaluator.drop(self.models.pop(p, set()))
            del self.offset[p]
            self.checkpointed.pop(p, None)

    def merge(self, msg: SummaryMsg, partition: int, offset: int) -> bool:
        """Apply a summary message's partials once (a batch's chunks together, when the last one arrives);
        False for a redelivered batch, already applied."""
        # Held as partials (they share the keys' strings); a partial naming keys its message lacks raises WireError.
        parts = [from_msg(p, msg.keys) for p in msg.partials]
        # One batch sends its partials per model (in one or more messages): progress is kept per source and model.
        model = msg.partials[0].model_id
        self.models.setdefault(partition, set()).add(model)
        marks = {f"{tp}|{model}": hi for tp, (_, hi) in msg.sources.items()}
        if marks and all(hi <= self.applied.get(m, -1) for m, hi in marks.items()):
            return False
        if len(marks) == 1:
            (mark,) = marks
            ident = (msg.sources[mark.rpartition("|")[0]], msg.worker)
            held = self.held.get(mark)
            if held is not None and held[0] != ident:
                held = None  # an unfinished batch of a worker that stopped: its re-sent batch replaces it
            if not msg.final:
                self.held[mark] = (ident, offset, [*(held[2] if held else []), *parts])
                return True
            if held is not None:
                parts = [*held[2], *parts]
            self.held.pop(mark, None)
        with self.lock:
            self.core.evaluator.apply(parts)
        for m, hi in marks.items():
            self.applied[m] = max(hi, self.applied.get(m, -1))
        return True

    def due(self, partitions: Iterable[int]) -> list[int]:
        """The partitions (of ``partitions``) whose last checkpoint is ``kafka.checkpoint_interval`` old."""
        now = time.monotonic()
        every = self.config.kafka.checkpoint_interval
        return [p for p in partitions if now - self.checkpointed.get(p, 0.0) >= every]

    async def checkpoint(self, partition: int) -> None:
        """Write the state of the models on one summary partition to its eval-state partition (chunked; awaited)."""
        models = self.models.get(partition, set())
        ev = self.core.evaluator
        with self.lock:  # encoded and compressed stream by stream: the plain msgpack never exists whole
            blob, size = encode_checkpoint(ev.snapshot_shell(models), ev.stream_count(models), ev.stream_states(models))
        applied = {k: v for k, v in self.applied.items() if k.rpartition("|")[2] in models}
        # Resume before the first chunk of a batch still incomplete: complete batches before it are skipped by mark.
        resume = min(
            [self.offset.get(partition, -1)]
            + [first - 1 for mark, (_, first, _) in self.held.items() if mark.rpartition("|")[2] in models]
        )
        # A few chunks in flight at a time: the producer would otherwise hold a copy of the whole checkpoint.
        sent: deque[Any] = deque()
        chunks = 0
        for c in split_chunks(uuid.uuid4().hex, blob, resume, applied):
            sent.append(await self.topic.send(key=self.key, value=encode_chunk(c), partition=partition))
            chunks += 1
            if len(sent) >= _CHUNKS_IN_FLIGHT:
                await sent.popleft()
        for f in sent:
            await f
        self.checkpointed[partition] = time.monotonic()
        self.checkpoints_written += 1
        self.log.info(
            "checkpoint_written", partition=partition, offset=resume, chunks=chunks, bytes=len(blob), state_bytes=size
        )
