"""Consumer lag that does not lie: every assigned input partition has a lag series, measured from the worker's
position, else the group's committed offset, else the log start."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.daemon.metrics import EVALUATION_BUCKETS, WorkerCollector
from driftwatch.daemon.topics import ensure_topics
from driftwatch.profiles import load_profiles
from driftwatch.simulate import generate

from .conftest import WorkerProcess, produce, samples, unique_config, wait_for


@dataclass
class _WorkerState:
    """What a worker copies for /metrics (:class:`driftwatch.daemon.metrics.WorkerState`), filled with real numbers."""

    core: Pipeline
    assignment: frozenset[tuple[str, int]]
    highwater: dict[str, int]
    position: dict[str, int]
    committed: dict[str, int]
    log_start: dict[str, int]
    progress_wall: dict[str, float]
    dead_lettered: int = 0
    duplicates_skipped: int = 0
    summaries_rejected: int = 0
    evaluation_seconds: list[int] = field(default_factory=lambda: [0] * (len(EVALUATION_BUCKETS) + 1))
    evaluation_seconds_sum: float = 0.0
    last_evaluation_wall: float | None = None
    checkpoints_written: int = 0
    input_refetched: int = 0
    input_skipped: int = 0
    recovery: dict[str, float] = field(default_factory=dict)


def _gauges(state: _WorkerState, name: str) -> dict[tuple[str, int], float]:
    out = {}
    for family in WorkerCollector(state).collect():
        if family.name == name:
            for s in family.samples:
                out[(s.labels["topic"], int(s.labels["partition"]))] = s.value
    return out


def test_lag_counts_a_backlog_before_the_first_batch(example_config: Path, pseudonym_key: bytes) -> None:
    """After a restart, partitions not processed yet report high watermark minus the committed offset (28,000
    predictions behind, not 0), or minus the log start when nothing is committed; the worker's own position wins
    once it has one unless the group committed further; only a partition whose high watermark is unknown is left
    out; a stall counts from the last progress."""
    cfg = load_config(example_config)
    p, i = cfg.kafka.predictions.name, cfg.kafka.interactions.name
    now = time.time()
    state = _WorkerState(
        core=Pipeline(cfg, pseudonym_key, load_profiles(cfg)),
        assignment=frozenset({*((p, n) for n in range(4)), *((i, n) for n in range(4)), (cfg.kafka.summaries.name, 0)}),
        highwater={
            **{f"{p}:{n}": 7_100 + n for n in range(4)},
            f"{i}:0": 80,
            f"{i}:1": 80,
            f"{i}:2": 520,
            f"{cfg.kafka.summaries.name}:0": 9_999,
        },
        position={f"{i}:2": 500},
        committed={**{f"{p}:{n}": 100 + n for n in range(4)}, f"{i}:2": 450},
        log_start={f"{i}:0": 0, f"{i}:1": 50, f"{i}:3": 0},
        progress_wall={f"{p}:0": now - 90, f"{i}:2": now},
    )
    state.last_evaluation_wall = now
    collector = WorkerCollector(state)
    described = {(m.name, m.type) for m in collector.describe()}
    assert {(m.name, m.type) for m in collector.collect()} <= described  # what ?name[]= scrapes find
    lag = _gauges(state, "driftwatch_consumer_lag")
    assert lag == {
        (p, 0): 7_000,
        (p, 1): 7_000,
        (p, 2): 7_000,
        (p, 3): 7_000,
        (i, 0): 80,
        (i, 1): 30,
        (i, 2): 20,
    }
    assert sum(v for (topic, _), v in lag.items() if topic == p) == 28_000
    stalled = _gauges(state, "driftwatch_consumer_stalled_seconds")
    assert stalled.keys() == lag.keys()
    assert stalled[(p, 0)] >= 90
    assert stalled[(i, 2)] < 60

    state.committed[f"{i}:2"] = 515  # another worker got further while this one did not own the partition
    state.position[f"{p}:0"] = 7_100  # this worker caught up on a partition
    lag = _gauges(state, "driftwatch_consumer_lag")
    assert (lag[(i, 2)], lag[(p, 0)]) == (5, 0)
    assert _gauges(state, "driftwatch_consumer_stalled_seconds")[(p, 0)] == 0


def test_every_assigned_input_partition_has_a_lag_series(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str], pseudonym_key: bytes
) -> None:
    """A real worker reports lag for all eight input partitions: ones it never received a message from (nothing
    committed: from the log start, 0) and one whose messages the group had already committed (0, not its 25
    messages), next to the prediction partitions it worked through (0 once done)."""
    cfg_path = unique_config(tmp_path, example_config, "lag")  # four partitions per input topic
    cfg = load_config(cfg_path)
    p, i = cfg.kafka.predictions.name, cfg.kafka.interactions.name
    predictions = [e for e in generate("baseline", events=4_000, seed=3)[0] if e["type"] == "prediction"]

    async def backlog() -> None:
        await ensure_topics(kafka_bootstrap, cfg.kafka)
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await prod.start()
        try:
            for n in range(25):
                await prod.send_and_wait(i, f'{{"already": {n}}}'.encode(), key=b"k", partition=2)
        finally:
            await prod.stop()
        # The group committed past those 25 before this worker started (as a worker that processed them would).
        group = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=cfg.kafka.app_id, enable_auto_commit=False)
        await group.start()
        try:
            tp = TopicPartition(i, 2)
            group.assign([tp])
            await group.commit({tp: 25})
            assert await group.committed(tp) == 25
        finally:
            await group.stop()

    asyncio.run(backlog())
    produce(cfg, pseudonym_key, kafka_bootstrap, predictions)
    inputs = {(topic, n) for topic in (p, i) for n in range(4)}

    seen: dict[str, object] = {}

    def settled() -> dict[tuple[str, int], float] | None:
        s = samples(
            worker.scrape("driftwatch_consumer_lag", "driftwatch_events_total", "driftwatch_events_rejected_total")
        )
        lag = {
            (dict(labels)["topic"], int(dict(labels)["partition"])): v
            for (name, labels), v in s.items()
            if name == "driftwatch_consumer_lag"
        }
        processed = s.get(("driftwatch_events_total", (("kind", "prediction"),)), 0) + sum(
            v for (name, _), v in s.items() if name == "driftwatch_events_rejected_total"
        )
        seen.update(lag=lag, processed=processed)
        if lag.keys() == inputs and not any(lag.values()) and processed >= len(predictions):
            return lag
        return None

    worker = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "worker.log")
    try:
        try:
            lag = wait_for(settled, 90, "a zero lag series for every input partition", interval=0.3)
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {seen}") from None
        s = samples(worker.scrape())
        assert s[("driftwatch_input_partitions_assigned", ())] == 8
        stalled = {
            (dict(labels)["topic"], int(dict(labels)["partition"])): v
            for (name, labels), v in s.items()
            if name == "driftwatch_consumer_stalled_seconds"
        }
        assert stalled.keys() == lag.keys()
        assert not any(stalled.values())
    finally:
        assert worker.stop() == 0, worker.log.read_text()[-3000:]
