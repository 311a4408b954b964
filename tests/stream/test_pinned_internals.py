"""The private Faust/aiokafka internals our patches rely on, checked on the INSTALLED classes.

The modules of stream/kafka/ (faustpatch, rejoin, highwater, app, publish) reach into
faust-streaming 0.15 and aiokafka 0.14. A rename there would make a patch a silent no-op, so
each pin below fails naming the attribute when it is missing or changes shape. Upgrade Faust or
aiokafka only when this file passes (pyproject.toml fences the versions; constraints.txt pins them).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
from collections.abc import Callable, MutableMapping
from typing import Any

import aiokafka
import faust
import pytest
from faust import streams as faust_streams
from faust.tables import base as faust_tables_base
from faust.tables import recovery as faust_recovery
from faust.tables import table as faust_table
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from stream.kafka import faustpatch, highwater, rejoin
from stream.kafka.app import PinnedTable, as_current_event

Check = Callable[[], None]
PINS: dict[str, Check] = {}


def pin(name: str) -> Callable[[Check], Check]:
    """Register a check under the internal's dotted name (the test id and failure message)."""

    def register(check: Check) -> Check:
        PINS[name] = check
        return check

    return register


class Marker:
    """Stands for a Faust event (as_current_event only takes a weak reference)."""


def params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def source(obj: Any) -> str:
    return inspect.getsource(obj)


def app(name: str) -> faust.App:
    """A real Faust app, never started: its consumer and producer exist, nothing connects."""
    return faust.App(f"pins-{name}", broker="kafka://127.0.0.1:1", autodiscover=False)


# --- stream/kafka/faustpatch.py --------------------------------------------------------------


@pin("AIOKafkaConsumerThread._create_worker_consumer")
def check_1() -> None:
    original = faustpatch._create_worker_consumer  # saved before the patch replaced it
    assert callable(original)
    assert params(original) == ["self", "transport"]
    assert "aiokafka.AIOKafkaConsumer(" in source(original)
    assert "fetch_max_wait_ms=" in source(original)
    current = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    assert current in (original, faustpatch._worker_consumer_short_fetch_wait)
    assert "self._create_worker_consumer(transport)" in source(
        faust_aiokafka.AIOKafkaConsumerThread._create_consumer
    )


@pin("AIOKafkaConsumer._fetch_max_wait_ms")
def check_2() -> None:
    async def build() -> Any:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=7)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            consumer._closed = True  # never started: nothing to close, silence the warning

    assert asyncio.run(build()) == 7
    # the value must reach the fetcher when the consumer starts
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source(aiokafka.AIOKafkaConsumer.start)


@pin("Consumer.wait_first")
def check_3() -> None:
    original = faustpatch._wait_first
    assert callable(original) and inspect.iscoroutinefunction(original)
    assert params(original) == ["self", "coros", "timeout"]
    assert faust_consumer.Consumer.wait_first in (original, faustpatch.eager_wait_first)
    # the fetch loop's only call: callback(message) first, then the suspension wait
    call = re.compile(
        r"await self\.wait_first\(\s*callback\(message\), self\.suspend_flow\.wait\(\)"
    )
    assert call.search(source(faust_consumer.Consumer._drain_messages))


@pin("Recovery._resume_streams/on_recovery_completed order")
def check_recovery_order() -> None:
    for name in ("_resume_streams", "on_recovery_completed"):
        original = getattr(faustpatch, f"_{name}".replace("__", "_"))
        assert params(original) == ["self", "generation_id"], name
        body = source(original)
        steps = [
            "consumer.resume_partitions(",
            "consumer.perform_seek()",
            "flow_control.resume()",
            "consumer.resume_flow()",
        ]
        at = [body.find(step) for step in steps]
        assert -1 not in at and at == sorted(at), f"Recovery.{name} changed its order: {at}"
    assert callable(faust_recovery.Recovery._is_changelog_tp)
    for name in ("resume_partitions", "resume_flow"):
        assert callable(getattr(faust_consumer.Consumer, name)), name
    assert params(faustpatch._add_gap) == ["self", "tp", "offset_from", "offset_to"]
    assert "await self._add_gap(" in source(faust_consumer.Consumer._drain_messages)


@pin("mode.services.WaitResults")
def check_4() -> None:
    assert WaitResults._fields == ("done", "results", "stopped")


# --- stream/kafka/rejoin.py ------------------------------------------------------------------


@pin("Consumer._read_offset/_committed_offset/_acked/_acked_index/_gap")
def check_5() -> None:
    consumer = app("rejoin").consumer
    for name in rejoin.BOOKKEEPING:
        state = getattr(consumer, name, None)
        assert isinstance(state, MutableMapping), f"Consumer.{name} is {type(state).__name__}"
    # exactly the marks Faust itself forgets on a revocation: no more, no fewer
    popped = re.findall(
        r"self\.(_\w+)\.pop\(tp, None\)", source(faust_consumer.Consumer.on_partitions_revoked)
    )
    assert sorted(popped) == sorted(rejoin.BOOKKEEPING), popped


@pin("App.on_partitions_assigned")
def check_6() -> None:
    assert callable(app("signal").on_partitions_assigned.connect)


# --- stream/kafka/highwater.py ---------------------------------------------------------------


@pin("Consumer.highwaters")
def check_7() -> None:
    consumer = app("hw").consumer
    method = type(consumer).highwaters
    assert inspect.iscoroutinefunction(method)
    assert params(method) == ["self", "partitions"]
    # table recovery calls it on the app's consumer instance, where highwater.install replaces it
    assert "consumer.highwaters(" in source(faust_recovery.Recovery._build_highwaters)
    highwater.install(consumer, settings=None)  # type: ignore[arg-type]
    assert inspect.iscoroutinefunction(consumer.highwaters)


# --- stream/kafka/app.py ---------------------------------------------------------------------


@pin("faust.streams._current_event")
def check_8() -> None:
    var = getattr(faust_streams, "_current_event", None)
    assert isinstance(var, contextvars.ContextVar)
    event = Marker()  # any weak-referenceable object: the contextvar holds a weakref to it
    with as_current_event(event):  # type: ignore[arg-type]
        assert faust_streams.current_event() is event
    assert faust_streams.current_event() is None


@pin("Table.partition_for_key/use_partitioner/data")
def check_9() -> None:
    assert "use_partitioner" in params(faust_tables_base.Collection.__init__)
    assert params(faust_tables_base.Collection.partition_for_key) == ["self", "key"]
    # the Faust write path (table[key] = value, del table[key]) asks it for the changelog partition
    assert source(faust_table.Table).count("self.partition_for_key(key)") == 2
    table = PinnedTable(app("table"), name="w", key_type=bytes, value_type=bytes, partitions=1)
    assert table.use_partitioner is True
    assert isinstance(table.data, MutableMapping)


@pin("Producer.buffer.max_messages")
def check_10() -> None:
    producer = app("buffer").producer
    assert isinstance(producer.buffer.max_messages, int)


# --- stream/kafka/publish.py -----------------------------------------------------------------


@pin("Producer._ensure_producer")
def check_11() -> None:
    producer: Any = app("producer").producer  # the aiokafka driver's Producer
    method = type(producer)._ensure_producer
    assert params(method) == ["self"]
    assert inspect.signature(method).return_annotation in (
        aiokafka.AIOKafkaProducer,
        "aiokafka.AIOKafkaProducer",
    )
    assert "_producer" in source(method)


@pin("AIOKafkaProducer.create_batch/send_batch/send/partitions_for + BatchBuilder")
def check_12() -> None:
    producer = aiokafka.AIOKafkaProducer
    assert params(producer.send)[:7] == [
        "self", "topic", "value", "key", "partition", "timestamp_ms", "headers",
    ]  # fmt: skip
    assert params(producer.send_batch) == ["self", "batch", "topic", "partition"]
    assert inspect.signature(producer.send_batch).parameters["partition"].kind is (
        inspect.Parameter.KEYWORD_ONLY
    )
    assert params(producer.partitions_for) == ["self", "topic"]

    async def batch() -> Any:
        real = producer(bootstrap_servers="127.0.0.1:1")
        try:
            return real.create_batch()
        finally:
            real._closed = True  # never started: nothing to close, silence the warning

    built = asyncio.run(batch())
    assert {"timestamp", "key", "value", "headers"} <= set(params(built.append))
    assert built.record_count() == 0 and callable(built.close)


@pin("Recovery._wait raises ServiceStopped when its wait times out")
def check_recovery_wait_timeout() -> None:
    # faustpatch item 4 turns this into an ERROR line and an exit; a timed-out wait must still
    # reach the step as ServiceStopped (mode's wait_first reports a timeout as "stopped")
    recovery = faust_recovery.Recovery(app("recovery"), tables=None)

    async def timed_out() -> None:
        await recovery._wait(asyncio.sleep(5), timeout=0.01)

    with pytest.raises(faust_recovery.ServiceStopped):
        asyncio.run(timed_out())
    assert "except ServiceStopped" in source(faust_recovery.Recovery._restart_recovery.fun)


@pin("Consumer.getmany/seek/_read_offset, as the fetch loop uses them")
def check_getmany_rewind() -> None:
    # faustpatch item 5 wraps getmany, reads _read_offset and seeks back with Consumer.seek
    assert inspect.isasyncgenfunction(faustpatch._getmany)
    assert params(faustpatch._getmany) == ["self", "timeout"]
    assert params(faust_consumer.Consumer.seek) == ["self", "partition", "offset"]
    drain = source(faust_consumer.Consumer._drain_messages)
    assert "getmany = self.getmany" in drain and "getmany(timeout=" in drain
    assert "get_read_offset = self._read_offset.__getitem__" in drain
    assert "self._read_offset[ensure_TP(partition)] = offset" in source(
        faust_consumer.Consumer.seek
    )
    assert callable(app("getmany").topics.acks_enabled_for)


def test_every_patched_module_has_its_pins() -> None:
    assert len(PINS) == 15


@pytest.mark.parametrize("name", sorted(PINS))
def test_pinned_internal_is_present_with_its_shape(name: str) -> None:
    try:
        PINS[name]()
    except (AssertionError, AttributeError, TypeError, OSError) as exc:
        pytest.fail(
            f"Faust/aiokafka internal {name!r} is missing or changed shape in faust-streaming "
            f"{faust.__version__} / aiokafka {aiokafka.__version__}: {type(exc).__name__}: {exc}"
        )
