"""`bstream topics create`: the five topics, idempotently, with the asked partition count."""

from __future__ import annotations

from stream.kafka import topic_partitions
from stream.kafka.broker import EmbeddedBroker, free_port
from stream.kafka.topics import default_topics
from stream.settings import Settings
from tests.stream.kafka_helpers import run_cli

NAMES = [
    "behavior.events",
    "behavior.predictions",
    "behavior.events.dlq",
    "behavior.control",
    "behavior.outcomes",
    "behavior.models",
    "behavior.predictions.shadow",
]
COUNTS = {**dict.fromkeys(NAMES, 4), "behavior.models": 1}


def test_default_topics_names_and_partitions() -> None:
    specs = default_topics(Settings(partitions=6))

    assert [s.name for s in specs] == NAMES
    assert {s.name: s.partitions for s in specs} == {
        **dict.fromkeys(NAMES, 6),
        "behavior.models": 1,
    }
    assert [s.name for s in specs if s.compact] == ["behavior.models"]
    assert {s.partitions for s in default_topics(Settings(), partitions=2)} == {1, 2}


def test_create_is_idempotent(fresh_broker: EmbeddedBroker) -> None:
    first = run_cli("topics", "create", "--bootstrap", fresh_broker.bootstrap)
    second = run_cli("topics", "create", "--bootstrap", fresh_broker.bootstrap)

    assert first.exit_code == 0 and second.exit_code == 0
    assert [line.split()[:2] for line in first.output.splitlines()] == [
        ["created", name] for name in NAMES
    ]
    assert [line.split()[:2] for line in second.output.splitlines()] == [
        ["exists", name] for name in NAMES
    ]
    counts = topic_partitions(Settings(bootstrap=fresh_broker.bootstrap), NAMES)
    assert counts == COUNTS


def test_partitions_option_and_existing_count_reported(fresh_broker: EmbeddedBroker) -> None:
    created = run_cli(
        "topics", "create", "--bootstrap", fresh_broker.bootstrap, "--partitions", "2"
    )
    again = run_cli("topics", "create", "--bootstrap", fresh_broker.bootstrap, "--partitions", "8")

    assert created.exit_code == 0 and "partitions=2" in created.output
    assert again.exit_code == 0
    assert all(
        "partitions=2 (asked for 8; not changed)" in line
        for line in again.output.splitlines()
        if "behavior.models" not in line
    )


def test_topic_names_and_bootstrap_come_from_the_environment(fresh_broker: EmbeddedBroker) -> None:
    env = {"BSTREAM_BOOTSTRAP": fresh_broker.bootstrap, "BSTREAM_EVENTS_TOPIC": "custom.events"}

    result = run_cli("topics", "create", env=env)
    listing = run_cli("topics", "list", env=env)

    assert result.exit_code == 0
    assert "created  custom.events  partitions=4" in result.output
    assert "custom.events  partitions=4" in listing.output


def test_unreachable_broker_is_one_line_error() -> None:
    result = run_cli("topics", "create", "--bootstrap", f"127.0.0.1:{free_port()}")

    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach Kafka" in result.stderr
