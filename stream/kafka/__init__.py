"""The Kafka edge: the only package that imports faust, aiokafka or confluent_kafka.

Its modules: `app` (the Faust app, table and agent runner), `store` (WindowStore), `publish`
(producer hand-over, murmur2), `clients` (assigned readers, a sender), `topics` (admin),
`faustpatch`, `rejoin`, `highwater`, `recovery` (Faust/aiokafka fixes) and `broker` (the embedded
broker launcher). Here: confluent-kafka client configs from Settings (SASL/TLS included), plus a
reachability check.

>>> producer_config(Settings(bootstrap="k:9092"))["partitioner"]
'murmur2_random'
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream.settings import Settings

# murmur2 matches aiokafka/Faust and the Java client, so windows stay co-partitioned with events
# (DESIGN pitfall 2); "default" is librdkafka's own CRC32-based partitioner.
PARTITIONERS: dict[str, str] = {"murmur2": "murmur2_random", "default": "consistent_random"}
Partitioner = Literal["murmur2", "default"]

_LOG = logging.getLogger("bstream.librdkafka")
# librdkafka logs each refused connection; keep that off the terminal unless logging is configured.
_LOG.addHandler(logging.NullHandler())


class KafkaUnavailable(RuntimeError):
    """The broker cannot be reached, or a needed topic is missing."""


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection settings common to every client (includes secrets: never log the result)."""
    return {**settings.kafka_client_config(), "logger": _LOG}


def producer_config(
    settings: Settings, partitioner: Partitioner = "murmur2", idempotent: bool = False
) -> dict[str, Any]:
    """Producer that keeps each key's order: one request in flight, or idempotence."""
    if partitioner not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {partitioner!r}; choose {', '.join(PARTITIONERS)}")
    conf = {
        **client_config(settings),
        "partitioner": PARTITIONERS[partitioner],
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "message.timeout.ms": 30_000,
        # a write to a missing topic fails instead of creating it with broker defaults (pitfall 12)
        "allow.auto.create.topics": False,
    }
    if idempotent:
        conf["enable.idempotence"] = True
    else:
        # With a single request in flight a retry cannot overtake a later batch, so per-key order
        # holds; a retry may duplicate (at-least-once), which consumers handle via event_id.
        conf["max.in.flight.requests.per.connection"] = 1
    return conf


def consumer_config(
    settings: Settings, group_id: str, from_beginning: bool = True, commit: bool = False
) -> dict[str, Any]:
    """Consumer settings; session timeout from Settings (Tansu joins take ~23 s at the default)."""
    return {
        **client_config(settings),
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": commit,
        "allow.auto.create.topics": False,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    """AdminClient settings."""
    return client_config(settings)


def check_reachable(bootstrap: str, timeout: float = 2.0) -> None:
    """Fail fast with KafkaUnavailable when no bootstrap server accepts a TCP connection.

    librdkafka would otherwise retry quietly until its own timeout.
    """
    reasons = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
                return
        except (OSError, ValueError) as exc:
            reasons.append(f"{server.strip()}: {getattr(exc, 'strerror', None) or exc}")
    raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap} ({'; '.join(reasons)})")


def topic_partitions(settings: Settings, topics: list[str], timeout: float = 5.0) -> dict[str, int]:
    """Partition count per existing topic; KafkaUnavailable when the broker cannot be reached."""

    check_reachable(settings.bootstrap)
    admin = AdminClient(admin_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {settings.bootstrap}: {exc.args[0].str()}"
        ) from None
    return {
        name: len(metadata.topics[name].partitions)
        for name in topics
        if name in metadata.topics and metadata.topics[name].error is None
    }


def require_topic(settings: Settings, topic: str, timeout: float = 5.0) -> int:
    """Partition count of `topic`; KafkaUnavailable with a hint when it does not exist."""
    found = topic_partitions(settings, [topic], timeout)
    if topic not in found:
        raise KafkaUnavailable(
            f"topic {topic!r} does not exist on {settings.bootstrap}; run `bstream topics create`"
        )
    return found[topic]
