"""Hostile input: hypothesis-drawn malformed and adversarial records interleaved with valid events.

Every record is handled: invalid ones reach the DLQ with their original bytes and the reason the
shared validator gives, duplicates (same event_id) are ignored and counted, and the worker stays
up. Every valid event, the odd-but-legal ones included, is reflected in a prediction.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import strategies as st

from schemas.validation import decode_event
from stream.kafka.broker import EmbeddedBroker
from tests.faults.hostile import SLOT, T0, Hostile, draw_many, hostile_records
from tests.faults.support import (
    Expected,
    PredictionWatcher,
    ProcessSampler,
    dlq_key,
    mib,
    record_result,
    wait_for,
)
from tests.integration.worker_support import WorkerEnv, WorkerProcess, collect, new_env

pytestmark = pytest.mark.integration
MAX_RECORD_BYTES = 8_000_000  # the test producer's limit; the hostile records stay below it
CHANGES = ("exact", "new_ts", "new_item", "new_type")


@dataclass(frozen=True)
class Record:
    """One record to produce, with what the contract says must happen to it."""

    key: bytes | None
    value: bytes | None
    kind: str
    invalid_code: str | None  # DLQ reason, None for a valid event
    event: dict[str, Any] | None  # the validated event (valid records only)
    duplicate: bool = False


def base_events(users: int, per_user: int) -> list[dict[str, Any]]:
    """Well-formed events with unique event_ids, in per-user time order."""
    return [
        {
            "user_id": f"v{u}",
            "event_type": ("view", "click", "cart", "fav", "purchase")[i % 5],
            "ts": T0 + i * 1000,
            "item_id": f"item{i % 4}",
            "event_id": f"v{u}-e{i}",
        }
        for i in range(per_user)
        for u in range(users)
    ]


def duplicate_of(event: dict[str, Any], change: str) -> dict[str, Any]:
    """A record reusing `event`'s event_id: identical, or with other content (still a duplicate)."""
    changed = {
        "exact": {},
        "new_ts": {"ts": event["ts"] + 999_999},
        "new_item": {"item_id": "elsewhere"},
        "new_type": {"event_type": "purchase"},
    }[change]
    return {**event, **changed}


def classify(kind: str, key: bytes | None, value: bytes | None, expect: str) -> Record:
    """Ask the shared validator what the worker must do; check it agrees with the construction."""
    decoded = decode_event(value)
    code = decoded.invalid.code if decoded.invalid else None
    assert expect != "dlq" or code is not None, f"{kind} passed validation: {value!r:.200}"
    assert expect != "valid" or code is None, f"{kind} rejected ({code}): {value!r:.200}"
    return Record(key, value, kind, code, decoded.event)


def assemble(
    hostile: list[Hostile], dups: list[tuple[int, str]], base: list[dict[str, Any]], seed: int
) -> list[Record]:
    """Interleave valid events, hostile records and duplicates (each after its original)."""
    rng = random.Random(seed)
    originals = [classify("valid", e["user_id"].encode(), orjson.dumps(e), "valid") for e in base]
    stream = list(originals)
    for n, record in enumerate(hostile):
        fresh = f"h{n}".encode()  # every hostile record gets a user of its own
        value = record.value.replace(SLOT.encode(), fresh) if record.value else record.value
        key = record.key.replace(SLOT.encode(), fresh) if record.key else record.key
        stream.insert(
            rng.randrange(len(stream) + 1), classify(record.kind, key, value, record.expect)
        )
    for index, change in dups:
        at = next(i for i, r in enumerate(stream) if r is originals[index])
        dup = duplicate_of(base[index], change)
        copy = Record(originals[index].key, orjson.dumps(dup), "duplicate", None, dup, True)
        stream.insert(rng.randrange(at + 1, len(stream) + 1), copy)
    return stream


def expectations(wenv: WorkerEnv, stream: list[Record]) -> Expected:
    expected = Expected()
    for record in stream:
        if record.event is not None and not record.duplicate:
            expected.add(wenv.user(record.event["user_id"]), record.event)
    return expected


def produce_all(bootstrap: str, topic: str, stream: list[Record]) -> list[tuple[int, int]]:
    """Send in order; returns each record's (partition, offset)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "message.max.bytes": MAX_RECORD_BYTES + 1024,
            "linger.ms": 5,
        }
    )
    placed: list[tuple[int, int]] = [(-1, -1)] * len(stream)

    def report(index: int) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            assert err is None, err
            placed[index] = (msg.partition(), msg.offset())

        return on_delivery

    for i, record in enumerate(stream):
        while True:
            try:
                producer.produce(topic, record.value, record.key, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0
    assert (-1, -1) not in placed
    return placed


def poison_run(
    broker: EmbeddedBroker, bundle: Path, workdir: Path, n_hostile: int, users: int, per_user: int
) -> None:
    base = base_events(users, per_user)
    hostile = draw_many(hostile_records, n_hostile)
    dup_specs = draw_many(
        st.tuples(st.integers(0, len(base) - 1), st.sampled_from(CHANGES)), n_hostile // 10
    )
    stream = assemble(hostile, dup_specs, base, seed=n_hostile)
    wenv = new_env(broker.bootstrap)
    expected = expectations(wenv, stream)
    invalid = Counter(r.invalid_code for r in stream if r.invalid_code)
    n_invalid, n_dups = sum(invalid.values()), sum(r.duplicate for r in stream)

    watcher = PredictionWatcher(broker.bootstrap, wenv.settings.predictions_topic)
    with WorkerProcess(wenv, bundle, workdir, name="poison") as worker:
        worker.wait_ready()
        sampler = ProcessSampler(worker.proc.pid)  # type: ignore[union-attr]
        placed = produce_all(broker.bootstrap, wenv.settings.events_topic, stream)
        dlq = collect(
            broker.bootstrap,
            wenv.settings.dlq_topic,
            lambda got: len(got) >= n_invalid,
            timeout=300,
        )
        watcher.wait_reflects(expected, timeout=300)
        wait_for(lambda: worker.metric("bstream_dlq_total") == n_invalid, 60, "DLQ metric")
        alive = worker.proc is not None and worker.proc.poll() is None
        health = worker._get("/health")[0]
        metric = worker.metric
        counts: dict[str, Any] = {
            "events": metric("bstream_events_total"),
            "dlq": metric("bstream_dlq_total"),
            "duplicates": metric("bstream_duplicate_events_total"),
            "invalid": {code: metric("bstream_invalid_total", reason=code) for code in invalid},
            "dropped_fields": metric("bstream_dropped_fields_total"),
        }
        sampler.stop()
        assert worker.stop() == 0
    watcher.close()

    by_source = {
        (int(m.headers["source.partition"]), int(m.headers["source.offset"])): m for m in dlq
    }
    wanted = {where: r for where, r in zip(placed, stream, strict=True) if r.invalid_code}
    assert alive and health == 200
    assert len(dlq) == n_invalid and by_source.keys() == wanted.keys()
    for where, record in wanted.items():
        message = by_source[where]
        assert message.headers["error.code"] == record.invalid_code, record.kind
        assert (message.key, message.value) == (dlq_key(record.key), record.value), record.kind
    assert counts["dlq"] == n_invalid
    assert counts["invalid"] == dict(invalid)
    assert counts["duplicates"] == n_dups
    assert counts["events"] == sum(r.event is not None for r in stream)
    assert counts["dropped_fields"] >= sum(
        r.kind == "pii_extras" and r.event is not None for r in stream
    )
    record_result(
        {
            "scenario": "poison/hostile input",
            "runs": 1,
            "events": len(stream),
            "hostile": n_hostile,
            "valid_users": len(expected.newest),
            "users_lost": len(watcher.missing(expected)),
            "duplicates": watcher.duplicates,
            "duplicate_events_ignored": n_dups,
            "dlq": n_invalid,
            "dlq_by_reason": dict(invalid),
            "peak_rss_mib": mib(sampler.peak_rss),
            "time_to_recover_s": 0,
        }
    )


def test_a_thousand_hostile_records_are_all_handled(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    poison_run(broker, tiny_bundle, tmp_path, n_hostile=1_000, users=50, per_user=6)


@pytest.mark.slow
def test_ten_thousand_hostile_records_are_all_handled(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    poison_run(broker, tiny_bundle, tmp_path, n_hostile=10_000, users=300, per_user=10)
