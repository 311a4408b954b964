"""The one owner of table state: local reads and writes, their changelog records, their publishing.

The worker, upkeep and erasure change windows only through `WindowStore`; `stream.quality` keeps
its outcomes table in a `TableStore`. Each write changes the local store and returns its changelog
record (key, value or tombstone, the key's events partition), which the caller hands to `publish`
with the rest of its batch, in order. A record put before a later removal of its key is dropped on
the way (`still_current`), so the tombstone stays last. Over a Faust table (its store, changelog
topic and RocksDB binding) it is built by `stream.kafka.app.open_store`; in process
(`stream.testing`) a plain dict serves as the store.

>>> store = WindowStore({}, "windows-changelog", sink=None)
>>> record = store.put(b"u", Window(2, 10, ((5, 0, "i", None, None, "e"),)))
>>> record.partition, store.get(b"u").last_ts
(2, 5)
>>> store.remove(b"u", owned={1}) is None, store.remove(b"u", owned={2}).value is None
(True, True)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterator, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from stream.outputs import OutRecord
from stream.windows import Window, decode_window, encode_window, is_expired


class Sink(Protocol):
    """Where records go: the Kafka `Publisher`, or an in-process list (`stream.testing`)."""

    async def enqueue(self, topic: str, records: Sequence[OutRecord]) -> list[Awaitable[Any]]: ...


# Binds a write to the consumed event it stems from (RocksDB picks its partition's database so).
Bind = Callable[[Any], AbstractContextManager[Any]]


class TableStore:
    """A changelog-backed table of bytes: its local data and the changelog records of writes."""

    def __init__(
        self,
        data: MutableMapping[bytes, bytes],
        changelog_topic: str,
        sink: Sink | None,
        bind: Bind | None = None,
    ) -> None:
        self.data, self.changelog_topic, self.sink, self.bind = data, changelog_topic, sink, bind
        # Removals by tick, so that a changelog record published after its prediction (see
        # StreamWorker.release) is dropped when its key was erased or expired in the meantime.
        self.tick = 0
        self._removed: dict[bytes, int] = {}

    def raw(self, key: bytes) -> bytes | None:
        """The stored value of `key` (None when absent)."""
        return self.data.get(key)

    def put_raw(self, key: bytes, value: bytes, partition: int, event: Any = None) -> OutRecord:
        """Store `value` locally; its changelog record for `partition`."""
        if self.bind is None or event is None:
            self.data[key] = value
        else:
            with self.bind(event):
                self.data[key] = value
        return OutRecord(key, value, partition=partition)

    def delete(self, key: bytes, partition: int) -> OutRecord | None:
        """Delete `key` locally; its changelog tombstone for `partition` (None when absent)."""
        if self.data.get(key) is None:
            return None
        del self.data[key]
        self.tick += 1
        self._removed[key] = self.tick
        return OutRecord(key, None, partition=partition)

    def items(self) -> list[tuple[bytes, bytes]]:
        """A snapshot of every stored key and value."""
        return list(self.data.items())

    def still_current(self, records: list[OutRecord], since: int) -> list[OutRecord]:
        """`records` (put at tick `since`) minus those whose key was removed after that."""
        removed = self._removed
        if not removed:
            return records
        return [r for r in records if r.key is None or removed.get(r.key, 0) <= since]

    def forget_removals(self, upto: int) -> None:
        """Drop removal marks up to tick `upto` (no record put before it is still pending)."""
        if self._removed:
            self._removed = {k: t for k, t in self._removed.items() if t > upto}

    async def publish(self, records: Sequence[OutRecord]) -> list[Awaitable[Any]]:
        """Hand changelog records to the sink, in call order; the futures resolve on the acks."""
        if not records:
            return []
        assert self.sink is not None, "a store without a sink cannot publish"
        return await self.sink.enqueue(self.changelog_topic, records)


class WindowStore(TableStore):
    """The windows table: users' windows by pseudonym key (see the module docstring)."""

    def get(self, key: bytes) -> Window | None:
        """The user's stored window (None when there is none)."""
        raw = self.data.get(key)
        return decode_window(raw) if raw is not None else None

    def put(self, key: bytes, window: Window, event: Any = None) -> OutRecord:
        """Store the window; its changelog record goes to the window's own partition."""
        return self.put_raw(key, encode_window(window), window.partition, event)

    def remove(self, key: bytes, owned: Container[int]) -> OutRecord | None:
        """Delete the user's window if it lives in an `owned` partition; its tombstone.

        Only the owner deletes: a standby copy of another worker's partition is left to its owner.
        """
        window = self.get(key)
        if window is None or window.partition not in owned:
            return None
        return self.delete(key, window.partition)

    def windows(self) -> Iterator[tuple[bytes, Window]]:
        """Every stored window, decoded (a snapshot: the caller may remove while iterating)."""
        for key, raw in self.items():
            yield key, decode_window(raw)

    def expire(
        self, owned: Container[int], now_ms: int, ttl_ms: int
    ) -> tuple[int, list[OutRecord]]:
        """Delete owned windows idle longer than `ttl_ms`: (owned windows kept, tombstones)."""
        kept, tombstones = 0, []
        for key, window in self.windows():
            if window.partition not in owned:
                continue  # a standby copy: its owner expires it
            if is_expired(window, now_ms, ttl_ms):
                tombstone = self.delete(key, window.partition)
                if tombstone is not None:
                    tombstones.append(tombstone)
            else:
                kept += 1
        return kept, tombstones
