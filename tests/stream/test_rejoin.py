"""Rejoin bookkeeping (stale read/ack/commit marks) and the check that the broker kept our state."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.types import TP

from stream.kafka.rejoin import BrokerLostState, StateCheck, forget


def consumer_with_marks(*tps: TP) -> Any:
    """Faust's real consumer (never started) with read/commit/ack marks for `tps`."""
    consumer: Any = faust.App("rejoin-test", broker="kafka://127.0.0.1:1").consumer
    for tp in tps:
        consumer._read_offset[tp] = 41
        consumer._committed_offset[tp] = 40
        consumer._acked[tp] = [41]
    return consumer


def test_forget_clears_the_marks_of_assigned_partitions_only() -> None:
    kept, again = TP("events", 0), TP("events", 1)
    consumer = consumer_with_marks(kept, again)
    next_offset = {0: 42, 1: 42}

    stale = forget(consumer, {again}, next_offset, "events")

    assert stale == 1
    assert again not in consumer._read_offset and again not in consumer._committed_offset
    assert consumer._read_offset[kept] == 41
    assert next_offset == {0: 42}


def test_forget_is_a_no_op_after_a_normal_revocation() -> None:
    consumer = consumer_with_marks()

    assert forget(consumer, {TP("events", 0)}, {}, "events") == 0


class App:
    """Records crashes, as faust.App.crash would stop the worker."""

    def __init__(self) -> None:
        self.crashed: list[BaseException] = []

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


def test_intake_waits_from_an_outage_until_the_broker_still_has_the_changelog() -> None:
    async def run() -> tuple[bool, bool, list[BaseException]]:
        state = StateCheck(App(), "app-windows-changelog", lambda topic: True)
        state.broker_down()
        held = state.verified.is_set()
        await state.broker_up()
        return held, state.verified.is_set(), state.app.crashed

    assert asyncio.run(run()) == (False, True, [])


def test_a_broker_without_the_changelog_stops_the_worker_and_intake_stays_held() -> None:
    async def run() -> tuple[bool, list[BaseException]]:
        state = StateCheck(App(), "app-windows-changelog", lambda topic: False)
        state.broker_down()
        await state.broker_up()
        await state.check()  # a rejoin finds it too: still one crash
        return state.verified.is_set(), state.app.crashed

    verified, crashed = asyncio.run(run())
    assert not verified and [type(exc) for exc in crashed] == [BrokerLostState]
