"""Prefix examples, forward-looking labels and a purged time split (pure functions on plain data).

Each non-purchase event of a user is one example: its window is that event and the ones before it
(never later), its label is whether the user does `label` (default: purchase) within the horizon
after it. The split is by the prefix event's time: train < t1 <= val < t2 <= test. An example whose
label horizon reaches past its split's end is purged (or its label clipped at the boundary), so
train labels only ever look at events before t1 and val labels only at events before t2.

>>> events = [{"event_type": "view", "ts": 0, "item_id": "1"},
...           {"event_type": "purchase", "ts": 60_000, "item_id": "1"}]
>>> label_sequence(events, horizon_ms=1_800_000, label_types=("purchase",))
[(0, (1.0,))]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Event = Mapping[str, Any]
SPLITS = ("train", "val", "test")
INF = float("inf")
LABEL_EVENT_TYPES = {"purchase": "purchase", "cart": "cart", "fav": "fav", "click": "click"}


@dataclass(frozen=True)
class Example:
    """One prefix: the user's event `index` (window ends there) with its labels and split."""

    user: str
    index: int
    ts: int  # epoch ms of the prefix event
    labels: tuple[float, ...]
    split: str


@dataclass(frozen=True)
class Cuts:
    """Split boundaries in epoch ms: train < t1 <= val < t2 <= test."""

    t1: int
    t2: int


def split_cuts(timestamps: Sequence[int], train: float = 0.7, val: float = 0.1) -> Cuts:
    """Boundaries at the `train` and `train+val` quantiles of all event times."""
    ordered = sorted(timestamps)
    if not ordered:
        raise ValueError("no events to split")
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return Cuts(at(train), at(train + val))


def next_occurrences(events: Sequence[Event], label_types: Sequence[str]) -> list[list[float]]:
    """Per label type, per position i: ts of the first event of that type AFTER position i (inf)."""
    result = []
    for kind in label_types:
        nxt, upcoming = [INF] * len(events), INF
        for i in range(len(events) - 1, -1, -1):
            nxt[i] = upcoming
            if events[i]["event_type"] == LABEL_EVENT_TYPES[kind]:
                upcoming = events[i]["ts"]
        result.append(nxt)
    return result


def horizon_label(
    prefix_ts: float, label_ts: float, horizon_ms: float, limit_ms: float = INF
) -> float:
    """The one label rule (training and live outcomes); `label_ts`: first label event after."""
    return 1.0 if label_ts - prefix_ts <= horizon_ms and label_ts < limit_ms else 0.0


def label_sequence(
    events: Sequence[Event], horizon_ms: int, label_types: Sequence[str], limit_ms: float = INF
) -> list[tuple[int, tuple[float, ...]]]:
    """(index, labels) for every non-purchase event of one time-sorted user sequence.

    A label is 1.0 when a later event (by position) of that type is at most `horizon_ms` later
    and before `limit_ms` (a split boundary the label may not look past).
    """
    next_ts = next_occurrences(events, label_types)
    out = []
    for i, event in enumerate(events):
        if event["event_type"] == "purchase":
            continue
        ts = event["ts"]
        labels = tuple(horizon_label(ts, nxt[i], horizon_ms, limit_ms) for nxt in next_ts)
        out.append((i, labels))
    return out


def split_of(ts: int, cuts: Cuts) -> tuple[str, float]:
    """The split a prefix at `ts` belongs to, and the time its label may not look past."""
    if ts < cuts.t1:
        return "train", cuts.t1
    if ts < cuts.t2:
        return "val", cuts.t2
    return "test", INF


def build_examples(
    sequences: Mapping[str, Sequence[Event]],
    horizon_ms: int,
    cuts: Cuts,
    label_types: Sequence[str] = ("purchase",),
    boundary: str = "purge",
) -> tuple[list[Example], dict[str, int]]:
    """All labelled prefixes of all users (sequences time-sorted) and counts per split.

    A prefix whose horizon crosses its split's end is dropped (`boundary="purge"`) or labelled only
    from events before the boundary (`"clip"`). Either way no label reads a later split's events.
    """
    if boundary not in ("purge", "clip"):
        raise ValueError("boundary must be purge or clip")
    examples: list[Example] = []
    counts = dict.fromkeys(("purged", "clipped", *SPLITS), 0)
    for user, events in sequences.items():
        next_ts = next_occurrences(events, label_types)
        for i, event in enumerate(events):
            if event["event_type"] == "purchase":
                continue
            ts = int(event["ts"])
            split, limit = split_of(ts, cuts)
            if ts + horizon_ms >= limit:
                counts["purged" if boundary == "purge" else "clipped"] += 1
                if boundary == "purge":
                    continue
            labels = tuple(horizon_label(ts, nxt[i], horizon_ms, limit) for nxt in next_ts)
            counts[split] += 1
            examples.append(Example(user, i, ts, labels, split))
    return examples, counts


def window_of(events: Sequence[Event], index: int, size: int) -> list[Event]:
    """The prefix window ending at `index`: at most `size` events, newest last, nothing later."""
    return list(events[max(0, index + 1 - size) : index + 1])
