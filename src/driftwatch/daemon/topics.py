"""Topic set-up: create what is missing, never alter what exists, refuse mismatched co-partitioning."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftwatch.config import Config, KafkaConfig, TopicConfig
from driftwatch.errors import StreamingError

__all__ = ["StreamingError", "alerting_topics", "bootstrap_hosts", "ensure_topics"]


def bootstrap_hosts(bootstrap: str) -> list[str]:
    """``host:port`` of each bootstrap server, without a scheme or credentials (safe to log and print).

    >>> bootstrap_hosts("SASL_SSL://user:secret@b1:9093, b2:9092")
    ['b1:9093', 'b2:9092']
    """
    return [s.strip().rpartition("://")[2].rpartition("@")[2] for s in bootstrap.split(",") if s.strip()]


async def ensure_topics(bootstrap: str, kafka: KafkaConfig, extra: Sequence[TopicConfig] = ()) -> dict[str, int]:
    """Create missing topics (``extra``: e.g. the audit and control topics); return partitions per topic;
    raise StreamingError if inputs are not co-partitioned."""
    wanted: list[TopicConfig] = [
        kafka.predictions,
        kafka.interactions,
        kafka.dead_letter,
        kafka.summaries,
        kafka.alerts,
        *extra,
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except Exception as e:  # aiokafka raises several unrelated types for an unreachable broker
        raise StreamingError(
            f"cannot reach the Kafka broker at {bootstrap}: {e}. Is it running? (--bootstrap / DRIFTWATCH_BOOTSTRAP)"
        ) from e
    try:
        existing = set(await admin.list_topics())
        # State topics follow the partitioning of what they checkpoint: one state partition per input / summary partition.
        wanted += [
            TopicConfig(
                name=kafka.ingest_state,
                partitions=kafka.predictions.partitions,
                replication=kafka.predictions.replication,
            ),
            TopicConfig(
                name=kafka.eval_state, partitions=kafka.summaries.partitions, replication=kafka.summaries.replication
            ),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication) for t in missing]
            )
        described = await admin.describe_topics([t.name for t in wanted])
        parts = {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()
    p, i = parts.get(kafka.predictions.name, 0), parts.get(kafka.interactions.name, 0)
    if p != i:
        raise StreamingError(
            f"topics {kafka.predictions.name} ({p} partitions) and {kafka.interactions.name} ({i} partitions) "
            "are not co-partitioned: interactions would not meet their predictions. Give both the same partition "
            "count (and key both by request_id)."
        )
    for state, source in ((kafka.ingest_state, kafka.predictions.name), (kafka.eval_state, kafka.summaries.name)):
        if parts.get(state, 0) < parts.get(source, 0):
            raise StreamingError(
                f"state topic {state} has {parts.get(state, 0)} partitions but {source} has {parts.get(source, 0)}: "
                f"it needs at least as many (one per partition it checkpoints). Recreate {state} with "
                f"{parts.get(source, 0)} partitions, or name a new one in kafka.{'ingest_state' if state == kafka.ingest_state else 'eval_state'}."
            )
    return parts


def alerting_topics(config: Config) -> list[TopicConfig]:
    """The alerting side's topics that ``ensure_topics`` should also create: the audit copy and the control topic."""
    al = config.alerting
    return [al.audit.topic, al.control_topic]
