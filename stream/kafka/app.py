"""The Faust app, its topics and the windows table, built from Settings.

The windows table writes each key's changelog record to the partition that key's events were
consumed from (see `PinnedTable`), so windows stay co-partitioned with their events whatever
partitioner the producers used (DESIGN.md pitfalls 1 and 2).
"""

from __future__ import annotations

import contextlib
import ssl
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import faust
from faust import streams as faust_streams
from faust.types import EventT, TopicT

from stream.kafka import faustpatch, recovery
from stream.kafka.store import Sink, TableStore
from stream.settings import Settings

WINDOWS_TABLE = "windows"
S = TypeVar("S", bound=TableStore)


class PartitionNotPinned(RuntimeError):
    """A table write happened without saying which events partition the key belongs to."""


class PinnedTable(faust.Table):  # type: ignore[misc]
    """A Table whose changelog records go to the partition the writer names.

    The worker writes through `stream.kafka.store` (one producer batch per partition for all the
    changelog records of a job, handed over with its predictions): Faust's own write path
    (`table[key] = value`) costs a future, a buffer entry and a producer call per key, the largest
    share of the event loop after the consumer (profiled). That path still works for keys pinned
    with `pin`, and raises PartitionNotPinned otherwise.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, use_partitioner=True, **kwargs)
        self._pins: dict[Any, int] = {}

    def pin(self, key: Any, partition: int) -> None:
        """Route the next Faust-path changelog record of `key` to `partition`."""
        self._pins[key] = partition

    def partition_for_key(self, key: Any) -> int:
        try:
            return self._pins.pop(key)
        except KeyError:
            raise PartitionNotPinned("windows table written without a pinned partition") from None


@contextlib.contextmanager
def as_current_event(event: EventT) -> Iterator[None]:
    """Make `event` Faust's current event while a table is written outside stream iteration.

    The RocksDB store picks its per-partition database from the current event (the memory store
    ignores it); the changelog partition itself is the one the store's record names.
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


@dataclass
class StreamApp:
    """The Faust app with everything the worker wires together."""

    app: faust.App
    windows: PinnedTable
    events: TopicT
    partitions: int


def broker_urls(bootstrap: str) -> list[str]:
    """Faust broker URLs from a comma-separated bootstrap list."""
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials (SASL and/or TLS) from Settings; None for PLAINTEXT."""
    protocol = settings.security_protocol
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.ssl_cafile) if settings.ssl_cafile else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=settings.sasl_mechanism or "PLAIN",
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


faustpatch.install()  # 100 ms fetch wait, eager hand-over of fetched messages (measured)
recovery.forbid_topic_auto_creation()  # no client write may create a topic (DESIGN pitfall 12)


def create_app(settings: Settings, partitions: int | None = None) -> StreamApp:
    """Build the app; `partitions` is the events topic's count (default: Settings.partitions)."""
    n = partitions or settings.partitions
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.bootstrap),
        broker_credentials=broker_credentials(settings),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 4),
        broker_commit_interval=1.0,
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=n,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        # a few ms batch each micro-batch's records per request; naive mode publishes one event
        # at a time and waits for its ack, so a linger would only add idle time there
        producer_linger=0.0 if settings.naive else 0.005,
        producer_max_batch_size=256 * 1024,
        stream_buffer_maxsize=max(4096, 4 * settings.max_batch),
        web_enabled=False,  # /metrics and /health are served by stream.metrics instead
        autodiscover=False,
    )
    # Each batch writes up to max_batch changelog records at once; Faust warns above this size.
    app.producer.buffer.max_messages = max(100, 2 * settings.max_batch)
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    windows: PinnedTable = app.tables.add(  # type: ignore[assignment]
        PinnedTable(
            app,
            name=WINDOWS_TABLE,
            beacon=app.tables.beacon,
            partitions=n,
            key_type=bytes,
            value_type=bytes,
        )
    )
    return StreamApp(
        app=app,
        windows=windows,
        events=app.topic(settings.events_topic, partitions=n, **raw),
        partitions=n,
    )


def open_store(kind: type[S], table: PinnedTable, settings: Settings, sink: Sink) -> S:
    """A store over a Faust table: its local data, its changelog topic, the RocksDB binding."""
    bind = None if settings.store.startswith("memory:") else as_current_event
    return kind(table.data, table.changelog_topic.get_topic_name(), sink, bind)


def run_app(sapp: StreamApp, loglevel: str = "info") -> None:
    """Run the app's Faust worker until SIGTERM/SIGINT."""
    faust.Worker(sapp.app, loglevel=loglevel, quiet=True).execute_from_commandline()
