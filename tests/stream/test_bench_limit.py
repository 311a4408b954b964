"""The intake limit: the worker's per-event work in a plain confluent-kafka loop (no Faust)."""

from __future__ import annotations

import pytest

from schemas.formats import event_json
from stream.bench.data import hot_user_events
from stream.bench.limit import PlainIntake, measure_limit
from stream.kafka.broker import EmbeddedBroker
from stream.privacy import Pseudonymizer, pseudonym
from stream.windows import decode_window

KEY = "limit-test-key-0123456789abcdef"


def intake() -> PlainIntake:
    return PlainIntake(Pseudonymizer(KEY.encode(), "k"), 3, 10**12, 16 * 1024)


def test_plain_intake_coalesces_pseudonymises_and_keeps_the_window_size() -> None:
    events = hot_user_events(2, 10)
    plain = intake()
    updated = plain.batch([(event_json(e), 0) for e in events] + [(b"{not json", 1), (None, 1)])
    users = {e["user_id"] for e in events}
    assert updated == len(users)
    assert plain.invalid == 2
    assert set(plain.store) == {pseudonym(KEY.encode(), u).encode() for u in users}
    for user in users:
        window = decode_window(plain.store[pseudonym(KEY.encode(), user).encode()])
        newest = [e for e in events if e["user_id"] == user][-3:]
        assert [entry[0] for entry in window.entries] == [e["ts"] for e in newest]


@pytest.mark.integration
def test_the_limit_reads_every_event_from_a_real_broker(broker: EmbeddedBroker) -> None:
    events = hot_user_events(8, 400)
    limit = measure_limit(broker.bootstrap, 2, events, key=KEY, window_size=50, max_batch=64)
    assert limit.events == 400
    assert limit.invalid == 0
    assert limit.events_per_s is not None and limit.events_per_s > 0
