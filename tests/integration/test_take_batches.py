"""Ingest batches end at ``kafka.batch_size`` messages or ``kafka.batch_bytes`` bytes, whichever comes first: a real
broker, a real Faust stream, a backlog of small messages then large ones."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from .conftest import wait_for

HERE = Path(__file__).resolve().parent
PARTITIONS = 2
SMALL, LARGE = 120, 300  # messages per partition: single events of ~100 bytes, then envelopes of ~3 KB
MAX_MESSAGES, MAX_BYTES = 40, 20_000


async def _produce(bootstrap: str, topic: str) -> dict[int, list[int]]:
    """Per partition, the value sizes produced in offset order."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sizes: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    try:
        for p in range(PARTITIONS):
            for i in range(SMALL + LARGE):
                n = 90 + i % 20 if i < SMALL else 2_900 + (i * 37) % 300
                await producer.send_and_wait(topic, b"x" * n, key=b"k", partition=p)
                sizes[p].append(n)
    finally:
        await producer.stop()
    return sizes


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


def test_batches_end_at_a_message_count_or_a_byte_size(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"take-{uuid.uuid4().hex[:8]}"
    group = f"dw-batching-{uuid.uuid4().hex[:8]}"
    sizes = asyncio.run(_produce(kafka_bootstrap, topic))
    total = sum(map(len, sizes.values()))
    out = tmp_path / "batches.jsonl"
    # `within` is long: the backlog is there before the app starts, so bounds, not time, must end its batches.
    args = [kafka_bootstrap, topic, str(total), str(MAX_MESSAGES), str(MAX_BYTES), "5", str(out)]
    proc = subprocess.run(
        [sys.executable, str(HERE / "batching_app.py"), *args],
        env={**os.environ, "BATCHING_APP_ID": group},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    batches = [json.loads(line) for line in out.read_text().splitlines()]

    # Every message exactly once, each partition in offset order.
    got: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for batch in batches:
        for part, offset, _ in batch:
            got[part].append(offset)
    assert got == {p: list(range(len(sizes[p]))) for p in range(PARTITIONS)}
    # Both bounds hold: at most MAX_MESSAGES messages, and only the last message may take a batch past MAX_BYTES.
    for batch in batches:
        assert 1 <= len(batch) <= MAX_MESSAGES
        assert sum(n for *_, n in batch[:-1]) < MAX_BYTES
    # And each ended a batch: small messages fill batches by count, large ones by bytes (all but the last batch).
    full = batches[:-1]
    by_count = [b for b in full if len(b) == MAX_MESSAGES]
    by_bytes = [b for b in full if len(b) < MAX_MESSAGES and sum(n for *_, n in b) >= MAX_BYTES]
    assert len(by_count) + len(by_bytes) == len(full)
    assert by_count
    assert all(n < 1_000 for b in by_count for *_, n in b[:-1])
    assert by_bytes
    assert all(n > 1_000 for b in by_bytes for *_, n in b)
    # Offsets are committed for what the batches processed (Faust commits acknowledged events when it stops).
    ends = {p: len(sizes[p]) for p in range(PARTITIONS)}
    wait_for(lambda: asyncio.run(_committed(kafka_bootstrap, group, topic)) == ends, 30, "the committed offsets")
