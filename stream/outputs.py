"""What the worker publishes, as plain data: prediction records, dead letters, the explain policy.

Pure and free of torch and Kafka: the worker builds its records here and hands them to a sink.
Dead letters keep the original key and bytes, unchanged, plus reason headers (dlq_record.v1.json).

>>> import random
>>> should_explain("top-scores", 0.7, min_score=0.5, sample_rate=0.0, rng=random.Random(0))
True
>>> from stream.windows import Window
>>> p = build_prediction("u1", "k1", {"purchase": 0.2}, "v1",
...                      Window(0, 0, ((5, 0, "i", None, None, "e"),)), latency_ms=3.0, now_ms=9)
>>> p["last_event_ts"], p["window_size"], p["key_id"]
(5, 1, 'k1')
>>> dict(dlq_headers("not_json", "bad", "behavior.events", 3, 17))["source.offset"]
b'17'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from schemas.validation import validate_prediction
from stream.windows import Window

if TYPE_CHECKING:
    from stream.intake import Message, Target

POLICIES = ("off", "all", "top-scores", "sample-rate")
MAX_MESSAGE_CHARS = 1024
INFERENCE_FAILED = "inference_failed"


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to publish; `partition` None: murmur2 of the key (the Java/aiokafka default)."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None


# -- predictions -------------------------------------------------------------------------------


class InvalidPrediction(ValueError):
    """The model produced something that is not a valid Prediction v1 (e.g. NaN scores)."""


def _probability(label: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidPrediction(f"score {label!r} is not finite")
    return min(1.0, max(0.0, float(value)))


def build_prediction(
    user: str,
    key_id: str | None,
    scores: Mapping[str, float],
    model_version: str,
    window: Window,
    *,
    latency_ms: float,
    now_ms: int,
    reasons: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One Prediction v1 for a user's window; raises InvalidPrediction if it would not validate."""
    prediction: dict[str, Any] = {"user": user}
    if key_id is not None:
        prediction["key_id"] = key_id
    prediction.update(
        scores={label: _probability(label, v) for label, v in scores.items()},
        model_version=model_version,
        window_size=len(window.entries),
        last_event_ts=window.last_ts,
        predicted_at=now_ms,
        latency_ms=round(max(0.0, latency_ms), 3),
    )
    if reasons:
        prediction["reasons"] = [dict(r) for r in reasons]
    invalid = validate_prediction(prediction)
    if invalid is not None:
        raise InvalidPrediction(f"{invalid.code}: {invalid.message}")
    return prediction


def encode_prediction(prediction: Mapping[str, Any]) -> bytes:
    """Prediction JSON bytes for the predictions topic."""
    return orjson.dumps(prediction)


def prediction_records(
    targets: Sequence[Target],
    scores: Sequence[Mapping[str, float]],
    version: str,
    key_id: str | None,
    *,
    now_ms: int,
    now_mono: float,
    reasons: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
) -> list[OutRecord]:
    """One prediction record per target (keyed by its pseudonym); reasons by target index."""
    if len(scores) != len(targets):
        raise ValueError(f"model returned {len(scores)} results for {len(targets)} windows")
    records = []
    for index, (target, score) in enumerate(zip(targets, scores, strict=True)):
        prediction = build_prediction(
            target.key.decode(),
            key_id,
            score,
            version,
            target.window,
            latency_ms=(now_mono - target.arrival) * 1000,
            now_ms=now_ms,
            reasons=(reasons or {}).get(index),
        )
        records.append(OutRecord(target.key, encode_prediction(prediction)))
    return records


# -- the explain policy ------------------------------------------------------------------------


class RandomLike(Protocol):
    def random(self) -> float: ...


def should_explain(
    policy: str, score: float, min_score: float, sample_rate: float, rng: RandomLike
) -> bool:
    """Whether one prediction gets reasons under the policy (keeps explanation cost bounded)."""
    if policy == "off":
        return False
    if policy == "all":
        return True
    if policy == "top-scores":
        return score >= min_score
    if policy == "sample-rate":
        return rng.random() < sample_rate
    raise ValueError(f"unknown explain policy {policy!r}; choose one of {', '.join(POLICIES)}")


# -- dead letters ------------------------------------------------------------------------------


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

    @classmethod
    def of(cls, message: Message, code: str, text: str) -> DeadLetter:
        """The dead letter of a consumed record."""
        m = message
        return cls(m.key, m.value, code, text, m.topic, m.partition, m.offset)

    def headers(self) -> list[tuple[str, bytes]]:
        """This record's reason headers."""
        return dlq_headers(self.code, self.message, self.topic, self.partition, self.offset)


def inference_letter(message: Message) -> DeadLetter:
    """The dead letter of an event whose batch the model failed on, after the retries."""
    return DeadLetter.of(message, INFERENCE_FAILED, "model inference failed after retries")


def dlq_records(letters: Sequence[DeadLetter]) -> list[OutRecord]:
    """DLQ records: partitioned by the original key; keyless ones keep their source partition."""
    return [
        OutRecord(d.key, d.value, d.headers(), None if d.key is not None else d.partition)
        for d in letters
    ]
