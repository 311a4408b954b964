"""Client configs from Settings: partitioner, ordering, SASL/TLS passthrough, reachability."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from stream.kafka import (
    KafkaUnavailable,
    admin_config,
    consumer_config,
    producer_config,
    require_topic,
    topic_partitions,
)
from stream.kafka.broker import EmbeddedBroker, free_port
from stream.settings import Settings
from tests.stream.kafka_helpers import make_topic


def test_producer_defaults_to_murmur2_and_one_request_in_flight() -> None:
    conf = producer_config(Settings())

    assert conf["partitioner"] == "murmur2_random"
    assert conf["max.in.flight.requests.per.connection"] == 1
    assert conf["acks"] == "all"


def test_librdkafka_default_partitioner_and_idempotence_are_options() -> None:
    conf = producer_config(Settings(), partitioner="default", idempotent=True)

    assert conf["partitioner"] == "consistent_random"
    assert conf["enable.idempotence"] is True
    assert "max.in.flight.requests.per.connection" not in conf


def test_unknown_partitioner_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown partitioner"):
        producer_config(Settings(), partitioner="round_robin")  # type: ignore[arg-type]


def test_sasl_and_tls_settings_reach_every_client(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    settings = Settings(
        bootstrap="kafka.example:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret",  # type: ignore[arg-type]
        ssl_cafile=ca,
    )
    expected = {
        "bootstrap.servers": "kafka.example:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
    }

    for conf in (producer_config(settings), consumer_config(settings, "g"), admin_config(settings)):
        assert expected.items() <= conf.items()


def test_librdkafka_accepts_every_config() -> None:
    settings = Settings(bootstrap=f"127.0.0.1:{free_port()}")

    # librdkafka rejects unknown or malformed properties at construction time
    Producer(producer_config(settings, partitioner="default", idempotent=True)).flush(0)
    Producer(producer_config(settings)).flush(0)
    Consumer(consumer_config(settings, "g", from_beginning=False)).close()
    AdminClient(admin_config(settings))


def test_consumer_uses_the_short_session_timeout() -> None:
    conf = consumer_config(Settings(session_timeout_s=6), "g")

    assert conf["session.timeout.ms"] == 6000
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["enable.auto.commit"] is False


def test_topic_lookup_on_a_real_broker(broker: EmbeddedBroker) -> None:
    topic = make_topic(broker.bootstrap, partitions=3)
    settings = Settings(bootstrap=broker.bootstrap)

    assert topic_partitions(settings, [topic, "no-such-topic"]) == {topic: 3}
    assert require_topic(settings, topic) == 3
    with pytest.raises(KafkaUnavailable, match="bstream topics create"):
        require_topic(settings, "no-such-topic")


def test_unreachable_broker_fails_fast_with_the_address() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"

    with pytest.raises(KafkaUnavailable, match=f"cannot reach Kafka at {bootstrap}"):
        topic_partitions(Settings(bootstrap=bootstrap), ["x"])
