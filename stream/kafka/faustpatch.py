"""Narrow patches of faust-streaming 0.15 internals, each measured; re-check on upgrade.

1. Faust hard-codes `fetch_max_wait_ms=1500` and Tansu does not answer a waiting fetch early when
   data arrives, which added ~0.4-1.2 s to every event's latency: the worker asks for 100 ms.
2. Faust's fetch loop hands each message to its streams through `Service.wait_first(callback,
   suspend_flow.wait())`, which creates four tasks per message and was the largest single cost
   of the event loop (py-spy: ~14%). The patch runs the callback at once instead; only when it
   has to wait (a full stream buffer, suspended flow) does it fall back to `wait_first`, which
   then continues the same callback, so suspension and stopping behave exactly as before.
3. When recovery completes, Faust resumes the stream partitions, then seeks them to the committed
   offsets, then resumes flow control, which empties every stream buffer. The running fetcher
   reads records in between; the emptying drops those not yet taken, and the next record after
   them then looks like a jump over a gap, which Faust counts as acked (`Consumer._add_gap`). So
   records were committed unprocessed (measured: kill -9 fault runs lost 10 and 1,312 users; see
   docs/DESIGN.md, pitfall 15). The patch resumes the stream partitions only once the buffers
   are emptied, so the first record fetched is the committed one. Any remaining gap is logged.
4. In the same step, a seek to the committed offsets that takes longer than
   `broker_request_timeout` (90 s) makes Faust's `Recovery._wait` raise `ServiceStopped`, and the
   recovery task ends with a debug line: the worker stays up with its stream partitions paused
   and never takes another event (the CI's kill -9 scenario hung so for 10 minutes after
   "Seek stream partitions to committed offsets"). The patch logs one ERROR line and exits
   non-zero instead, as the recovery watchdog does, so a supervisor restarts the worker.
5. After a rebalance, the first records fetched from a stream partition can start past the
   offset that Faust's recovery sought to (the rebalance fault scenario, 2 of 4 runs on
   2026-12-03: "the fetch skipped offsets 1225-1548", a second after "Worker ready"; the users of
   those records lost their events). Faust counts such a jump as acked. The patch instead seeks
   the partition back to the offset Faust expects, once per jump, and drops the rest of that
   partition's fetched batch: the skipped records are read again (at least once), and a jump
   that comes back after the rewind is counted as Faust would, with the warning of item 3.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any

from faust.tables import recovery as faust_recovery
from faust.tables.recovery import ServiceStopped
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from stream.kafka.recovery import RecoveryStalled, exit_for_restart

FETCH_MAX_WAIT_MS = 100
_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
_wait_first = faust_consumer.Consumer.wait_first
_add_gap = faust_consumer.Consumer._add_gap
_getmany = faust_consumer.Consumer.getmany
_resume_streams = faust_recovery.Recovery._resume_streams
_on_recovery_completed = faust_recovery.Recovery.on_recovery_completed
log = logging.getLogger("bstream.consumer")


def _worker_consumer_short_fetch_wait(self: Any, transport: Any) -> Any:
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


class Resumed:
    """Awaits the rest of a coroutine that already ran up to its first suspension."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro, self.yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:  # what `await coro` does, from the second step on
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - cancellation goes into the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await Resumed(coro, yielded)


async def eager_wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    """`wait_first(callback(message), suspend_flow.wait())`, without tasks when nothing waits."""
    if timeout is not None or len(coros) != 2 or not all(map(inspect.iscoroutine, coros)):
        return await _wait_first(self, *coros, timeout=timeout)
    callback, suspended = coros
    try:
        yielded = callback.send(None)
    except StopIteration as done:
        suspended.close()
        return WaitResults([callback], [done.value], False)
    except BaseException:
        suspended.close()
        raise
    return await _wait_first(self, resume(callback, yielded), suspended)


RecoveryStep = Callable[..., Awaitable[None]]


def resume_streams_after_clearing(step: RecoveryStep) -> RecoveryStep:
    """Wrap a Recovery step so stream partitions resume with the flow, after buffers are emptied.

    Inside the step, `consumer.resume_partitions` holds back non-changelog partitions and
    `consumer.resume_flow` (which Faust calls right after `flow_control.resume()`) resumes them.
    """

    async def step_in_safe_order(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        resume_partitions, resume_flow = consumer.resume_partitions, consumer.resume_flow
        held: set[Any] = set()

        def hold_streams(tps: Iterable[Any]) -> None:
            tps = set(tps)
            streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
            held.update(streams)
            if tps - streams:
                resume_partitions(tps - streams)

        def resume_flow_then_streams() -> None:
            resume_flow()
            if held:
                resume_partitions(set(held))
                held.clear()

        consumer.resume_partitions, consumer.resume_flow = hold_streams, resume_flow_then_streams
        try:
            await step(self, generation_id)
        except ServiceStopped:
            if not self.should_stop:  # not a shutdown: a wait in the step timed out (item 4)
                await gave_up(self)
            raise
        finally:
            del consumer.resume_partitions, consumer.resume_flow  # back to the class's methods
            if held:  # the step stopped between the two calls: resume as Faust would have
                resume_partitions(held)

    return step_in_safe_order


async def gave_up(recovery: Any) -> None:
    """Recovery's last step timed out while the worker runs: say so and exit for a restart."""
    timeout = recovery.app.conf.broker_request_timeout
    log.error(
        "changelog recovery could not finish: seeking the stream partitions to their committed "
        "offsets took over %.0fs (broker_request_timeout); exiting non-zero so that a supervisor "
        "restarts the worker",
        timeout,
    )
    await exit_for_restart(recovery.app, RecoveryStalled("the seek to committed offsets hung"))


GetMany = Callable[..., AsyncIterator[tuple[Any, Any]]]


def rewinding_jumps(getmany: GetMany) -> GetMany:
    """Wrap `Consumer.getmany`: a stream partition whose records jump past its read offset is
    sought back to that offset (once per jump) instead of being counted as acked (item 5)."""

    async def getmany_without_jumps(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        rewound: set[Any] = set()  # partitions sought back in this batch: skip their other records
        tried: set[tuple[Any, int]] = getattr(self, "_bstream_rewinds", set())
        self._bstream_rewinds = tried
        async for tp, message in getmany(self, timeout):
            if tp in rewound:
                continue
            read = self._read_offset.get(tp)
            jump = read is not None and read > 0 and message.offset > read + 1
            if jump and (tp, read) not in tried and self.app.topics.acks_enabled_for(tp.topic):
                tried.add((tp, read))
                rewound.add(tp)
                log.warning(
                    "the fetch of %s partition %d jumped from offset %d to %d; reading from %d "
                    "again",
                    tp.topic,
                    tp.partition,
                    read,
                    message.offset,
                    read,
                )
                await self.seek(tp, read)
                continue
            yield tp, message

    return getmany_without_jumps


async def logged_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """`Consumer._add_gap`, with a warning: offsets Faust will count as acked without a record."""
    log.warning(
        "the fetch skipped offsets %d-%d of %s partition %d; Faust counts them as done",
        offset_from,
        offset_to,
        tp.topic,
        tp.partition,
    )
    await _add_gap(self, tp, offset_from, offset_to)


def install() -> None:
    """Apply the patches (idempotent)."""
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = (  # type: ignore[method-assign]
        _worker_consumer_short_fetch_wait
    )
    faust_consumer.Consumer.wait_first = eager_wait_first  # type: ignore[method-assign]
    faust_consumer.Consumer._add_gap = logged_gap  # type: ignore[method-assign]
    faust_consumer.Consumer.getmany = rewinding_jumps(_getmany)  # type: ignore[method-assign]
    recovery: Any = faust_recovery.Recovery
    recovery._resume_streams = resume_streams_after_clearing(_resume_streams)
    recovery.on_recovery_completed = resume_streams_after_clearing(_on_recovery_completed)
