"""The Faust patches: hand-over like `wait_first` minus the tasks; streams resume after the seek."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import mode
import pytest
from faust.tables.recovery import ServiceStopped

from stream.kafka import recovery as recovery_module
from stream.kafka.faustpatch import (
    eager_wait_first,
    resume_streams_after_clearing,
    rewinding_jumps,
)


async def handed_over(callback: Any, suspended: asyncio.Event) -> tuple[Any, int]:
    """Run the patched wait_first on a real mode Service; (results, tasks created)."""
    service = mode.Service()
    loop = asyncio.get_running_loop()
    created = 0
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        results = await eager_wait_first(service, callback, suspended.wait())
    finally:
        loop.set_task_factory(factory)
    return results, created


def test_a_callback_that_never_waits_runs_inline_without_tasks() -> None:
    async def callback() -> str:
        return "delivered"

    async def run() -> tuple[Any, int]:
        return await handed_over(callback(), asyncio.Event())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unawaited suspend_flow.wait() would warn
        results, created = asyncio.run(run())

    assert results.results == ["delivered"] and not results.stopped
    assert created == 0


def test_a_callback_that_waits_is_finished_by_wait_first() -> None:
    done: list[str] = []

    async def callback(room: asyncio.Event) -> str:
        await room.wait()  # a full stream buffer
        done.append("put")
        return "delivered"

    async def run() -> tuple[Any, int]:
        room = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, room.set)
        return await handed_over(callback(room), asyncio.Event())

    results, created = asyncio.run(run())

    assert results.results[0] == "delivered" and done == ["put"]
    assert created > 0


def test_suspended_flow_abandons_a_waiting_callback_as_faust_does() -> None:
    cancelled: list[bool] = []

    async def callback(room: asyncio.Event) -> None:
        try:
            await room.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def run() -> Any:
        room, suspended = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, suspended.set)
        results, _ = await handed_over(callback(room), suspended)
        await asyncio.sleep(0.01)
        return results

    results = asyncio.run(run())

    assert results.results == [True] and cancelled == [True]


class Consumer:
    """Records the order of the calls a Faust recovery step makes on its consumer."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def resume_partitions(self, tps: Any) -> None:
        self.calls.append("resume " + ",".join(sorted(tps)))

    def resume_flow(self) -> None:
        self.calls.append("resume_flow")


class App:
    """Stands for the Faust app: its consumer, one setting, and `crash`, which it records."""

    def __init__(self) -> None:
        self.consumer = Consumer()
        self.conf = type("Conf", (), {"broker_request_timeout": 90.0})()
        self.crashed: list[Exception] = []

    async def crash(self, reason: Exception) -> None:
        self.crashed.append(reason)


class Recovery:
    """Stands for faust's Recovery: the attributes the wrapper reads."""

    def __init__(self, stopping: bool = False) -> None:
        self.app = App()
        self.should_stop = stopping

    def _is_changelog_tp(self, tp: str) -> bool:
        return tp.endswith("changelog")


async def faust_order(self: Recovery, generation_id: int = 0) -> None:
    """Faust 0.15.3's order in `on_recovery_completed`: resume streams, seek, clear, flow."""
    consumer = self.app.consumer
    consumer.resume_partitions({"events", "windows-changelog"})
    consumer.calls.append("seek")
    consumer.calls.append("clear buffers")
    consumer.resume_flow()


def test_stream_partitions_resume_only_after_the_seek_and_the_emptied_buffers() -> None:
    recovery = Recovery()
    asyncio.run(resume_streams_after_clearing(faust_order)(recovery))
    assert recovery.app.consumer.calls == [
        "resume windows-changelog",
        "seek",
        "clear buffers",
        "resume_flow",
        "resume events",
    ]
    assert "resume_partitions" not in vars(recovery.app.consumer)  # the class's methods again


def test_a_step_that_stops_early_still_resumes_what_it_held() -> None:
    async def stops(self: Recovery, generation_id: int = 0) -> None:
        self.app.consumer.resume_partitions({"events"})
        raise TimeoutError

    recovery = Recovery()
    with pytest.raises(TimeoutError):
        asyncio.run(resume_streams_after_clearing(stops)(recovery))
    assert recovery.app.consumer.calls == ["resume events"]


async def seek_timed_out(self: Recovery, generation_id: int = 0) -> None:
    """Faust's step when its seek outlives broker_request_timeout: `_wait` raises ServiceStopped."""
    self.app.consumer.resume_partitions({"events"})
    raise ServiceStopped


def test_a_timed_out_seek_while_running_logs_one_error_and_exits(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(recovery_module, "_hard_exit", lambda: None)  # the 30-s backstop
    recovery = Recovery()
    with pytest.raises(ServiceStopped):
        asyncio.run(resume_streams_after_clearing(seek_timed_out)(recovery))
    assert [type(e).__name__ for e in recovery.app.crashed] == ["RecoveryStalled"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "took over 90s" in errors[0] and "exiting non-zero" in errors[0]


def test_a_shutdown_during_recovery_stops_quietly_as_before() -> None:
    recovery = Recovery(stopping=True)
    with pytest.raises(ServiceStopped):
        asyncio.run(resume_streams_after_clearing(seek_timed_out)(recovery))
    assert recovery.app.crashed == []


class Fetching:
    """Stands for Faust's Consumer in the fetch loop: read offsets, acks per topic, and `seek`."""

    def __init__(self, read: dict[str, int]) -> None:
        self._read_offset = dict(read)
        self.app = type("App", (), {"topics": type("Topics", (), {})()})()
        self.app.topics.acks_enabled_for = lambda topic: topic != "changelog"
        self.sought: list[tuple[str, int]] = []

    async def seek(self, tp: str, offset: int) -> None:
        self.sought.append((tp, offset))
        self._read_offset[tp] = offset


class TP(str):
    @property
    def topic(self) -> str:
        return self.split("/")[0]

    @property
    def partition(self) -> int:
        return int(self.split("/")[1])


def fetched(*records: tuple[str, int]) -> Any:
    """A `getmany` that yields these (partition, offset) records."""

    async def getmany(self: Any, timeout: float) -> Any:
        for tp, offset in records:
            yield TP(tp), type("Message", (), {"offset": offset})()

    return getmany


def drain(consumer: Fetching, *records: tuple[str, int]) -> list[tuple[str, int]]:
    async def run() -> list[tuple[str, int]]:
        getmany = rewinding_jumps(fetched(*records))
        return [(str(tp), m.offset) async for tp, m in getmany(consumer, timeout=1.0)]

    return asyncio.run(run())


def test_a_fetch_that_jumps_past_the_read_offset_is_sought_back_once() -> None:
    consumer = Fetching({"events/1": 1224, "events/2": 40})
    batch = [("events/1", 1549), ("events/2", 41), ("events/1", 1550)]
    assert drain(consumer, *batch) == [("events/2", 41)]  # events/1's records are read again
    assert consumer.sought == [("events/1", 1224)]
    assert drain(consumer, ("events/1", 1224), ("events/1", 1225)) == [
        ("events/1", 1224),
        ("events/1", 1225),
    ]


def test_a_jump_that_comes_back_after_the_rewind_is_left_to_faust() -> None:
    consumer = Fetching({"events/1": 1224})
    drain(consumer, ("events/1", 1549))
    assert drain(consumer, ("events/1", 1549)) == [("events/1", 1549)]
    assert consumer.sought == [("events/1", 1224)]


def test_changelog_gaps_and_unknown_read_offsets_pass_through() -> None:
    consumer = Fetching({"changelog/0": 10})
    records = [("changelog/0", 50), ("events/3", 900)]
    assert drain(consumer, *records) == records
    assert consumer.sought == []
