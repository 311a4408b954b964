"""The worker's logic, in process (stream.testing): records in, predictions/changelog/DLQ out.

The real worker, store, intake, inference and outputs with the real tiny model; no broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.validation import validate_prediction
from stream import inference as inference_module
from stream.inference import Inference
from stream.intake import Job, Target
from stream.metrics import Metrics
from stream.outputs import OutRecord
from stream.settings import Settings
from stream.testing import Delivered, Harness, Message, event
from stream.windows import Window, decode_window
from stream.worker import Published


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Any:
    from model.runtime import Runtime

    return Runtime.load(tiny_bundle, device="cpu")


@pytest.fixture
def harness(runtime: Any) -> Iterator[Harness]:
    running = Harness(runtime)
    yield running
    running.close()


def stored(harness: Harness, user: str) -> Window | None:
    return harness.store.get(harness.user_key(user))


def test_a_batch_is_coalesced_to_one_prediction_and_one_changelog_record_per_user(
    harness: Harness,
) -> None:
    out = harness.run([event("a", 1), event("b", 2), event("a", 3), event("a", 4)])

    assert [p["user"] for p in out.predictions] == [harness.pseudo("a"), harness.pseudo("b")]
    assert [p["window_size"] for p in out.predictions] == [3, 1]
    assert all(validate_prediction(p) is None for p in out.predictions)
    assert [r.key for r in out.changelog] == [harness.user_key("a"), harness.user_key("b")]
    assert out.committed == [0, 1, 2, 3] and out.crashed is None


def test_naive_mode_predicts_once_per_event(runtime: Any) -> None:
    harness = Harness(runtime, Settings(store="memory://", naive=True))

    out = harness.run([event("a", 1), event("a", 2), event("b", 3)])
    harness.close()

    assert [p["window_size"] for p in out.predictions] == [1, 2, 1]
    assert len(out.changelog) == 3 and out.committed == [0, 1, 2]


def test_invalid_records_go_to_the_dlq_with_a_reason_and_the_rest_is_predicted(
    harness: Harness,
) -> None:
    out = harness.run([b"{not json", event("a", 1), orjson.dumps({"user_id": "b"})])

    assert [letter[2]["error.code"] for letter in out.dead_letters] == [
        "not_json",
        "missing_field",
    ]
    assert [letter[1] for letter in out.dead_letters][0] == b"{not json"  # original bytes
    assert [p["user"] for p in out.predictions] == [harness.pseudo("a")]
    assert out.committed == [0, 1, 2]


def test_out_of_order_events_are_kept_in_time_order(harness: Harness) -> None:
    harness.run([event("a", 30), event("a", 10)])
    out = harness.run([event("a", 20)])

    window = stored(harness, "a")
    assert window is not None and [e[0] for e in window.entries] == [10, 20, 30]
    assert out.predictions[-1]["last_event_ts"] == 30
    assert decode_window(out.changelog[-1].value or b"") == window


def test_a_redelivered_event_changes_nothing_and_is_still_released(harness: Harness) -> None:
    first = harness.run([event("a", 1, event_id="e1")])
    again = harness.run([event("a", 1, event_id="e1")])

    assert len(again.predictions) == len(first.predictions) == 1  # no new prediction
    assert len(again.changelog) == 1  # no new changelog record
    assert harness.metrics.duplicates._value.get() == 1
    assert again.committed == [1]


def test_erasure_removes_the_window_and_publishes_its_tombstone(harness: Harness) -> None:
    harness.run([event("a", 1), event("b", 2)])

    done = harness.erase("a")
    again = harness.erase("a")

    out = harness.output()
    assert done.erased and not again.erased
    assert (out.changelog[-1].key, out.changelog[-1].value) == (harness.user_key("a"), None)
    assert stored(harness, "a") is None and stored(harness, "b") is not None
    assert harness.erase("b", owned=[3]).erased is False  # not this worker's partition


def test_idle_windows_expire_after_the_ttl_and_a_new_event_starts_afresh(
    harness: Harness,
) -> None:
    harness.run([event("a", 1), event("a", 2)])
    seen = stored(harness, "a")
    assert seen is not None
    ttl_ms = int(harness.settings.idle_ttl_s * 1000)

    assert harness.expire(seen.seen_ms + ttl_ms) == 0  # idle exactly the TTL: kept
    assert harness.expire(seen.seen_ms + ttl_ms + 1) == 1
    out = harness.run([event("a", 3)])

    assert out.changelog[-2].value is None  # the tombstone
    assert out.predictions[-1]["window_size"] == 1


def target(user: bytes, *timestamps: Any) -> Target:
    entries = tuple((ts, 0, f"i{i}", None, None, f"e{i}") for i, ts in enumerate(timestamps))
    return Target(user, Window(0, 0, entries), arrival=0.0)  # type: ignore[arg-type]


def test_predict_builds_one_valid_prediction_per_target(runtime: Any) -> None:
    inference = Inference(Settings(), Metrics(), runtime, "k1")

    records = asyncio.run(inference.predict([target(b"aa", 1, 2), target(b"bb", 5)]))

    assert records is not None and [r.key for r in records] == [b"aa", b"bb"]
    predictions = [orjson.loads(r.value or b"") for r in records]
    assert all(validate_prediction(p) is None for p in predictions)
    assert [(p["window_size"], p["last_event_ts"]) for p in predictions] == [(2, 2), (1, 5)]
    assert inference.metrics.inference_seconds._sum.get() > 0


def test_failed_inference_is_retried_then_given_up(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference_module, "RETRY_BACKOFF_S", 0.01)
    inference = Inference(Settings(), Metrics(), runtime, "k1")

    records = asyncio.run(inference.predict([target(b"aa", "not-a-timestamp")]))  # TypeError

    assert records is None
    assert (
        inference.metrics.inference_failures._value.get() == inference_module.INFERENCE_RETRIES + 1
    )


def test_the_next_batchs_model_call_runs_while_the_previous_batch_is_published(
    runtime: Any,
) -> None:
    """The inference thread goes on to the next call without waiting for the event loop."""
    started: list[float] = []

    class Recorded:  # the real model; notes when each call starts
        version = runtime.version

        def predict(self, windows: Any) -> Any:
            started.append(time.monotonic())
            return runtime.predict(windows)

    harness, published = Harness(Recorded()), []
    enqueue = harness.sink.enqueue

    async def slow_enqueue(topic: str, records: Any) -> Any:
        if topic == harness.settings.predictions_topic:
            await asyncio.sleep(0.3)  # the loop is busy with batch 1's outputs meanwhile
            published.append(time.monotonic())
        return await enqueue(topic, records)

    harness.sink.enqueue = slow_enqueue  # type: ignore[method-assign]
    out = harness.run([event("a", 1)], [event("b", 2)])
    harness.close()

    assert [p["window_size"] for p in out.predictions] == [1, 1]
    assert len(started) == 2 and started[1] < published[0]


def test_a_later_job_acked_first_lets_no_offset_go_before_the_earlier_one(
    harness: Harness,
) -> None:
    """Faust's gap check misses a gap with no committed offset; release must ack in job order."""
    first, second = (Delivered(Message(event(), None, 0, offset)) for offset in (0, 1))

    class HeldSink:  # the broker acknowledges each changelog hand-over when the test says so
        def __init__(self) -> None:
            self.acks: list[asyncio.Future[None]] = []

        async def enqueue(self, topic: str, records: Any) -> list[asyncio.Future[None]]:
            self.acks.append(asyncio.get_running_loop().create_future())
            return [self.acks[-1]]

    async def scenario() -> tuple[int, int, int, int]:
        loop, worker, sink = asyncio.get_running_loop(), harness.worker, HeldSink()
        harness.store.sink = sink
        futures = [loop.create_future() for _ in range(4)]  # changelog handed over, events acked
        jobs = [Job([], [e], [OutRecord(b"k", b"v", partition=0)]) for e in (first, second)]
        for e in (first, second):
            e.message.incref()  # as hand_over does
        releasing = [
            asyncio.ensure_future(worker.release(job, Published([]), *chain))
            for job, chain in [
                (jobs[0], (None, futures[0], None, futures[1])),
                (jobs[1], (futures[0], futures[2], futures[1], futures[3])),
            ]
        ]
        await asyncio.sleep(0.05)
        sink.acks[1].set_result(None)  # the later job's changelog is acked first
        await asyncio.sleep(0.05)
        held = (first.message.refcount, second.message.refcount)
        sink.acks[0].set_result(None)
        await asyncio.gather(*releasing)
        return (*held, first.message.refcount, second.message.refcount)

    assert harness.loop.run_until_complete(scenario()) == (2, 2, 1, 1)
