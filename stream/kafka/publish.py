"""Publishing: Kafka's murmur2 partitioner, and records handed to the producer in batches.

>>> key_partition(b"user-1", 4), key_partition(None, 4, fallback=6)
(0, 2)
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Awaitable, Sequence
from typing import Any

from stream.outputs import OutRecord

M, SEED, MASK = 0x5BD1E995, 0x9747B28C, 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java client and aiokafka), word at a time: ~4x faster than aiokafka's."""
    length = len(data)
    h = (SEED ^ length) & MASK
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * M) & MASK
        k = ((k ^ (k >> 24)) * M) & MASK
        h = ((h * M) & MASK) ^ k
    tail = data[words * 4 :]
    if tail:
        h = ((h ^ int.from_bytes(tail, "little")) * M) & MASK
    h = ((h ^ (h >> 13)) * M) & MASK
    return h ^ (h >> 15)


@functools.lru_cache(maxsize=1 << 16)
def _murmur2_partition(key: bytes, count: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % count


def key_partition(key: bytes | None, count: int, fallback: int = 0) -> int:
    """murmur2 partition of a key, like aiokafka's and Java's default; keyless: `fallback`."""
    if key is None:
        return fallback % count
    return _murmur2_partition(key, count)


def group_by_partition(records: Sequence[OutRecord], count: int) -> dict[int, list[OutRecord]]:
    """Records per target partition, each list in input order."""
    groups: dict[int, list[OutRecord]] = {}
    for record in records:
        partition = (
            record.partition if record.partition is not None else key_partition(record.key, count)
        )
        groups.setdefault(partition % count, []).append(record)
    return groups


class Publisher:
    """Publishes through the Faust app's own aiokafka producer, one record batch per partition.

    One future per batch instead of one per record: Faust's per-message send path was the largest
    single cost on the event loop (profiled). Faust's flush-before-commit still covers these sends.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._counts: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def _producer(self) -> Any:
        return self.app.producer._ensure_producer()  # the AIOKafkaProducer Faust runs

    async def partition_count(self, topic: str) -> int:
        """Partitions of `topic` (cached: topics never shrink)."""
        if topic not in self._counts:
            self._counts[topic] = len(await self._producer().partitions_for(topic))
        return self._counts[topic]

    async def send(self, topic: str, records: Sequence[OutRecord]) -> None:
        """Send records and return once the broker acknowledged every one of them."""
        await asyncio.gather(*await self.enqueue(topic, records))

    async def enqueue(self, topic: str, records: Sequence[OutRecord]) -> list[Awaitable[Any]]:
        """Hand records to the producer; the returned futures resolve on the broker's acks.

        Calls hand over in call order (a FIFO lock), even when a full producer buffer makes one
        wait: a window's changelog records and its tombstone cannot overtake each other.
        """
        async with self._lock:
            if not records:
                return []
            count = await self.partition_count(topic)
            pending: list[Awaitable[Any]] = []
            for partition, group in group_by_partition(records, count).items():
                pending.extend(await self._enqueue_partition(topic, partition, group))
            return pending

    async def _enqueue_partition(
        self, topic: str, partition: int, group: Sequence[OutRecord]
    ) -> list[Awaitable[Any]]:
        producer = self._producer()
        pending: list[Awaitable[Any]] = []
        batch = producer.create_batch()
        for record in group:
            if self._append(batch, record):
                continue
            if batch.record_count():
                pending.append(await self._submit(producer, batch, topic, partition))
            batch = producer.create_batch()
            if not self._append(batch, record):  # larger than a whole batch: send it alone
                headers = list(record.headers)
                alone = await producer.send(
                    topic, record.value, record.key, partition, None, headers
                )
                pending.append(alone)
                batch = producer.create_batch()
        if batch.record_count():
            pending.append(await self._submit(producer, batch, topic, partition))
        return pending

    @staticmethod
    async def _submit(producer: Any, batch: Any, topic: str, partition: int) -> Any:
        batch.close()  # a closed batch goes out at once instead of lingering for more records
        return await producer.send_batch(batch, topic, partition=partition)

    @staticmethod
    def _append(batch: Any, record: OutRecord) -> bool:
        meta = batch.append(
            key=record.key, value=record.value, timestamp=None, headers=list(record.headers)
        )
        return meta is not None
