"""True end offsets for brokers that under-report the high watermark, so recovery reads it all.

The embedded broker (Tansu v0.6.0, memory storage) answers ListOffsets(latest) with the last record
batch's base offset + 1, not its last offset + 1: after one produce request of 10 records at
offsets 1..10 it reports 2. Faust recovers a table by reading its changelog up to that high
watermark, so it would silently drop the tail of the last changelog batch (measured: windows
missing their last update after a restart). We read from `reported - 1` to the real end instead.
On a real Kafka cluster this returns the reported value unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from stream.kafka import client_config
from stream.settings import Settings

FIRST_RECORD_TIMEOUT_S = 5.0
IDLE_S = 0.25


def true_end_offsets(settings: Settings, reported: Mapping[Any, int]) -> dict[Any, int]:
    """For each TP (any object with .topic and .partition) the offset after its last record."""

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
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, reported[tp] - 1) for (t, p), tp in probe.items()])
        deadline = time.monotonic() + FIRST_RECORD_TIMEOUT_S
        seen: set[tuple[str, int]] = set()
        while time.monotonic() < deadline:
            messages = consumer.consume(10_000, IDLE_S)
            if not messages and len(seen) == len(probe):
                break  # every partition answered and nothing more came: at the end
            for message in messages:
                if message.error():
                    continue
                key = (str(message.topic()), int(message.partition() or 0))
                seen.add(key)
                ends[probe[key]] = max(ends[probe[key]], int(message.offset() or 0) + 1)
    finally:
        consumer.close()
    return ends


def install(consumer: Any, settings: Settings) -> None:
    """Make a Faust consumer's `highwaters` (used by table recovery) return true end offsets."""
    reported_highwaters = consumer.highwaters

    async def highwaters(*partitions: Any) -> Mapping[Any, int]:
        reported = await reported_highwaters(*partitions)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, true_end_offsets, settings, reported)

    consumer.highwaters = highwaters
