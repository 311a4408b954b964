"""SIGTERM mid-stream, restart as two workers: windows come back from a co-partitioned changelog.

Half the users are produced with murmur2 (aiokafka/Java default), half with librdkafka's default
CRC32 partitioner (kcat's default). Every changelog record must sit in the partition its user's
events are consumed from; after the restart, each of the two workers recovers only its own
partitions, so a window in the wrong partition would come back incomplete.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from faust.types import TP as FaustTP

from stream.kafka.broker import EmbeddedBroker
from stream.kafka.highwater import true_end_offsets
from stream.windows import decode_window
from tests.integration.worker_support import WorkerProcess, collect, new_env, produce, reflects

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000
USERS = 40  # per partitioner
EVENTS = 8  # per user: 4 before the restart, 4 around it


def event(user: str, i: int) -> dict[str, Any]:
    return {
        "user_id": user,
        "event_type": ("view", "cart")[i % 2],
        "ts": T0 + i * 60_000,
        "item_id": f"{user}-{i}",
    }


def batch(users: list[str], steps: range) -> list[tuple[bytes, bytes]]:
    return [(u.encode(), orjson.dumps(event(u, i))) for i in steps for u in users]


def test_restart_restores_co_partitioned_windows(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    wenv = new_env(broker.bootstrap)
    topic = wenv.settings.events_topic
    groups = {
        "murmur2_random": [f"m{i}" for i in range(USERS)],
        "consistent_random": [f"c{i}" for i in range(USERS)],
    }
    partition_of: dict[str, int] = {}
    everyone = [u for users in groups.values() for u in users]
    newest = {wenv.user(u): T0 + (EVENTS - 1) * 60_000 for u in everyone}

    with WorkerProcess(wenv, tiny_bundle, tmp_path, name="first") as first:
        first.wait_ready()
        for partitioner, users in groups.items():
            placed = produce(broker.bootstrap, topic, batch(users, range(4)), partitioner)
            partition_of.update(
                {wenv.user(u): p for u, (p, _) in zip(users * 4, placed, strict=True)}
            )
        half = {wenv.user(u): T0 + 3 * 60_000 for u in everyone}
        collect(broker.bootstrap, wenv.settings.predictions_topic, reflects(half), timeout=90)

        def second_half() -> None:
            for i in range(4, EVENTS):
                for partitioner, users in groups.items():
                    produce(broker.bootstrap, topic, batch(users, range(i, i + 1)), partitioner)
                time.sleep(0.3)

        producer = threading.Thread(target=second_half)
        producer.start()
        time.sleep(0.4)
        assert first.stop() == 0  # SIGTERM mid-stream: a clean, zero exit
        producer.join()

    with (
        WorkerProcess(wenv, tiny_bundle, tmp_path, name="second-a") as a,
        WorkerProcess(wenv, tiny_bundle, tmp_path, name="second-b") as b,
    ):
        a.wait_ready(), b.wait_ready()
        predictions = collect(
            broker.bootstrap,
            wenv.settings.predictions_topic,
            reflects(newest, dict.fromkeys(newest, EVENTS)),
            timeout=120,
        )
        assert a.stop() == 0 and b.stop() == 0

    changelog = collect(
        broker.bootstrap, wenv.changelog_topic, lambda got: len(got) > 0, timeout=30
    )
    assert predictions
    assert {m.key.decode() for m in changelog if m.key} == set(newest)
    wrong = [m.key for m in changelog if m.key and m.partition != partition_of[m.key.decode()]]
    assert wrong == []
    assert all(decode_window(m.value).partition == m.partition for m in changelog if m.value)


def test_true_end_offsets_sees_the_whole_last_batch(broker: EmbeddedBroker) -> None:
    wenv = new_env(broker.bootstrap, partitions=1)
    tp = TopicPartition(wenv.settings.events_topic, 0)
    produce(broker.bootstrap, tp.topic, [(b"k", b"v")] * 10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "hw-test"})
    reported = consumer.get_watermark_offsets(tp, timeout=10)[1]
    consumer.close()

    ends = true_end_offsets(wenv.settings, {FaustTP(tp.topic, 0): reported})

    assert ends == {FaustTP(tp.topic, 0): 10}
