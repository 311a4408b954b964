"""A group with committed events offsets but no changelog topic starts again from the beginning."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from stream.kafka import client_config
from stream.kafka.broker import EmbeddedBroker
from stream.kafka.rejoin import reset_offsets_without_state
from stream.settings import Settings
from tests.integration.worker_support import new_env, produce

pytestmark = pytest.mark.integration


def committed(settings: Settings, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({**client_config(settings), "group.id": settings.app_id})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(tps, timeout=10)]
    finally:
        consumer.close()


def test_offsets_committed_without_a_changelog_go_back_to_the_start(broker: EmbeddedBroker) -> None:
    wenv = new_env(broker.bootstrap, partitions=2)
    s = wenv.settings
    produce(broker.bootstrap, s.events_topic, [(f"u{i}".encode(), b"{}") for i in range(20)])
    consumer = Consumer({**client_config(s), "group.id": s.app_id})
    consumer.commit(
        offsets=[TopicPartition(s.events_topic, p, 5) for p in (0, 1)], asynchronous=False
    )
    consumer.close()

    assert reset_offsets_without_state(s, wenv.changelog_topic) == 2
    assert committed(s, s.events_topic, 2) == [0, 0]
    assert reset_offsets_without_state(s, s.events_topic) == 0  # "changelog" present: untouched
