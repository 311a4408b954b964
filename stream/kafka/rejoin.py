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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from stream.kafka import KafkaUnavailable, topic_partitions

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


def topic_checker(settings: Any) -> Callable[[str], bool]:
    """A blocking `exists(topic)` on the broker; True when it cannot tell (unreachable again)."""

    def exists(name: str) -> bool:
        try:
            return name in topic_partitions(settings, [name], timeout=10)
        except KafkaUnavailable:
            return True

    return exists


def install(
    app: Any,
    next_offset: MutableMapping[int, int],
    topic: str,
    changelog: str,
    topic_exists: Callable[[str], bool],
) -> None:
    """Hook every assignment; from the second one on, check that `changelog` still exists."""
    assignments = 0

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        nonlocal assignments
        assignments += 1
        stale = forget(app.consumer, assigned, next_offset, topic)
        if stale:
            log.warning("rejoined with %d partitions still marked as read: forgot the marks", stale)
        if assignments == 1:
            return  # the app declared its changelog just before the first join
        exists = await asyncio.get_running_loop().run_in_executor(None, topic_exists, changelog)
        if not exists:
            log.error(
                "the broker lost this worker's state (changelog topic %s is gone: a new, empty "
                "broker?); stopping so that a restart rebuilds from what the broker has",
                changelog,
            )
            await app.crash(BrokerLostState(f"changelog topic {changelog} is gone"))
