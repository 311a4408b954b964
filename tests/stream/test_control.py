"""Control records and the erasure ledger, as pure functions."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.control import (
    BadControlRecord,
    EraseDone,
    EraseRequest,
    Ledger,
    caught_up,
    covered,
    encode_record,
    erase_request,
    parse_record,
    record_key,
)

DONE = EraseDone("r1", "ab12", "k1", True, (0, 2), "host:1", 9)


def test_requests_and_confirmations_round_trip_keyed_by_request_id() -> None:
    request = erase_request("user-7", now_ms=5, request_id="r1")

    assert parse_record(encode_record(request)) == request
    assert parse_record(encode_record(DONE)) == DONE
    assert record_key(request) == record_key(DONE) == b"r1"
    assert orjson.loads(encode_record(request))["type"] == "erase"


def test_new_requests_get_unique_ids_and_need_a_user() -> None:
    assert erase_request("u", now_ms=0).request_id != erase_request("u", now_ms=0).request_id
    with pytest.raises(BadControlRecord):
        erase_request("", now_ms=0)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"not json",
        b"[1]",
        b'{"v": 2, "type": "erase", "request_id": "r", "user_id": "u", "requested_at": 1}',
        b'{"v": 1, "type": "erase", "request_id": "r", "user_id": "", "requested_at": 1}',
        b'{"v": 1, "type": "erase", "request_id": "r", "user_id": "u", "requested_at": true}',
        b'{"v": 1, "type": "nuke", "request_id": "r"}',
        b'{"v": 1, "type": "erase_done", "request_id": "r", "user": "x", "erased": true,'
        b' "partitions": ["0"], "worker": "w", "done_at": 1}',
    ],
)
def test_malformed_records_are_refused_without_echoing_them(raw: bytes | None) -> None:
    with pytest.raises(BadControlRecord) as info:
        parse_record(raw)

    assert '"u"' not in str(info.value)


def test_each_owned_partition_is_applied_once_then_the_request_is_done() -> None:
    ledger = Ledger(partitions=4, horizon_ms=1000)
    ledger.observe(EraseRequest("r1", "u", 100), now_ms=100)

    first = ledger.due({0, 1}, now_ms=110)
    ledger.mark("r1", [0, 1])
    ledger.observe(EraseDone("r1", "p", "k1", False, (2,), "other", 120), now_ms=120)

    assert [parts for _, parts in first] == [[0, 1]]
    assert ledger.due({0, 1, 3}, now_ms=130) == [(EraseRequest("r1", "u", 100), [3])]
    ledger.mark("r1", [3])
    assert ledger.due({0, 1, 2, 3}, now_ms=140) == [] and ledger.pending == {}


def test_requests_older_than_the_horizon_are_not_applied() -> None:
    ledger = Ledger(partitions=2, horizon_ms=1000)
    ledger.observe(EraseRequest("old", "u", 0), now_ms=5000)  # replayed long after it was sent
    ledger.observe(EraseRequest("late", "u", 4000), now_ms=4100)

    assert [r.request_id for r, _ in ledger.due({0, 1}, now_ms=4200)] == ["late"]
    assert ledger.due({0, 1}, now_ms=6000) == []


@given(
    owners=st.lists(st.sets(st.integers(0, 5), min_size=1), min_size=1, max_size=6),
    confirmed_first=st.sets(st.integers(0, 5)),
)
def test_workers_sharing_a_ledger_cover_every_partition_exactly_once(
    owners: list[set[int]], confirmed_first: set[int]
) -> None:
    ledger = Ledger(partitions=6, horizon_ms=10_000)
    ledger.observe(EraseRequest("r", "u", 0), now_ms=0)
    ledger.observe(EraseDone("r", "p", None, False, tuple(confirmed_first), "w0", 1), now_ms=1)
    applied: list[int] = []

    for owned in [*owners, set(range(6))]:  # whoever owns what, in turn; finally one owns all
        for _, parts in ledger.due(owned, now_ms=2):
            applied += parts
            ledger.mark("r", parts)

    assert sorted(applied) == sorted(set(range(6)) - confirmed_first)
    assert ledger.due(set(range(6)), now_ms=3) == [] and ledger.pending == {}


def test_covered_and_caught_up() -> None:
    assert covered([DONE, EraseDone("r1", "ab12", "k1", False, (1,), "h:2", 9)]) == {0, 1, 2}
    assert caught_up({0: 5, 1: 3}, {0: 5, 1: 3, 2: 0})
    assert not caught_up({0: 4}, {0: 5})
