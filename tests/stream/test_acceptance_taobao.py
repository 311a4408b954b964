"""Acceptance: all 110,300 Taobao events reach behavior.events, each user's events in file order."""

from __future__ import annotations

from collections import defaultdict

import orjson

from schemas.formats import read_events
from tests.conftest import TAOBAO_SLICE
from tests.stream.conftest import Replayed
from tests.stream.kafka_helpers import read_topic

EXPECTED = 110_300


def test_replay_summary_counts_every_row(taobao_replayed: Replayed) -> None:
    first = taobao_replayed.summary.splitlines()[0]

    assert first.startswith(f"sent={EXPECTED} skipped=0 invalid=0 failed=0 ")


def test_independent_consumer_sees_every_event_in_per_user_order(taobao_replayed: Replayed) -> None:
    records = read_topic(taobao_replayed.bootstrap, taobao_replayed.topic, expected=EXPECTED)

    assert len(records) == EXPECTED
    by_user: dict[str, list[dict]] = defaultdict(list)
    partition_of: dict[str, set[int]] = defaultdict(set)
    for record in records:  # (partition, offset) order
        event = orjson.loads(record.value or b"")
        assert record.key == event["user_id"].encode()
        by_user[event["user_id"]].append(event)
        partition_of[event["user_id"]].add(record.partition)
    expected: dict[str, list[dict]] = defaultdict(list)
    for event in read_events(TAOBAO_SLICE, "taobao"):
        expected[event["user_id"]].append(event)
    assert len(by_user) == 66_454
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert by_user == expected  # same events, same order per user
    assert all(
        all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:], strict=False))
        for events in by_user.values()
    )
