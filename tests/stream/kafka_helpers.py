"""Real-Kafka helpers for the stream tests: unique topics, reading a topic back, running the CLI."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from click.testing import CliRunner, Result
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stream.cli import main


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def make_topic(bootstrap: str, partitions: int = 4, prefix: str = "t") -> str:
    """Create a topic with a unique name and return the name."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    return name


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Record]:
    """Every record of `topic` from the beginning, in (partition, offset) order.

    Reads until `expected` records arrived, then briefly longer so extra records would show up.
    """
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is None and len(records) >= expected:
                settle_until = time.monotonic() + 0.5
            if settle_until is not None and time.monotonic() > settle_until:
                break
            for message in consumer.consume(10_000, 0.2):
                error = message.error()
                if error is not None:
                    raise AssertionError(error.str())
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None
                records.append(Record(partition, offset, message.key(), message.value()))
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) pairs and wait until every one is acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    errors: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for key, value in records:
        producer.produce(topic, value, key, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors, errors


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run `bstream ARGS` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
