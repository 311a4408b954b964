"""The worker's erasure agent: read every control partition, delete owned windows, confirm.

Each worker reads the whole control topic with its own confluent-kafka consumer (manual
assignment, no group), from the beginning: requests younger than `HORIZON_S` that no confirmation
covers yet are applied once the replay has caught up, so a request sent while a worker restarts
is not lost. Deleting a window writes a changelog tombstone to the window's own partition
(like idle expiry); the confirmation is published only after the broker acknowledged that
tombstone. The raw user id of a request is pseudonymised on receipt and never logged;
confirmations carry the pseudonym.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from stream.clock import now_ms
from stream.control import (
    HORIZON_S,
    BadControlRecord,
    EraseDone,
    EraseRequest,
    Ledger,
    caught_up,
    encode_record,
    parse_record,
    record_key,
)
from stream.kafka import KafkaUnavailable
from stream.kafka.app import StreamApp
from stream.kafka.clients import assigned_reader, end_offsets
from stream.kafka.publish import Publisher
from stream.kafka.store import WindowStore
from stream.metrics import Metrics
from stream.outputs import OutRecord
from stream.privacy import Pseudonymizer
from stream.settings import Settings
from stream.upkeep import active_partitions

log = logging.getLogger("bstream.erasure")
POLL_INTERVAL_S = 0.25
MAX_RECORDS = 5000  # per poll: a long control topic replays quickly at start


class Eraser:
    """Applies one erase request to the windows this worker owns (no Kafka: see stream.testing)."""

    def __init__(self, store: WindowStore, pseudonymizer: Pseudonymizer, metrics: Metrics) -> None:
        self.store, self.pseudo, self.metrics = store, pseudonymizer, metrics
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.quality: Any = None  # stream.quality.Quality: its pending outcomes are erased too

    def apply(
        self, request: EraseRequest, partitions: list[int], tombstones: list[OutRecord]
    ) -> EraseDone:
        """Erase the user's window if it lives in `partitions` (adding its tombstone); confirm."""
        user = self.pseudo(request.user_id)
        key = user.encode()
        tombstone = self.store.remove(key, owned=partitions)
        if self.quality is not None and self.quality.forget(key, partitions):
            log.info("erased the pending outcomes of user %s...", user[:12])
        erased = tombstone is not None
        if tombstone is not None:
            tombstones.append(tombstone)  # to the window's own changelog partition
            self.metrics.erasures.inc()
            self.metrics.active_windows.dec()
            log.info("erased the window of user %s... (request %s)", user[:12], request.request_id)
        return EraseDone(
            request.request_id,
            user,
            self.pseudo.key_id,
            erased,
            tuple(partitions),
            self.worker_id,
            now_ms(),
        )


class EraseAgent(Eraser):
    """Applies erase requests from the control topic to the windows this worker owns."""

    def __init__(
        self,
        settings: Settings,
        sapp: StreamApp,
        pseudonymizer: Pseudonymizer,
        metrics: Metrics,
        publisher: Publisher,
        store: WindowStore,
    ) -> None:
        super().__init__(store, pseudonymizer, metrics)
        self.settings, self.sapp, self.publisher = settings, sapp, publisher
        self.ledger = Ledger(sapp.partitions, HORIZON_S * 1000)
        self.consumer, self.ends = _control_consumer(settings)
        self.positions: dict[int, int] = {}

    def poll(self) -> None:
        """Take in what the consumer has fetched so far (never blocks the event loop)."""
        for message in self.consumer.consume(MAX_RECORDS, 0):
            if message.error():
                continue
            partition, offset = int(message.partition() or 0), int(message.offset() or 0)
            self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)
            try:
                record = parse_record(message.value())
            except BadControlRecord as exc:
                log.warning("skipped control record %d@%d: %s", offset, partition, exc)
                continue
            self.ledger.observe(record, now_ms())

    async def tick(self) -> None:
        """Poll, then apply due requests to owned partitions and publish the confirmations."""
        self.poll()
        if not caught_up(self.positions, self.ends):
            return  # still replaying: a confirmation further on may cover a request already
        due = self.ledger.due(active_partitions(self.sapp), now_ms())
        tombstones: list[OutRecord] = []
        confirmations = [self.apply(request, parts, tombstones) for request, parts in due]
        if confirmations:
            acks = await self.store.publish(tombstones)
            if self.quality is not None:
                await self.quality.flush()
            await asyncio.gather(*acks)  # the tombstones are durable before we confirm
            await self.publisher.send(
                self.settings.control_topic,
                [OutRecord(record_key(c), encode_record(c)) for c in confirmations],
            )
        for done in confirmations:  # only once published: a failed send is retried next tick
            self.ledger.mark(done.request_id, done.partitions)

    def close(self) -> None:
        self.consumer.close()


def _control_consumer(settings: Settings) -> tuple[Any, dict[int, int]]:
    """A reader of every control partition from the start, and their end offsets."""
    group = f"{settings.app_id}-control"  # never joined: partitions are assigned
    consumer = assigned_reader(settings, settings.control_topic, group)
    try:
        return consumer, end_offsets(settings, consumer)
    except KafkaUnavailable:
        consumer.close()
        raise


def install_erasure(
    sapp: StreamApp,
    settings: Settings,
    pseudonymizer: Pseudonymizer,
    metrics: Metrics,
    publisher: Publisher,
    store: WindowStore,
) -> EraseAgent:
    """Create the agent and register its timer on the Faust app; close() it on shutdown."""
    agent = EraseAgent(settings, sapp, pseudonymizer, metrics, publisher, store)

    @sapp.app.timer(POLL_INTERVAL_S, name="bstream.erasure")
    async def erasure() -> None:
        try:
            await agent.tick()
        except Exception as exc:  # noqa: BLE001 - e.g. a broker outage: retried on the next tick
            log.warning("erasure step failed, will retry: %s: %s", type(exc).__name__, exc)

    return agent
