"""Delayed-label outcomes (pure): the label rule agrees with the training labels on replays."""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.labels import INF, LABEL_EVENT_TYPES, horizon_label, label_sequence
from schemas.formats import read_events
from stream.outcomes import (
    Pending,
    Resolved,
    UserPending,
    build_outcome,
    decode_pending,
    encode_pending,
    observe,
    remember,
    validate_outcome,
)
from stream.simulate import simulate_events
from stream.windows import entry_from_event
from tests.conftest import TAOBAO_USERS, need_shared

HOUR = 3_600_000
HORIZON = 30 * 60_000


def _pending(ts: int, labels: Sequence[str] = ("purchase",), seen: Sequence[str] = ()) -> Pending:
    return Pending(ts, 0, "v1", HORIZON, dict.fromkeys(labels, 0.5), {}, list(seen))


def _state(*pending: Pending) -> UserPending:
    state = UserPending(0, 0)
    for p in pending:
        remember(state, p, max_pending=8)
    return state


def test_purchase_within_horizon_labels_one() -> None:
    state = _state(_pending(1000))

    done = observe(state, [(1000 + HORIZON, "purchase", "e")])

    assert [d.labels for d in done] == [{"purchase": 1.0}]
    assert done[0].delay_ms == HORIZON and state.pending == []


def test_event_time_past_the_horizon_labels_zero_and_late_purchase_too() -> None:
    state = _state(_pending(1000), _pending(2000))

    first = observe(state, [(1001 + HORIZON, "view", "a")])
    second = observe(state, [(2001 + HORIZON, "purchase", "b")])

    assert [d.labels["purchase"] for d in first] == [0.0]
    assert [d.labels["purchase"] for d in second] == [0.0]


def test_nothing_settles_before_the_horizon_passes() -> None:
    state = _state(_pending(1000))

    assert observe(state, [(1000 + HORIZON, "view", "a"), (500, "purchase", "old")]) == []
    assert len(state.pending) == 1


def test_two_label_types_settle_separately() -> None:
    state = _state(_pending(0, ("purchase", "cart")))

    assert observe(state, [(10, "cart", "a")]) == []
    done = observe(state, [(HORIZON + 1, "view", "b")])

    assert done[0].labels == {"purchase": 0.0, "cart": 1.0}


def test_redelivered_window_event_is_not_a_later_event() -> None:
    state = _state(_pending(1000, ("purchase", "cart"), seen=["own"]))

    assert observe(state, [(1000, "cart", "own")]) == []
    assert observe(state, [(1000, "cart", "other")]) == []  # a later event at the same ts counts
    assert state.pending[0].labels == {"cart": 1.0}


def plain_observe(state: UserPending, events: Iterable[tuple[int, str, str]]) -> list[Resolved]:
    """The label rule written plainly, event by event over every pending prediction."""
    done: list[Resolved] = []
    for ts, event_type, eid in sorted(events, key=lambda e: e[0]):
        still = []
        for p in state.pending:
            if ts < p.last_event_ts or (ts == p.last_event_ts and eid in p.seen):
                still.append(p)
                continue
            for name in p.label_types():
                if name not in p.labels and LABEL_EVENT_TYPES[name] == event_type:
                    p.labels[name] = horizon_label(p.last_event_ts, ts, p.horizon_ms)
                elif name not in p.labels and ts - p.last_event_ts > p.horizon_ms:
                    p.labels[name] = horizon_label(p.last_event_ts, INF, p.horizon_ms)
            if len(p.labels) == len(p.label_types()):
                done.append(Resolved(p, dict(p.labels), ts))
                state.resolved_ts = max(state.resolved_ts, p.last_event_ts)
            else:
                still.append(p)
        state.pending = still
    return done


EVENT = st.tuples(
    st.integers(0, 4 * HORIZON),
    st.sampled_from(["view", "cart", "purchase"]),
    st.sampled_from("abc"),
)


@settings(max_examples=300, deadline=None)
@given(
    stamps=st.lists(st.integers(0, 3 * HORIZON), max_size=6),
    events=st.lists(EVENT, max_size=12),
)
def test_observe_settles_exactly_as_the_plain_rule(stamps: list[int], events: list[Any]) -> None:
    state = _state(*[_pending(ts, ("purchase", "cart"), seen=("a",)) for ts in stamps])
    plain = copy.deepcopy(state)

    done = observe(state, events)

    assert done == plain_observe(plain, events)
    assert state == plain


def test_bound_drops_oldest_and_counts() -> None:
    state = UserPending(0, 0)
    dropped = [remember(state, _pending(ts), max_pending=3)[1] for ts in range(5)]

    assert dropped == [0, 0, 0, 1, 1]
    assert [p.last_event_ts for p in state.pending] == [2, 3, 4]


def test_redelivered_predictions_are_remembered_once() -> None:
    state = _state(_pending(1000))
    remember(state, _pending(1000), max_pending=8)
    assert len(state.pending) == 1
    observe(state, [(1000 + HORIZON + 1, "view", "x")])

    remember(state, _pending(1000), max_pending=8)  # replayed after a crash: already resolved

    assert state.pending == [] and state.resolved_ts == 1000


def test_state_round_trips() -> None:
    state = _state(_pending(7, ("purchase", "cart"), seen=["a"]))
    state.pending[0].labels["cart"] = 1.0

    assert decode_pending(encode_pending(state)) == state


def test_outcome_record_is_valid_and_integer_labelled() -> None:
    state = _state(_pending(1000))
    (resolved,) = observe(state, [(2000, "purchase", "e")])

    outcome = build_outcome("pseudonym", "k1", resolved, labelled_at=5)

    assert validate_outcome(outcome) is None
    assert outcome["labels"] == {"purchase": 1} and outcome["delay_ms"] == 1000
    assert validate_outcome({**outcome, "user_id": "raw"}) is not None


def replay_outcomes(
    events: Iterable[Mapping[str, Any]], seed: int, labels: Sequence[str] = ("purchase",)
) -> tuple[list[tuple[str, int, dict[str, float]]], int]:
    """The worker's path in miniature: random micro-batches in file order; per batch and user,
    settle with the new events, then remember one prediction for the window's newest event
    (unless it is a purchase). Returns (user, index of the predicted event, labels), pending."""
    rng = random.Random(seed)
    events = list(events)
    states: dict[str, UserPending] = {}
    position: dict[str, int] = defaultdict(lambda: -1)
    out: list[tuple[str, int, dict[str, float]]] = []
    start = 0
    while start < len(events):
        batch = events[start : start + rng.randint(1, 12)]
        start += len(batch)
        per_user: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for event in batch:
            per_user[event["user_id"]].append(event)
        for user, new in per_user.items():
            state = states.setdefault(user, UserPending(0, 0))
            entries = [entry_from_event(e) for e in new]
            index_of = {}
            for done in observe(
                state, [(e[0], new[i]["event_type"], e[5]) for i, e in enumerate(entries)]
            ):
                out.append((user, done.pending.predicted_at, done.labels))
            for event in new:
                position[user] += 1
                index_of[id(event)] = position[user]
            last = new[-1]
            if last["event_type"] != "purchase":
                p = Pending(
                    last["ts"],
                    index_of[id(last)],
                    "v",
                    HORIZON,
                    dict.fromkeys(labels, 0.5),
                    {},
                    [entries[-1][5]],
                )
                remember(state, p, max_pending=10_000)
    pending = sum(len(s.pending) for s in states.values())
    return out, pending


def offline_labels(
    events: Iterable[Mapping[str, Any]], labels: Sequence[str] = ("purchase",)
) -> dict[tuple[str, int], tuple[float, ...]]:
    sequences: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for event in events:
        sequences[event["user_id"]].append(event)
    table = {}
    for user, seq in sequences.items():
        assert all(a["ts"] <= b["ts"] for a, b in zip(seq, seq[1:], strict=False)), (
            "time-sorted per user"
        )
        for index, found in label_sequence(seq, HORIZON, labels):
            table[(user, index)] = found
    return table


def _agreement(
    events: list[Mapping[str, Any]], labels: Sequence[str], seed: int
) -> tuple[int, int]:
    outcomes, _pending = replay_outcomes(events, seed, labels)
    offline = offline_labels(events, labels)
    mismatches = [
        (user, index)
        for user, index, found in outcomes
        if tuple(found[name] for name in labels) != offline[(user, index)]
    ]
    return len(outcomes), len(mismatches)


@pytest.mark.parametrize("labels", [("purchase",), ("purchase", "cart")])
def test_outcome_labels_equal_training_labels_on_a_simulated_file(labels: tuple[str, ...]) -> None:
    events = simulate_events(300, seed=3)  # sorted by time: users interleave

    count, mismatches = _agreement(events, labels, seed=1)

    assert count > 1000 and mismatches == 0


def test_outcome_labels_equal_training_labels_on_taobao_users() -> None:
    path = need_shared(TAOBAO_USERS)
    events = list(read_events(path, "taobao"))  # grouped by user: per-user event time decides

    count, mismatches = _agreement(events, ("purchase", "cart"), seed=2)

    assert count > 10_000 and mismatches == 0


def test_check_sorts_predictions_by_why_they_have_no_outcome() -> None:
    from stream.outcome_check import REPLAYED, check_outcomes, offline_examples

    events = [
        {"user_id": "a", "event_type": "view", "ts": 0, "item_id": "1"},
        {"user_id": "a", "event_type": "view", "ts": 10, "item_id": "2"},
        {"user_id": "a", "event_type": "purchase", "ts": 20, "item_id": "2"},
        {"user_id": "a", "event_type": "view", "ts": 30, "item_id": "3"},
    ]
    expected, times = offline_examples(events, str, HORIZON, ["purchase"])
    outcome = {
        "outcome_id": "x",
        "user": "a",
        "last_event_ts": 10,
        "last_ts_events": 1,
        "labels": {"purchase": 1},
    }
    predictions = [{"user": "a", "last_event_ts": t} for t in (0, 10, 20, 30)]

    report = check_outcomes([outcome, outcome], expected, ["purchase"], predictions, times, HORIZON)

    assert (report.outcomes, report.duplicates, report.mismatches) == (1, 1, 0)
    assert report.reasons == {
        "labelled": 1,
        REPLAYED: 1,  # ts 0: before a settled point, so a restart's re-prediction
        "window ends in a purchase": 1,
        "pending at the end of the file": 1,
    }
