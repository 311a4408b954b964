"""DLQ headers: the five contract headers, UTF-8, schema-valid, bounded message."""

from __future__ import annotations

from schemas.validation import DLQ_SCHEMA, check
from stream.kafka.publish import group_by_partition, key_partition
from stream.outputs import INFERENCE_FAILED, DeadLetter, dlq_headers, dlq_records, headers_dict


def test_headers_carry_reason_and_source_position() -> None:
    headers = dlq_headers("not_json", "unexpected end", "behavior.events", 3, 1234)

    assert headers_dict(headers) == {
        "error.code": "not_json",
        "error.message": "unexpected end",
        "source.topic": "behavior.events",
        "source.partition": "3",
        "source.offset": "1234",
    }
    assert check(DLQ_SCHEMA, headers_dict(headers)) is None


def test_long_messages_are_cut_to_the_schema_limit() -> None:
    headers = headers_dict(dlq_headers("bad_value", "x" * 5000, "t", 0, 0))

    assert len(headers["error.message"]) == 1024
    assert check(DLQ_SCHEMA, headers) is None


def test_dead_letter_keeps_the_original_key_and_bytes() -> None:
    letter = DeadLetter(b"user-7", b"\xff\x00raw", INFERENCE_FAILED, "model failed", "ev", 1, 9)

    assert (letter.key, letter.value) == (b"user-7", b"\xff\x00raw")
    assert headers_dict(letter.headers())["error.code"] == "inference_failed"
    assert check(DLQ_SCHEMA, headers_dict(letter.headers())) is None


def test_dlq_records_follow_the_key_or_keep_the_source_partition() -> None:
    keyed = DeadLetter(b"u1", b"x", "not_json", "m", "ev", 2, 5)
    keyless = DeadLetter(None, b"y", "not_json", "m", "ev", 3, 6)

    records = dlq_records([keyed, keyless])
    groups = group_by_partition(records, 4)

    assert groups[key_partition(b"u1", 4)][0] is records[0]
    assert records[1].partition == 3 and groups[3][-1] is records[1]
    assert dict(records[0].headers)["error.code"] == b"not_json"
