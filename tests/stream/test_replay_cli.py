"""`bstream replay` against a real broker: broken input, limits, pacing bounds, partitioners."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import orjson
import pytest

from stream.kafka.broker import EmbeddedBroker, free_port
from tests.stream.kafka_helpers import make_topic, read_topic, run_cli


def _event(user: str, ts: int, **extra: object) -> bytes:
    return orjson.dumps({"user_id": user, "event_type": "view", "ts": ts, "item_id": "i1", **extra})


VALID = [_event("u1", 1000), _event("u2", 2000), _event("u1", 3000, email="a@b.c")]
BROKEN_LINES = [
    VALID[0],
    b'{"user_id": "u2",',  # bad JSON
    b'{"user_id": "u3", "event_type": "view", "ts": 1}',  # missing item_id
    b'{"user_id": "u3", "event_type": "view", "ts": "yesterday", "item_id": "i"}',  # wrong type
    b'{"user_id": "u3", "event_type": "pv", "ts": 1, "item_id": "i"}',  # unknown event type
    b'{"user_id": "u\xff\xfe3", "event_type": "view", "ts": 1, "item_id": "i"}',  # not UTF-8
    VALID[1],
    b"",
    b"[1, 2]",
    VALID[2],
]
BROKEN_CODES = [
    (2, "not_json"),
    (3, "missing_field"),
    (4, "wrong_type"),
    (5, "bad_value"),
    (6, "not_utf8"),
    (9, "not_object"),
]


@pytest.fixture
def broken_file(tmp_path: Path) -> Path:
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(BROKEN_LINES) + b"\n")
    return path


def _replay(broker: EmbeddedBroker, topic: str, *args: str) -> tuple[int, str, str]:
    result = run_cli("replay", *args, "--bootstrap", broker.bootstrap, "--topic", topic)
    return result.exit_code, result.stdout, result.stderr


def _elapsed(stdout: str) -> float:
    match = re.search(r"elapsed=([0-9.]+)s", stdout)
    assert match, stdout
    return float(match.group(1))


def test_broken_rows_are_reported_and_every_valid_row_is_sent(
    broker: EmbeddedBroker, broken_file: Path
) -> None:
    topic = make_topic(broker.bootstrap)

    code, out, _err = _replay(broker, topic, str(broken_file))

    assert code == 0
    assert out.splitlines()[0].startswith("sent=3 skipped=0 invalid=6 failed=0 ")
    for line_no, reason in BROKEN_CODES[:5]:  # the first five are listed
        assert f"invalid line {line_no}: {reason}:" in out
    assert "... and 1 more invalid rows" in out
    records = read_topic(broker.bootstrap, topic, expected=3)
    assert sorted(r.value for r in records if r.value) == sorted(VALID)
    u1 = [r.value for r in records if r.key == b"u1"]
    assert u1 == [VALID[0], VALID[2]]  # per-user order, and the JSONL line unchanged


def test_send_invalid_puts_the_raw_bytes_on_the_topic(
    broker: EmbeddedBroker, broken_file: Path
) -> None:
    topic = make_topic(broker.bootstrap)

    code, out, _err = _replay(broker, topic, str(broken_file), "--send-invalid")

    assert code == 0
    assert "sent=9 skipped=0 invalid=6 (sent anyway)" in out
    values = sorted(r.value or b"" for r in read_topic(broker.bootstrap, topic, expected=9))
    assert values == sorted(line for line in BROKEN_LINES if line)


def test_a_record_too_large_for_kafka_is_a_counted_failure(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = make_topic(broker.bootstrap)
    path = tmp_path / "big.jsonl"
    path.write_bytes(VALID[0] + b"\n" + b'"' + b"x" * 2_000_000 + b'"\n' + VALID[1] + b"\n")

    code, out, err = _replay(broker, topic, str(path), "--send-invalid")

    assert code == 1
    assert "sent=2 skipped=0 invalid=1 (sent anyway) failed=1" in out
    assert "delivery failed:" in out
    assert err.strip() == "Error: 1 records were not delivered"
    assert len(read_topic(broker.bootstrap, topic, expected=2)) == 2


def test_empty_file_fails_before_connecting(broker: EmbeddedBroker, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")

    code, out, err = _replay(broker, make_topic(broker.bootstrap), str(path))

    assert code == 1 and out == ""
    assert err.strip() == f"Error: nothing to replay: {path} is empty"


def test_a_file_of_blank_lines_gives_a_summary_and_fails(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n\n")

    code, out, err = _replay(broker, make_topic(broker.bootstrap), str(path))

    assert code == 1
    assert out.startswith("sent=0 skipped=0 invalid=0 failed=0")
    assert err.strip() == f"Error: nothing to replay: {path} has no rows"


def test_missing_file_is_a_one_line_error(broker: EmbeddedBroker, tmp_path: Path) -> None:
    code, out, err = _replay(broker, "any", str(tmp_path / "nope.csv"), "--format", "taobao")

    assert code == 1 and out == ""
    assert err.strip() == f"Error: no such file: {tmp_path / 'nope.csv'}"


def test_unknown_format_is_a_usage_error(broker: EmbeddedBroker, broken_file: Path) -> None:
    code, _out, err = _replay(broker, "any", str(broken_file), "--format", "parquet")

    assert code == 2
    assert "Invalid value for '--format'" in err


def test_rate_and_speedup_together_are_refused(broker: EmbeddedBroker, broken_file: Path) -> None:
    code, _out, err = _replay(broker, "any", str(broken_file), "--rate", "5", "--speedup", "2")

    assert code == 2
    assert "either --rate or --speedup" in err


def test_missing_topic_and_unreachable_broker_are_one_line_errors(broken_file: Path) -> None:
    with EmbeddedBroker() as running:
        missing = run_cli("replay", str(broken_file), "--bootstrap", running.bootstrap)
    down = run_cli("replay", str(broken_file), "--bootstrap", f"127.0.0.1:{free_port()}")

    assert missing.exit_code == 1
    assert "topic 'behavior.events' does not exist" in missing.stderr
    assert "bstream topics create" in missing.stderr
    assert down.exit_code == 1
    assert len(down.stderr.strip().splitlines()) == 1 and "cannot reach Kafka" in down.stderr


def test_limit_stops_after_n_records(broker: EmbeddedBroker, broken_file: Path) -> None:
    topic = make_topic(broker.bootstrap)

    code, out, _err = _replay(broker, topic, str(broken_file), "--limit", "2")

    assert code == 0 and out.startswith("sent=2 ")
    assert len(read_topic(broker.bootstrap, topic, expected=2)) == 2


def test_rate_is_never_exceeded(broker: EmbeddedBroker, tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"".join(_event(f"u{i % 50}", i) + b"\n" for i in range(1000)))

    code, out, _err = _replay(broker, make_topic(broker.bootstrap), str(path), "--rate", "2000")

    assert code == 0 and out.startswith("sent=1000 ")
    assert _elapsed(out) >= 999 / 2000  # a lower bound only; speed is measured, not asserted


def test_speedup_spaces_events_by_event_time(broker: EmbeddedBroker, tmp_path: Path) -> None:
    path = tmp_path / "timed.jsonl"
    path.write_bytes(b"".join(_event("u1", ts) + b"\n" for ts in (0, 1000, 2000)))

    code, out, _err = _replay(broker, make_topic(broker.bootstrap), str(path), "--speedup", "4")

    assert code == 0
    assert _elapsed(out) >= 0.5


def test_rees46_rows_are_mapped_and_remove_from_cart_skipped(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    path = tmp_path / "rees.csv"
    path.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:04 UTC,view,5773203,1487580005134238553,,runail,2.62,463240011,s1\n"
        "2019-10-01 00:00:05 UTC,remove_from_cart,5773203,1487580005134238553,,,2.62,463240011,s1\n"
    )
    topic = make_topic(broker.bootstrap)

    code, out, _err = _replay(broker, topic, str(path), "--format", "rees46")

    assert code == 0 and out.startswith("sent=1 skipped=1 invalid=0")
    [record] = read_topic(broker.bootstrap, topic, expected=1)
    assert record.key == b"463240011"
    assert orjson.loads(record.value or b"")["price"] == 2.62


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's and aiokafka's default partitioner hash)."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    for i in range(0, len(data) - len(data) % 4, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[len(data) - len(data) % 4 :]
    if tail:
        h = ((h ^ int.from_bytes(tail, "little")) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


@pytest.mark.parametrize(
    ("partitioner", "expected_partition"),
    [
        ("murmur2", lambda key: (murmur2(key) & 0x7FFFFFFF) % 4),
        ("default", lambda key: zlib.crc32(key) % 4),
    ],
)
def test_partitioner_option_decides_where_each_user_lands(
    broker: EmbeddedBroker, tmp_path: Path, partitioner: str, expected_partition: object
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_bytes(b"".join(_event(f"user-{i}", i) + b"\n" for i in range(200)))
    topic = make_topic(broker.bootstrap, partitions=4)

    code, _out, _err = _replay(broker, topic, str(path), "--partitioner", partitioner)

    assert code == 0
    records = read_topic(broker.bootstrap, topic, expected=200)
    assert len(records) == 200
    assert all(r.partition == expected_partition(r.key) for r in records)  # type: ignore[operator]
