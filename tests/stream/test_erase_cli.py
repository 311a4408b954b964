"""`bstream erase`: summary lines, one-line errors, and the request it puts on the control topic."""

from __future__ import annotations

import orjson

from stream.commands.erase import span, summary
from stream.control import EraseDone, EraseRequest, parse_record
from stream.kafka.broker import EmbeddedBroker, free_port
from tests.stream.kafka_helpers import make_topic, read_topic, run_cli


def done(worker: str, erased: bool, *partitions: int) -> EraseDone:
    return EraseDone("r1", "9fd8", "k1", erased, partitions, worker, 1)


def test_partition_spans_are_compact() -> None:
    assert span({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert span(set()) == ""


def test_summary_says_who_erased_or_that_nothing_was_held() -> None:
    erased = summary("r1", [done("w1", True, 0, 1), done("w2", False, 2, 3)], 4)
    nothing = summary("r1", [done("w1", False, 0, 1, 2, 3)], 4)

    assert erased == (
        "erased: window of user 9fd8 (key_id k1) deleted by w1; "
        "partitions 0-3 of 4 confirmed (request r1)"
    )
    assert nothing.startswith("nothing to erase: no window held for user 9fd8 (key_id k1);")


def test_help_and_an_empty_user_id() -> None:
    assert "--wait / --no-wait" in run_cli("erase", "--help").output

    result = run_cli("erase", " ", "--bootstrap", f"127.0.0.1:{free_port()}")

    assert result.exit_code == 2 and "USER_ID must not be empty" in result.stderr


def test_unreachable_broker_is_one_line() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"

    result = run_cli("erase", "u1", "--bootstrap", bootstrap)

    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach Kafka at {bootstrap}")


def test_a_missing_control_topic_points_at_topics_create(broker: EmbeddedBroker) -> None:
    events = make_topic(broker.bootstrap)
    env = {"BSTREAM_EVENTS_TOPIC": events, "BSTREAM_CONTROL_TOPIC": "no-such-control-topic"}

    result = run_cli("erase", "u1", "--bootstrap", broker.bootstrap, env=env)

    assert result.exit_code == 1 and "bstream topics create" in result.stderr


def test_no_wait_sends_one_request_keyed_by_request_id(broker: EmbeddedBroker) -> None:
    events, control = make_topic(broker.bootstrap), make_topic(broker.bootstrap, 2)
    env = {"BSTREAM_EVENTS_TOPIC": events, "BSTREAM_CONTROL_TOPIC": control}

    result = run_cli("erase", "user-42", "--no-wait", "--bootstrap", broker.bootstrap, env=env)

    [record] = read_topic(broker.bootstrap, control, expected=1)
    request = parse_record(record.value)
    assert result.exit_code == 0 and result.stdout == ""
    assert isinstance(request, EraseRequest) and request.user_id == "user-42"
    assert record.key == request.request_id.encode()
    assert f"erase request {request.request_id} sent to {control}" in result.stderr
    assert orjson.loads(record.value or b"")["v"] == 1


def test_without_workers_it_times_out_naming_the_unconfirmed_partitions(
    broker: EmbeddedBroker,
) -> None:
    events, control = make_topic(broker.bootstrap, 3), make_topic(broker.bootstrap, 1)
    env = {"BSTREAM_EVENTS_TOPIC": events, "BSTREAM_CONTROL_TOPIC": control}

    result = run_cli("erase", "u1", "--timeout", "1", "--bootstrap", broker.bootstrap, env=env)

    assert result.exit_code == 1
    assert "not confirmed within 1s: no worker answered for partitions 0-2" in result.stderr
