"""Micro-batch logic as plain functions: coalesce a batch's events to changed users, plan groups.

>>> items = [Item(b"a", (1, 0, "i", None, None, "x"), 0, 1.0, 0),
...          Item(b"a", (2, 0, "j", None, None, "y"), 0, 2.0, 1)]
>>> [(u.key, len(u.entries), u.arrival) for u in coalesce(items)]
[(b'a', 2, 2.0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.windows import Entry, Window


@dataclass(slots=True)
class Item:
    """One valid event ready for its window: table key (pseudonym bytes), entry, partition."""

    key: bytes
    entry: Entry
    partition: int
    arrival: float  # monotonic seconds when the record reached the worker
    ref: int  # index of the record in its consumed batch


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


@dataclass(frozen=True, slots=True)
class Target:
    """A user to predict: its table key, the window snapshot after this batch, newest arrival."""

    key: bytes
    window: Window
    arrival: float


def model_inputs(targets: Sequence[Target]) -> list[list[dict[str, Any]]]:
    """Runtime input for a batch of targets: one event list (newest last) per user."""
    return [t.window.model_events() for t in targets]
