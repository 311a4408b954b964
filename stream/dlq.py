"""Dead letters: the original key and bytes, unchanged, plus reason headers (dlq_record.v1.json).

>>> dict(dlq_headers("not_json", "bad", "behavior.events", 3, 17))["source.offset"]
b'17'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stream.publish import OutRecord, key_partition

MAX_MESSAGE_CHARS = 1024
INFERENCE_FAILED = "inference_failed"


def dlq_headers(
    code: str, message: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The DLQ headers, as Kafka header tuples (UTF-8 values)."""
    return [
        ("error.code", code.encode()),
        ("error.message", message[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


def headers_dict(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Headers as a JSON-able object (the shape schemas/dlq_record.v1.json describes)."""
    return {name: value.decode("utf-8", "replace") for name, value in headers}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record bound for the DLQ."""

    key: bytes | None
    value: bytes | None
    code: str
    message: str
    topic: str
    partition: int
    offset: int

    def headers(self) -> list[tuple[str, bytes]]:
        """This record's reason headers."""
        return dlq_headers(self.code, self.message, self.topic, self.partition, self.offset)


def dlq_records(letters: Sequence[DeadLetter], count: int) -> list[OutRecord]:
    """DLQ records: partitioned by the original key; keyless ones keep their source partition."""
    return [
        OutRecord(d.key, d.value, d.headers(), key_partition(d.key, count, fallback=d.partition))
        for d in letters
    ]
