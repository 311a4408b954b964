"""After a rebalance: forget Faust's stale offset marks, and stop if the broker lost our state.

1. Faust drops every record below the last offset it read from a partition ("DROPPED MESSAGE
   ROFF") and never commits below its last commit; it forgets both only when aiokafka reports the
   partition revoked. A member that rejoins without a revocation (its session expired while the
   broker was unreachable) gets its partitions back with the old marks. After any assignment Faust
   seeks to the committed offsets, so forgetting the marks is what a revocation would have done.
2. A broker that comes back without our data (the embedded broker keeps everything in memory; a
   real cluster restored empty) has no changelog topic and restarts every partition at offset 0.
   The consumer would keep its old positions (silently skipping the new records below them) and
   window writes would go to a topic that no longer exists (measured: the worker stalled, or
   dropped the first events sent after the restart). Kafka Streams stops on missing changelogs
   too: we log one clear line and stop, and a restart rebuilds everything from what the broker has.
   The check runs after every assignment but the first, and when the broker probe sees the broker
   again after an outage. Until then the worker takes no events (`StateCheck.verified`): a consumer
   whose session expired keeps fetching at its old positions, and the embedded broker acknowledges
   writes to topics it does not have, then fails the first writes once they exist (measured: the
   restarted worker stopped on `AlreadyExists` from Tansu's storage for outcomes-changelog).
3. Offsets committed without a changelog are not to be trusted (`reset_offsets_without_state`):
   the stopping worker's last commit can land on the new broker (Tansu accepts commits for topics
   it does not have), and the restarted worker then started past the new broker's first events
   and never predicted them (measured in the broker-outage fault scenario). A group whose
   changelog topic is missing starts again from the beginning of each events partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from stream.kafka import KafkaUnavailable, client_config, topic_partitions

log = logging.getLogger("bstream.rejoin")
BOOKKEEPING = ("_read_offset", "_committed_offset", "_acked", "_acked_index", "_gap")


class BrokerLostState(RuntimeError):
    """The broker no longer has this worker's changelog: its data was lost."""


def forget(consumer: Any, assigned: Any, next_offset: MutableMapping[int, int], topic: str) -> int:
    """Drop the consumer's read/ack/commit marks (and our lag marks) for the assigned partitions."""
    stale = 0
    for tp in assigned:
        for name in BOOKKEEPING:
            state = getattr(consumer, name, None)
            if state is not None and state.pop(tp, None) is not None and name == "_read_offset":
                stale += 1
        if tp.topic == topic:
            next_offset.pop(tp.partition, None)
    return stale


def reset_offsets_without_state(settings: Any, changelog: str, timeout: float = 10.0) -> int:
    """Before the first join: committed events offsets but no changelog -> back to the start.

    Returns how many partitions were reset (0 when the changelog exists or nothing was committed).
    """
    found = topic_partitions(settings, [changelog, settings.events_topic], timeout)
    if changelog in found or settings.events_topic not in found:
        return 0
    consumer = Consumer({**client_config(settings), "group.id": settings.app_id})
    try:
        partitions = [
            TopicPartition(settings.events_topic, p) for p in range(found[settings.events_topic])
        ]
        stale = [tp for tp in consumer.committed(partitions, timeout=timeout) if tp.offset >= 0]
        if not stale:
            return 0
        starts = [
            TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout)[0])
            for tp in stale
        ]
        consumer.commit(offsets=starts, asynchronous=False)
    finally:
        consumer.close()
    log.warning(
        "group %s has committed offsets on %d partitions of %s but no changelog topic %s (a "
        "broker that lost its data, or a deleted changelog): starting them from the beginning, "
        "so that no event is skipped",
        settings.app_id,
        len(stale),
        settings.events_topic,
        changelog,
    )
    return len(stale)


def topic_checker(settings: Any) -> Callable[[str], bool]:
    """A blocking `exists(topic)` on the broker; True when it cannot tell (unreachable again)."""

    def exists(name: str) -> bool:
        try:
            return name in topic_partitions(settings, [name], timeout=10)
        except KafkaUnavailable:
            return True

    return exists


class StateCheck:
    """Whether the broker still has our changelog; `verified` is clear from an outage to a check."""

    def __init__(self, app: Any, changelog: str, topic_exists: Callable[[str], bool]) -> None:
        self.app, self.changelog, self.topic_exists = app, changelog, topic_exists
        self.verified = asyncio.Event()
        self.verified.set()
        self.lost = False

    def broker_down(self) -> None:
        """The broker was unreachable: hold intake until it is checked again."""
        self.verified.clear()

    async def broker_up(self) -> None:
        """The broker is reachable: check it once if an outage came before."""
        if not self.verified.is_set():
            await self.check()

    async def check(self) -> None:
        """Stop the worker when the changelog is gone; otherwise let intake go on."""
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self.topic_exists, self.changelog):
            self.verified.set()
            return
        if self.lost:
            return  # the probe and a rejoin can both find it: one line, one crash
        self.lost = True
        log.error(
            "the broker lost this worker's state (changelog topic %s is gone: a new, empty "
            "broker?); stopping so that a restart rebuilds from what the broker has",
            self.changelog,
        )
        await self.app.crash(BrokerLostState(f"changelog topic {self.changelog} is gone"))


def install(app: Any, next_offset: MutableMapping[int, int], topic: str, state: StateCheck) -> None:
    """Hook every assignment; from the second one on, check that the changelog still exists."""
    assignments = 0

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        nonlocal assignments
        assignments += 1
        stale = forget(app.consumer, assigned, next_offset, topic)
        if stale:
            log.warning("rejoined with %d partitions still marked as read: forgot the marks", stale)
        if assignments > 1:  # the app declared its changelog just before the first join
            await state.check()
