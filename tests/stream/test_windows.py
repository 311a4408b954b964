"""Rolling windows: ordered insert, dedupe, trim by size and age, expiry, compact round trip."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from stream.windows import (
    Window,
    apply_events,
    decode_window,
    encode_window,
    entry_from_event,
    event_key,
    is_expired,
    unchanged,
)


def ev(ts: int, item: str = "i", event_type: str = "view", **extra: object) -> dict[str, object]:
    return {"user_id": "u", "event_type": event_type, "ts": ts, "item_id": item, **extra}


def apply(window: Window | None, *events: dict[str, object], size: int = 50, age: int = 10**9):
    return apply_events(
        window,
        [entry_from_event(e) for e in events],
        partition=2,
        now_ms=7,
        size=size,
        max_age_ms=age,
    )


def test_out_of_order_events_are_inserted_by_timestamp() -> None:
    applied = apply(None, ev(30, "c"), ev(10, "a"), ev(20, "b"))

    assert [e[0] for e in applied.window.entries] == [10, 20, 30]
    assert applied.window.last_ts == 30


def test_exact_duplicates_are_ignored_by_event_id_or_content() -> None:
    first = apply(None, ev(10, event_id="e1"), ev(20))

    again = apply(first.window, ev(99, "other", event_id="e1"), ev(20))

    assert (again.added, again.duplicates) == (0, 2)
    assert again.window.entries == first.window.entries


def test_a_replayed_batch_leaves_the_window_unchanged() -> None:
    first = apply(None, ev(10, "a"), ev(20, "b"), ev(30, "c"), size=2)

    replayed = apply(first.window, ev(20, "b"), ev(30, "c"), size=2)
    too_old = apply(first.window, ev(10, "a"), size=2)  # trimmed again: entries unchanged
    new = apply(first.window, ev(30, "c"), ev(40, "d"), size=2)

    assert unchanged(first.window, replayed) and replayed.added == 0
    assert unchanged(first.window, too_old) and too_old.added == 1
    assert not unchanged(first.window, new)
    assert not unchanged(None, first)


def test_same_content_with_different_event_ids_is_kept() -> None:
    applied = apply(None, ev(10, event_id="a"), ev(10, event_id="b"))

    assert applied.added == 2


def test_window_keeps_the_newest_n_within_max_age() -> None:
    applied = apply(None, *(ev(t, f"i{t}") for t in range(0, 100, 10)), size=5, age=25)

    assert [e[0] for e in applied.window.entries] == [70, 80, 90]


def test_window_records_partition_and_time() -> None:
    applied = apply(None, ev(1))

    assert (applied.window.partition, applied.window.seen_ms) == (2, 7)


def test_compact_encoding_round_trips_and_keeps_only_encoding_fields() -> None:
    window = apply(
        None, ev(5, "x", "cart", category="c1", price=9.5, session_id="s", attrs={"a": "b"})
    ).window

    raw = encode_window(window)

    assert decode_window(raw) == window
    assert b"user" not in raw and b"session" not in raw
    assert window.model_events() == [
        {"event_type": "cart", "ts": 5, "item_id": "x", "category": "c1", "price": 9.5}
    ]


def test_idle_windows_expire_after_the_ttl() -> None:
    window = Window(0, seen_ms=1_000, entries=((1, 0, "i", None, None, "k"),))

    assert not is_expired(window, now_ms=1_500, idle_ttl_ms=500)
    assert is_expired(window, now_ms=1_501, idle_ttl_ms=500)


def test_event_key_prefers_event_id() -> None:
    assert event_key(ev(1, event_id="x")) == event_key(ev(2, "other", event_id="x"))
    assert event_key(ev(1)) != event_key(ev(2))


@given(
    st.lists(st.tuples(st.integers(0, 1_000), st.integers(0, 5)), max_size=60),
    st.integers(1, 20),
    st.randoms(use_true_random=False),
)
def test_windows_are_sorted_bounded_and_independent_of_arrival_order(
    stamps: list[tuple[int, int]], size: int, rng: random.Random
) -> None:
    events = [ev(ts, f"i{item}") for ts, item in stamps]
    shuffled = rng.sample(events, len(events))

    window = apply(None, *events, size=size).window
    replayed = apply(window, *events, size=size).window

    tss = [e[0] for e in window.entries]
    assert tss == sorted(tss) and len(tss) <= size
    assert len({e[5] for e in window.entries}) == len(window.entries)
    assert replayed.entries == window.entries
    assert apply(None, *shuffled, size=size).window.entries == window.entries
    half = len(shuffled) // 2
    in_two_batches = apply(
        apply(None, *shuffled[:half], size=size).window, *shuffled[half:], size=size
    )
    assert in_two_batches.window.entries == window.entries
