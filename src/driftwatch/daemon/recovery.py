"""Durable progress of the two stages, so a restarted or rebalanced worker continues where the last one stopped.

Two state topics, one partition per partition they describe:

- **ingest state** (partition *p* for input partition *p* of both input
  topics): before an ingest batch sends its summaries, an
  :class:`IngestIntent` names the batch's exact offset range and where the
  join table could be rebuilt from. A worker taking over the partition reads
  the last intent, rebuilds the join table from the input topic (counting
  nothing), re-processes exactly that batch (the evaluation stage drops
  what it had already applied, per source partition and model), and skips
  everything up to the batch's end.
- **eval state** (partition *p* for summary partition *p*): every
  ``kafka.checkpoint_interval`` the evaluation stage writes a checkpoint of
  the models on that partition (:mod:`driftwatch.core.snapshot`), in chunks, the
  last one marked. A worker taking over reads the last complete checkpoint,
  restores it and re-applies the summary messages after it.

Reads go backwards from the end of a state partition, so recovery time does
not grow with the topic's history (the dev broker does not compact).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = [
    "CHUNK_BYTES",
    "EvalChunk",
    "IngestIntent",
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


class IngestIntent(msgspec.Struct, frozen=True):
    """An ingest batch about to send its summaries: its exact range, and where the join table can be rebuilt from."""

    topic: str
    partition: int
    lo: int
    hi: int
    rebuild_from: int
    worker: str
    watermark: float = float("-inf")  # the ingest watermark before this batch: join expiry is replayed up to it


class EvalChunk(msgspec.Struct, frozen=True):
    """One chunk of an evaluation checkpoint; the last one (``index == count - 1``) carries the offsets it covers."""

    generation: str
    index: int
    count: int
    data: bytes
    offset: int = -1  # last summary offset applied in this partition
    applied: dict[str, int] = {}  # "topic:partition|model" -> highest source offset applied


_ENC = msgspec.msgpack.Encoder()
_DEC_INTENT = msgspec.msgpack.Decoder(IngestIntent)
_DEC_CHUNK = msgspec.msgpack.Decoder(EvalChunk)


def encode_intent(i: IngestIntent) -> bytes:
    """IngestIntent -> msgpack."""
    return _ENC.encode(i)


def decode_intent(data: bytes) -> IngestIntent:
    """msgpack -> IngestIntent (raises msgspec.DecodeError on garbage)."""
    return _DEC_INTENT.decode(data)


def encode_chunk(c: EvalChunk) -> bytes:
    """EvalChunk -> msgpack."""
    return _ENC.encode(c)


def decode_chunk(data: bytes) -> EvalChunk:
    """msgpack -> EvalChunk (raises msgspec.DecodeError on garbage)."""
    return _DEC_CHUNK.decode(data)


def split_chunks(
    generation: str, blob: bytes, offset: int, applied: dict[str, int], size: int = CHUNK_BYTES
) -> list[EvalChunk]:
    """Cut a checkpoint into chunks; the last carries the offsets.

    >>> [(c.index, c.count, len(c.data), c.offset) for c in split_chunks("g", b"x" * 5, 9, {}, size=2)]
    [(0, 3, 2, -1), (1, 3, 2, -1), (2, 3, 1, 9)]
    """
    parts = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
    n = len(parts)
    return [
        EvalChunk(generation, i, n, part, offset if i == n - 1 else -1, applied if i == n - 1 else {})
        for i, part in enumerate(parts)
    ]


def join_chunks(chunks: Sequence[EvalChunk]) -> tuple[bytes, EvalChunk] | None:
    """The newest complete checkpoint among ``chunks`` (in log order): its bytes and its last chunk; None if none.

    >>> cs = split_chunks("a", b"old", 1, {}) + split_chunks("b", b"new!", 2, {}, size=3)[:1]
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


async def _tail(bootstrap: str, topic: str, partition: int, count: int) -> list[Any]:
    """The last ``count`` records of a partition (fewer if it is shorter)."""
    tp = TopicPartition(topic, partition)
    c = await _consumer(bootstrap)
    try:
        c.assign([tp])
        end = (await c.end_offsets([tp]))[tp]
    finally:
        with contextlib.suppress(Exception):
            await c.stop()
    out: list[Any] = []
    await read_range(bootstrap, topic, partition, max(0, end - count), end, out.append)
    return out


async def last_intents(bootstrap: str, topic: str, partition: int, topics: Sequence[str]) -> dict[str, IngestIntent]:
    """The newest intent per input topic in one ingest-state partition (reading back until each topic is found)."""
    found: dict[str, IngestIntent] = {}
    count = 64
    while True:
        records = await _tail(bootstrap, topic, partition, count)
        for rec in records:
            with contextlib.suppress(msgspec.MsgspecError):
                it = decode_intent(rec.value or b"")
                if it.partition == partition:
                    found[it.topic] = it
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
