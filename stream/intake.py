"""Intake as plain functions: consumed records -> window items | dead letters; coalescing; windows.

A consumed batch is read into items (one valid event, keyed by its user's pseudonym) and dead
letters (`read_batch`); the items are coalesced to one update per changed user (`plan_groups`);
each update gives the user's next window (`next_window`), the pure half of the window write that
`stream.worker` then stores through `stream.kafka.store.WindowStore`.

>>> items = [Item(b"a", (1, 0, "i", None, None, "x"), 0, 1.0, 0),
...          Item(b"a", (2, 0, "j", None, None, "y"), 0, 2.0, 1)]
>>> [(u.key, len(u.entries), u.arrival) for u in coalesce(items)]
[(b'a', 2, 2.0)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas.validation import decode_event
from stream.outputs import DeadLetter, OutRecord
from stream.privacy import classify_field
from stream.settings import Settings
from stream.windows import Applied, Entry, Window, apply_events, entry_from_event


class Message(Protocol):
    """What intake reads of a consumed record (a Faust `Message` has these)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    time_in: float | None


class Event(Protocol):
    """A consumed event as the worker holds it (a Faust `EventT`): its message, and its ack."""

    @property
    def message(self) -> Any: ...  # a Message that also counts references (incref)

    def ack(self) -> bool: ...


@dataclass(slots=True)
class Item:
    """One valid event ready for its window: table key (pseudonym bytes), entry, partition."""

    key: bytes
    entry: Entry
    partition: int
    arrival: float  # monotonic seconds when the record reached the worker
    ref: int  # index of the record in its consumed batch


@dataclass(slots=True)
class Batch:
    """A consumed batch, read: items for the windows, dead letters, kinds of fields dropped."""

    items: list[Item] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # stream.privacy kind of each dropped field


def read_batch(
    messages: Sequence[Message], pseudonym: Callable[[str], str], max_bytes: int, arrival: float
) -> Batch:
    """Decode and validate each record: a window item, or a dead letter saying why not."""
    batch = Batch()
    for ref, msg in enumerate(messages):
        decoded = decode_event(msg.value, max_bytes)
        if decoded.invalid is not None:
            batch.letters.append(DeadLetter.of(msg, decoded.invalid.code, decoded.invalid.message))
            continue
        event: Any = decoded.event
        if decoded.dropped_fields:
            original = orjson.loads(msg.value or b"")
            batch.dropped += [classify_field(n, original.get(n)) for n in decoded.dropped_fields]
        at = msg.time_in if msg.time_in is not None else arrival
        key = pseudonym(event["user_id"]).encode()
        batch.items.append(Item(key, entry_from_event(event), msg.partition, at, ref))
    return batch


@dataclass(slots=True)
class UserUpdate:
    """All of one user's new entries in a batch (one table write, one inference)."""

    key: bytes
    partition: int  # partition of the user's last record in the batch
    entries: list[Entry] = field(default_factory=list)
    arrival: float = 0.0  # newest arrival among them
    refs: list[int] = field(default_factory=list)

    def add(self, item: Item) -> None:
        """Fold one more event of this user into the update."""
        self.entries.append(item.entry)
        self.partition = item.partition
        self.arrival = max(self.arrival, item.arrival)
        self.refs.append(item.ref)


def coalesce(items: Iterable[Item]) -> list[UserUpdate]:
    """Distinct changed users in first-seen order, each with all of its events."""
    updates: dict[bytes, UserUpdate] = {}
    for item in items:
        update = updates.get(item.key)
        if update is None:
            update = updates[item.key] = UserUpdate(item.key, item.partition)
        update.add(item)
    return list(updates.values())


def plan_groups(items: Sequence[Item], naive: bool) -> list[list[UserUpdate]]:
    """Processing groups: one coalesced group per batch, or (naive) one group per event."""
    if naive:
        return [coalesce([item]) for item in items]
    return [coalesce(items)] if items else []


def next_window(
    previous: Window | None, update: UserUpdate, settings: Settings, now_ms: int
) -> Applied:
    """The user's window after the update: ordered, deduped, trimmed, stamped with its partition."""
    return apply_events(
        previous,
        update.entries,
        partition=update.partition,
        now_ms=now_ms,
        size=settings.window_size,
        max_age_ms=int(settings.window_max_age_s * 1000),
    )


@dataclass(frozen=True, slots=True)
class Target:
    """A user to predict: its table key, the window snapshot after this batch, newest arrival."""

    key: bytes
    window: Window
    arrival: float


@dataclass
class Job:
    """One inference batch: the users to predict and the consumed events they reflect."""

    targets: list[Target]
    events: list[Event]
    changelog: list[OutRecord]  # the windows' changelog records, sent once predictions are acked
    tick: int = 0  # the store's removal tick when the windows were written
    entries: Sequence[Sequence[Entry]] = field(default_factory=list)  # each target's new entries
    held: list[Event] = field(default_factory=list)  # dead-lettered records, acked with the job


def model_inputs(targets: Sequence[Target]) -> list[list[dict[str, Any]]]:
    """Runtime input for a batch of targets: one event list (newest last) per user."""
    return [t.window.model_events() for t in targets]
