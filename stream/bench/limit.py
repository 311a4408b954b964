"""The intake limit: the worker's per-event work in a plain confluent-kafka loop, without Faust.

Same functions as `StreamWorker.intake` (decode + validate, pseudonymise, coalesce, window update,
window encode), on the same events, read from a topic of the same broker with librdkafka's
batched `consume`. No model, no producer, no changelog: what is left of the worker's intake once
Faust is gone, so `Faust intake / limit` says how much of the gap to 20k ev/s is Faust's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from schemas.validation import decode_event
from stream.bench.data import Event
from stream.intake import Item, plan_groups
from stream.privacy import Pseudonymizer
from stream.windows import apply_events, decode_window, encode_window, entry_from_event


@dataclass
class Limit:
    """Throughput of the plain loop: first record received -> last record's window stored."""

    events: int
    invalid: int
    events_per_s: float | None
    events_per_cpu_s: float | None  # this process's CPU (librdkafka's threads included)
    batches: int
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in asdict(self).items()}


class PlainIntake:
    """The worker's intake as plain functions over (key, value, partition) records."""

    def __init__(self, pseudo: Pseudonymizer, window_size: int, max_age_ms: int, max_bytes: int):
        self.pseudo, self.size, self.max_age_ms, self.max_bytes = (
            pseudo,
            window_size,
            max_age_ms,
            max_bytes,
        )
        self.store: dict[bytes, bytes] = {}  # what the memory:// table holds
        self.invalid = 0

    def batch(self, records: Iterable[tuple[bytes | None, int]]) -> int:
        """Process one fetched batch of (value, partition); return the users updated."""
        arrival = time.monotonic()
        items = []
        for ref, (value, partition) in enumerate(records):
            decoded = decode_event(value, self.max_bytes)
            if decoded.event is None:
                self.invalid += 1
                continue
            user = self.pseudo(decoded.event["user_id"]).encode()
            items.append(Item(user, entry_from_event(decoded.event), partition, arrival, ref))
        updated = 0
        now_ms = int(time.time() * 1000)
        for group in plan_groups(items, naive=False):
            for update in group:
                stored = self.store.get(update.key)
                applied = apply_events(
                    decode_window(stored) if stored is not None else None,
                    update.entries,
                    partition=update.partition,
                    now_ms=now_ms,
                    size=self.size,
                    max_age_ms=self.max_age_ms,
                )
                self.store[update.key] = encode_window(applied.window)
                updated += 1
        return updated


def consume_all(
    conf: dict[str, Any], topic: str, expected: int, intake: PlainIntake, max_batch: int
) -> Limit:
    """Read `expected` records of `topic` from the beginning through `intake`; time the loop."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({**conf, "enable.partition.eof": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        done = batches = 0
        first = cpu_first = 0.0
        deadline = time.monotonic() + 300
        while done < expected and time.monotonic() < deadline:
            messages = consumer.consume(max_batch, 1.0)
            if not messages:
                continue
            if not done:
                first, cpu_first = time.perf_counter(), time.process_time()
            intake.batch((m.value(), m.partition() or 0) for m in messages if not m.error())
            done += len(messages)
            batches += 1
        wall, cpu = time.perf_counter() - first, time.process_time() - cpu_first
    finally:
        consumer.close()
    return Limit(
        events=done,
        invalid=intake.invalid,
        events_per_s=done / wall if done and wall > 0 else None,
        events_per_cpu_s=done / cpu if done and cpu > 0 else None,
        batches=batches,
        wall_s=round(wall, 3),
    )


def measure_limit(
    bootstrap: str,
    partitions: int,
    events: list[Event],
    *,
    key: str,
    window_size: int,
    max_batch: int,
    progress: bool = False,
) -> Limit:
    """Produce `events` to fresh topics, then run the plain loop over them (records all there)."""
    from stream.bench.pipeline import produce
    from stream.bench.workerproc import Deployment
    from stream.kafka import consumer_config

    dep = Deployment(bootstrap, partitions).create()
    settings = dep.settings
    produce(settings, events, None, progress)
    pseudo = Pseudonymizer(key.encode(), "bench")
    intake = PlainIntake(
        pseudo,
        window_size,
        int(settings.window_max_age_s * 1000),
        settings.max_event_bytes,
    )
    conf = consumer_config(settings, group_id=f"bench-limit-{dep.suffix}")
    return consume_all(conf, settings.events_topic, len(events), intake, max_batch)
