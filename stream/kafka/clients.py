"""confluent-kafka clients for the commands, the registry and erasure: assigned readers, a sender.

A reader joins no consumer group and commits nothing: it is assigned every partition of one topic,
from the oldest record or from the high watermark now. Failures become KafkaUnavailable with one
line, so callers need no Kafka exception types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from stream.kafka import KafkaUnavailable, Partitioner, client_config, producer_config
from stream.kafka.highwater import true_end_offsets
from stream.settings import Settings

Start = Literal["beginning", "end"]


class TopicMissing(KafkaUnavailable):
    """The topic does not exist (or the broker reports an error for it)."""


def assigned_reader(
    settings: Settings,
    topic: str,
    group_id: str,
    start: Start = "beginning",
    back: int = 0,
    timeout: float = 10.0,
) -> Any:
    """A consumer assigned to every partition of `topic`, from the start or the end.

    "end" is the high watermark at the call (minus `back` records), so a caller that reports
    ready afterwards sees everything sent after that.
    """
    consumer = Consumer(
        {**client_config(settings), "group.id": group_id, "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            raise TopicMissing(f"topic {topic!r} is not available: {meta.error.str()}")
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        if start == "beginning":
            offsets = dict.fromkeys(parts, OFFSET_BEGINNING)
        else:
            offsets = {tp: max(0, _high(consumer, tp, timeout) - back) for tp in parts}
        consumer.assign([TopicPartition(topic, tp.partition, o) for tp, o in offsets.items()])
    except KafkaException as exc:
        consumer.close()
        raise KafkaUnavailable(f"cannot read {topic!r}: {exc.args[0].str()}") from None
    except KafkaUnavailable:
        consumer.close()
        raise
    return consumer


def _high(consumer: Any, tp: Any, timeout: float = 10.0) -> int:
    return int(consumer.get_watermark_offsets(tp, timeout=timeout)[1])


def end_offsets(settings: Settings, consumer: Any, timeout: float = 10.0) -> dict[int, int]:
    """Per assigned partition: the offset after its last readable record (see highwater.py)."""
    try:
        reported = {tp: _high(consumer, tp, timeout) for tp in consumer.assignment()}
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot read end offsets: {exc.args[0].str()}") from None
    return {tp.partition: end for tp, end in true_end_offsets(settings, reported).items()}


Record = tuple[bytes | None, bytes | None]


class TopicReader:
    """Every record of one topic, from the oldest up to its end when the reader was made.

    `missing_ok` reads an absent topic as empty. `poll` returns (key, value) pairs as they come;
    `caught_up` says when every partition reached its end.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group_id: str,
        timeout: float = 10.0,
        missing_ok: bool = False,
    ) -> None:
        self.consumer: Any = None
        self.ends: dict[int, int] = {}
        self.positions: dict[int, int] = {}
        try:
            self.consumer = assigned_reader(settings, topic, group_id, timeout=timeout)
        except TopicMissing:
            if missing_ok:
                return
            raise
        try:
            self.ends = end_offsets(settings, self.consumer, timeout)
        except KafkaUnavailable:
            self.close()
            raise

    def poll(self, wait: float = 0.0, max_records: int = 10_000) -> list[Record]:
        """The records fetched within `wait` seconds."""
        if self.consumer is None:
            return []
        records: list[Record] = []
        for message in self.consumer.consume(max_records, wait):
            if message.error():
                continue
            partition, offset = int(message.partition() or 0), int(message.offset() or 0)
            self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)
            records.append((message.key(), message.value()))
        return records

    def caught_up(self) -> bool:
        return all(self.positions.get(p, 0) >= end for p, end in self.ends.items())

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


class Sender:
    """A confluent-kafka producer: queue records, serve their deliveries, flush.

    `delivered` gets None or the error of each record once the broker answered.
    """

    def __init__(
        self,
        settings: Settings,
        delivered: Callable[[str | None], None],
        partitioner: Partitioner = "murmur2",
        idempotent: bool = False,
    ) -> None:
        self.producer = Producer(producer_config(settings, partitioner, idempotent))

        def on_delivery(err: Any, _msg: Any) -> None:
            delivered(None if err is None else err.str())

        self.on_delivery = on_delivery

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> str | None:
        """Queue one record, serving deliveries while the local queue is full.

        Returns the reason when the client refused the record at once (e.g. larger than
        message.max.bytes), else None.
        """
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self.on_delivery)
                return None
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                return str(exc.args[0].str())

    def poll(self, timeout: float) -> None:
        """Serve delivery reports for up to `timeout` seconds."""
        self.producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Wait for every queued record's delivery; how many are still queued after `timeout`."""
        return int(self.producer.flush(timeout))
