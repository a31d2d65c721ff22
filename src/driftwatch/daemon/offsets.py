"""Where a partition ends, as a fetch sees it.

A consumer asks the broker for the end of a partition with ListOffsets. Kafka
answers with the high watermark, but some Kafka-protocol brokers answer
with the base offset of the partition's last record batch plus one: Tansu
(the test and demo broker) does, so when a producer sent several records in
one batch (the intents of one ingest call, a burst of alerts) the listed end
stops short of them. Recovery that reads "up to the end" would then miss the
newest intents or summaries. A fetch response carries the true high
watermark, so :func:`end_offsets` fetches the last listed record and takes
the larger of the two.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["end_offsets"]

_ATTEMPTS = 10


async def end_offsets(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset the next record of each partition will get. Assigns ``tps`` to the consumer unless they are, and
    moves its positions: seek after."""
    if not set(tps) <= consumer.assignment():
        consumer.assign(list(tps))
    ends = {tp: int(o) for tp, o in (await consumer.end_offsets(list(tps))).items()}
    unsure = [tp for tp in tps if ends[tp] > 0]  # an empty partition lists 0 on every broker
    for tp in unsure:
        consumer.seek(tp, ends[tp] - 1)  # a record of the last batch: its fetch reports the high watermark
    for _ in range(_ATTEMPTS):
        if not unsure:
            break
        await consumer.getmany(*unsure, timeout_ms=500, max_records=1)
        left = []
        for tp in unsure:
            hw = consumer.highwater(tp)
            if hw is None:
                left.append(tp)
            else:
                ends[tp] = max(ends[tp], int(hw))
        unsure = left
    return ends
