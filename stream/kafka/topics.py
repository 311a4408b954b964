"""Idempotent creation of the project's topics (events, predictions, DLQ, control, outcomes,
models, shadow).

>>> [t.name for t in default_topics(Settings(), partitions=4)][3:5]
['behavior.control', 'behavior.outcomes']
>>> [(t.name, t.partitions, t.compact) for t in default_topics(Settings(), partitions=4)][5:]
[('behavior.models', 1, True), ('behavior.predictions.shadow', 4, False)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream.kafka import KafkaUnavailable, admin_config, check_reachable
from stream.settings import Settings

Outcome = Literal["created", "exists"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create."""

    name: str
    partitions: int
    replication_factor: int = 1
    compact: bool = False  # cleanup.policy=compact (the model registry)


def default_topics(settings: Settings, partitions: int | None = None) -> list[TopicSpec]:
    """The topics; all but the registry with the events topic's partition count.

    Every worker reads every partition of the control topic (erase requests are a broadcast; see
    stream/control.py), so its partition count does not matter; it matches for simplicity.
    """
    count = partitions or settings.partitions
    names = [
        settings.events_topic,
        settings.predictions_topic,
        settings.dlq_topic,
        settings.control_topic,
        settings.outcomes_topic,
    ]
    specs = [TopicSpec(name, count, settings.replication_factor) for name in names]
    # The registry is read whole by every worker and needs one order: one compacted partition.
    specs.append(TopicSpec(settings.models_topic, 1, settings.replication_factor, compact=True))
    specs.append(TopicSpec(settings.shadow_topic, count, settings.replication_factor))
    return specs


def create_topics(
    settings: Settings, specs: list[TopicSpec], timeout: float = 10.0
) -> dict[str, Outcome]:
    """Create each topic unless it exists; returns name -> "created" | "exists"."""

    check_reachable(settings.bootstrap)
    admin = AdminClient(admin_config(settings))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {settings.bootstrap}: {exc.args[0].str()}"
        ) from None
    new = [
        NewTopic(
            s.name,
            s.partitions,
            s.replication_factor,
            config={"cleanup.policy": "compact"} if s.compact else {},
        )
        for s in specs
    ]
    futures = admin.create_topics(new, request_timeout=timeout)
    outcome: dict[str, Outcome] = {}
    for spec in specs:
        # exception() instead of result(): a raised error's traceback would pin `admin` in a
        # reference cycle, and a live client connection delays the broker's shutdown.
        failure = futures[spec.name].exception(timeout)
        if failure is None:
            outcome[spec.name] = "created"
            continue
        error = (
            failure.args[0] if failure.args and isinstance(failure.args[0], KafkaError) else None
        )
        if error is None or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            reason = error.str() if error is not None else str(failure)
            raise KafkaUnavailable(f"cannot create topic {spec.name!r}: {reason}")
        outcome[spec.name] = "exists"
    return outcome
