"""Delayed-label outcomes: remember published predictions per user, label them from later events.

Pure logic on plain data; `stream.quality` wires it into the worker. A user's pending state is
stored as compact orjson bytes in the `outcomes` table (changelog-backed, co-partitioned with the
windows). The label rule is `model.labels.horizon_label`, the function that makes the training
labels: a prediction for a window ending at `last_event_ts` gets label 1 for a label type when the
first later event of that type comes at most `horizon_ms` after it, else 0. EVENT time decides,
per user: a prediction is resolved by that user's own later events (a label event, or any event
more than the horizon later), never by the wall clock, so a replay (even of a file grouped by
user) gives the same outcomes as live traffic. Predictions whose window ends in a label event
(purchase) are not remembered: the training data has no example for them either.

>>> p = Pending(100, 5, "v1", 1000, {"purchase": 0.3}, {})
>>> state, dropped = remember(UserPending(0, 0), p, max_pending=4)
>>> done = observe(state, [(600, "view", "e2"), (700, "purchase", "e3")])
>>> done[0].labels, done[0].label_ts, state.pending
({'purchase': 1.0}, 700, [])
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from model.labels import INF, LABEL_EVENT_TYPES, horizon_label
from schemas.validation import check

OUTCOME_SCHEMA = "outcome.v1.json"


@dataclass(slots=True)
class Pending:
    """One remembered prediction; `labels` holds the label types already resolved."""

    last_event_ts: int
    predicted_at: int
    model_version: str
    horizon_ms: int
    scores: dict[str, float]
    labels: dict[str, float] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)  # eids in the window at last_event_ts

    def label_types(self) -> list[str]:
        """The scored labels the rule can resolve (purchase, cart, fav, click)."""
        return [name for name in self.scores if name in LABEL_EVENT_TYPES]

    def as_list(self) -> list[Any]:
        return [
            self.last_event_ts,
            self.predicted_at,
            self.model_version,
            self.horizon_ms,
            self.scores,
            self.labels,
            self.seen,
        ]


@dataclass(slots=True)
class UserPending:
    """A user's pending predictions (oldest first), with their partition and bookkeeping.

    `resolved_ts`: the newest `last_event_ts` already resolved; a prediction at or before it is a
    redelivery (at-least-once replay after a crash) and is not remembered twice.
    `seen_ms`: wall time of the last change (idle TTL).
    """

    partition: int
    seen_ms: int
    resolved_ts: int = -1
    pending: list[Pending] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A labelled prediction: the pending record, its labels and the event that settled it."""

    pending: Pending
    labels: dict[str, float]
    label_ts: int

    @property
    def delay_ms(self) -> int:
        """Label delay in event time: the settling event's ts minus the window's newest ts."""
        return self.label_ts - self.pending.last_event_ts


def encode_pending(state: UserPending) -> bytes:
    """Compact bytes for the outcomes table and its changelog."""
    return orjson.dumps(
        [state.partition, state.seen_ms, state.resolved_ts, [p.as_list() for p in state.pending]]
    )


def decode_pending(raw: bytes) -> UserPending:
    """Inverse of `encode_pending`."""
    partition, seen_ms, resolved_ts, rows = orjson.loads(raw)
    return UserPending(
        int(partition), int(seen_ms), int(resolved_ts), [Pending(*row) for row in rows]
    )


def remember(state: UserPending, pending: Pending, max_pending: int) -> tuple[UserPending, int]:
    """Add a prediction to the user's state (bounded): the state and how many were dropped.

    A prediction at or before `resolved_ts`, or at the same `last_event_ts` and model version as
    one already pending, is a redelivery and is ignored. Above `max_pending` the oldest go.
    """
    if not pending.label_types() or pending.last_event_ts <= state.resolved_ts:
        return state, 0
    for held in state.pending:
        if (
            held.last_event_ts == pending.last_event_ts
            and held.model_version == pending.model_version
        ):
            return state, 0
    state.pending.append(pending)
    dropped = max(0, len(state.pending) - max_pending)
    if dropped:
        del state.pending[:dropped]
    return state, dropped


def observe(state: UserPending, events: Iterable[tuple[int, str, str]]) -> list[Resolved]:
    """Apply the user's new (ts, event_type, eid) events, in time order, to the pending predictions.

    Returns the predictions now fully labelled (and removes them from `state`). An event settles a
    label type when it is of that type (label by the horizon rule) or when it is more than the
    horizon after the prediction (no label event in time: 0). Events older than a prediction's
    window came before it and are ignored, as the training labels ignore earlier positions; so
    are redelivered copies of the events at its `last_event_ts` that the window already held.
    """
    if not state.pending:
        return []
    ordered = sorted(events, key=lambda e: e[0])  # stable: arrival breaks ties
    stamps = [e[0] for e in ordered]
    found: list[tuple[int, int, Resolved]] = []
    still: list[Pending] = []
    for rank, p in enumerate(state.pending):
        # each prediction is labelled by its own later events alone: skip to them, stop when done
        at = settled_at(p, ordered, bisect.bisect_left(stamps, p.last_event_ts))
        if at is None:
            still.append(p)
            continue
        found.append((at, rank, Resolved(p, dict(p.labels), ordered[at][0])))
        state.resolved_ts = max(state.resolved_ts, p.last_event_ts)
    state.pending = still
    found.sort(key=lambda f: (f[0], f[1]))  # event order, then pending order, as they settled
    return [resolved for _, _, resolved in found]


def settled_at(p: Pending, ordered: Sequence[tuple[int, str, str]], start: int) -> int | None:
    """Apply events ordered[start:] to `p`; the index of the event that completes it, or None."""
    types = p.label_types()
    for i in range(start, len(ordered)):
        ts, event_type, eid = ordered[i]
        if ts == p.last_event_ts and eid in p.seen:
            continue  # a redelivered copy of an event the window already held
        for name in types:
            if name in p.labels:
                continue
            if LABEL_EVENT_TYPES[name] == event_type:
                p.labels[name] = horizon_label(p.last_event_ts, ts, p.horizon_ms)
            elif ts - p.last_event_ts > p.horizon_ms:
                p.labels[name] = horizon_label(p.last_event_ts, INF, p.horizon_ms)
        if len(p.labels) == len(types):
            return i
    return None


def outcome_id(user: str, model_version: str, last_event_ts: int) -> str:
    """A stable id for deduplication downstream (at-least-once delivery)."""
    basis = f"{user}\x00{model_version}\x00{last_event_ts}".encode()
    return hashlib.blake2b(basis, digest_size=12).hexdigest()


def build_outcome(
    user: str, key_id: str | None, resolved: Resolved, labelled_at: int
) -> dict[str, Any]:
    """One Outcome v1 record (the user is already a pseudonym)."""
    p = resolved.pending
    outcome: dict[str, Any] = {"outcome_id": outcome_id(user, p.model_version, p.last_event_ts)}
    outcome["user"] = user
    if key_id is not None:
        outcome["key_id"] = key_id
    outcome.update(
        model_version=p.model_version,
        scores=p.scores,
        labels={name: int(value) for name, value in resolved.labels.items()},
        last_event_ts=p.last_event_ts,
        last_ts_events=max(1, len(p.seen)),
        label_ts=resolved.label_ts,
        delay_ms=resolved.delay_ms,
        horizon_ms=p.horizon_ms,
        predicted_at=p.predicted_at,
        labelled_at=labelled_at,
    )
    return outcome


def validate_outcome(obj: Any) -> str | None:
    """None when `obj` is a valid Outcome v1; otherwise the reason."""
    invalid = check(OUTCOME_SCHEMA, obj)
    return None if invalid is None else f"{invalid.code}: {invalid.message}"


def pending_from_prediction(
    prediction: Mapping[str, Any], horizon_ms: int, seen: Sequence[str] = ()
) -> Pending:
    """The Pending record for a Prediction v1 dict; `seen`: eids in its window at last_event_ts."""
    return Pending(
        int(prediction["last_event_ts"]),
        int(prediction["predicted_at"]),
        str(prediction["model_version"]),
        horizon_ms,
        dict(prediction["scores"]),
        {},
        list(seen),
    )
