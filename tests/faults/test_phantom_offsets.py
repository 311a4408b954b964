"""Phantom end offsets (DESIGN.md pitfall 12): recovery reads to what a fetch can serve.

Reproduces the broker-outage hang without a worker: a producer with cached metadata retries a
write after the broker came back empty. Tansu acknowledges it although the topic does not exist,
and once the topic is created, ListOffsets reports an end offset that no fetch ever serves.
Faust's recovery waited for that offset forever; `true_end_offsets` must return the readable end.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from faust.types import TP

from stream.kafka.broker import EmbeddedBroker
from stream.kafka.highwater import true_end_offsets
from stream.settings import Settings

pytestmark = pytest.mark.integration
TOPIC = "app-phantom-windows-changelog"


async def retried_write_to_a_lost_topic(broker: EmbeddedBroker, log: Path) -> EmbeddedBroker:
    """Write, lose the broker, queue writes to partitions 1 and 2, bring an empty broker back."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 4, 1)])[TOPIC].result(10)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=60_000)
    await producer.start()
    try:
        await (await producer.send(TOPIC, b"old", key=b"k", partition=1))  # metadata now cached
        broker.stop()
        retried = [await producer.send(TOPIC, b"lost", key=b"k", partition=p) for p in (1, 2)]
        await asyncio.sleep(1.0)
        second = EmbeddedBroker(port=broker.port, log_path=log).start()
        acked = [await asyncio.wait_for(f, 60) for f in retried]
    finally:
        await producer.stop()
    assert [m.offset for m in acked] == [0, 0]  # acknowledged by a broker without the topic
    return second


def readable(bootstrap: str, partition: int) -> int:
    """How many records a consumer can read from the partition."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "phantom-read", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(TOPIC, partition, 0)])
    count = 0
    try:
        for _ in range(40):
            message = consumer.poll(0.25)
            if message is None:
                continue
            if message.error():
                break  # end of partition
            count += 1
    finally:
        consumer.close()
    return count


def test_recovery_ends_at_the_readable_offset_not_a_phantom_one(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    second = asyncio.run(retried_write_to_a_lost_topic(fresh_broker, tmp_path / "broker2.log"))
    try:
        admin = AdminClient({"bootstrap.servers": second.bootstrap})
        assert TOPIC not in admin.list_topics(timeout=10).topics  # the acked write made no topic
        admin.create_topics([NewTopic(TOPIC, 4, 1)])[TOPIC].result(10)  # the worker declares it
        producer = Producer({"bootstrap.servers": second.bootstrap})
        producer.produce(TOPIC, b"real", key=b"k", partition=2)  # a real write after creation
        producer.flush(10)
        probe = Consumer({"bootstrap.servers": second.bootstrap, "group.id": "phantom-probe"})
        reported = {
            TP(TOPIC, p): probe.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1]
            for p in range(4)
        }
        probe.close()
        counts = {p: readable(second.bootstrap, p) for p in range(4)}

        ends = true_end_offsets(Settings(bootstrap=second.bootstrap), reported)
    finally:
        second.stop()

    # The evidence: partition 1 claims a record that no fetch serves (the phantom).
    assert reported[TP(TOPIC, 1)] == 1 and counts[1] == 0
    assert counts == {0: 0, 1: 0, 2: 1, 3: 0}
    assert {tp.partition: end for tp, end in ends.items()} == counts
