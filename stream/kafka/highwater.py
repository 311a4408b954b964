"""True end offsets for changelog recovery: what a fetch can read, not what ListOffsets claims.

Faust recovers a table by reading each changelog partition up to the end offset that ListOffsets
reports, and waits until it has read that far. Two ways the embedded broker (Tansu v0.6.0, memory
storage) reports an end that differs from what a fetch returns (DESIGN.md pitfalls 4 and 12):
- it under-reports: after one produce request of 10 records at offsets 1..10 it reports 2 (the
  last batch's base offset + 1), so recovery silently dropped the tail of the last batch;
- it over-reports (a phantom end offset): a produce for a topic that does not exist yet is
  acknowledged and bumps the partition's ListOffsets end, but once the topic is created no fetch
  ever returns that record. Recovery then waits forever for an offset that cannot be read.
We fetch each partition from `reported - 1` until the broker says end of partition (the fetch
response's own high watermark) and use that offset. On a real Kafka cluster it equals the reported
value. A partition that gives no end-of-partition answer in time keeps max(reported, read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from stream.kafka import client_config
from stream.settings import Settings

log = logging.getLogger("bstream.recovery")
PROBE_TIMEOUT_S = 10.0
POLL_S = 0.25


def _read_to_end(
    consumer: Any, starts: Mapping[tuple[str, int], int]
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Fetch from `starts` until each partition reports its end: (read up to, end reported at)."""

    read: dict[tuple[str, int], int] = {}  # offset after the last record fetched
    at_end: dict[tuple[str, int], int] = {}  # where the broker said end of partition
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while len(at_end) < len(starts) and time.monotonic() < deadline:
        for message in consumer.consume(10_000, POLL_S):
            key = (str(message.topic()), int(message.partition() or 0))
            if key not in starts:
                continue
            error = message.error()
            offset = int(message.offset() or 0)
            if error is None:
                read[key] = max(read.get(key, 0), offset + 1)
                at_end.pop(key, None)
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end[key] = offset
    consumer.unassign()
    return read, at_end


def true_end_offsets(settings: Settings, reported: Mapping[Any, int]) -> dict[Any, int]:
    """Per TP (anything with .topic and .partition): the offset after its last readable record."""

    ends = dict(reported)
    probe = {
        (tp.topic, tp.partition): tp for tp, hw in reported.items() if hw is not None and hw > 0
    }
    if not probe:
        return ends
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": "bstream-highwater-probe",
            "enable.auto.commit": False,
            "enable.partition.eof": True,  # the fetch's own high watermark, per partition
            "auto.offset.reset": "earliest",  # a start beyond the readable end rereads it all
        }
    )
    try:
        read, at_end = _read_to_end(consumer, {key: reported[tp] - 1 for key, tp in probe.items()})
        # An end reported right where we started, with nothing read there: the record before it
        # may be missing too (phantom offsets above readable ones), so read those from the start.
        again = {k: OFFSET_BEGINNING for k, end in at_end.items() if end > 0 and k not in read}
        if again:
            more_read, more_end = _read_to_end(consumer, again)
            read.update(more_read)
            at_end.update(more_end)
    finally:
        consumer.close()
    for key, tp in probe.items():
        claimed = reported[tp]
        if key in at_end:
            ends[tp] = max(at_end[key], read.get(key, 0))
            if ends[tp] < claimed:
                log.warning(
                    "changelog %s partition %d: the broker reports end offset %d but records "
                    "can only be read up to offset %d; recovering up to there (a phantom end "
                    "offset, DESIGN.md pitfall 12)",
                    key[0],
                    key[1],
                    claimed,
                    ends[tp],
                )
        else:
            ends[tp] = max(claimed, read.get(key, 0))
    return ends


def install(consumer: Any, settings: Settings) -> None:
    """Make a Faust consumer's `highwaters` (used by table recovery) return true end offsets."""
    reported_highwaters = consumer.highwaters

    async def highwaters(*partitions: Any) -> Mapping[Any, int]:
        reported = await reported_highwaters(*partitions)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, true_end_offsets, settings, reported)

    consumer.highwaters = highwaters
