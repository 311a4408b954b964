"""Prediction v1 building: fields from the window, validation, clamping, bad scores refused."""

from __future__ import annotations

import math

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from schemas.validation import validate_prediction
from stream.kafka.publish import group_by_partition, key_partition, murmur2
from stream.outputs import InvalidPrediction, OutRecord, build_prediction, encode_prediction
from stream.windows import Window

WINDOW = Window(1, 0, ((100, 0, "a", None, None, "e1"), (250, 2, "b", "c", 9.0, "e2")))


def test_prediction_reflects_the_window_and_validates() -> None:
    p = build_prediction(
        "ab12", "k1", {"purchase": 0.25, "cart": 0.5}, "v7", WINDOW, latency_ms=12.34567, now_ms=999
    )

    assert p == {
        "user": "ab12",
        "key_id": "k1",
        "scores": {"purchase": 0.25, "cart": 0.5},
        "model_version": "v7",
        "window_size": 2,
        "last_event_ts": 250,
        "predicted_at": 999,
        "latency_ms": 12.346,
    }
    assert validate_prediction(orjson.loads(encode_prediction(p))) is None


def test_raw_id_mode_has_no_key_id_and_rounding_noise_is_clamped() -> None:
    p = build_prediction(
        "u1", None, {"purchase": 1.0000001}, "v", WINDOW, latency_ms=-0.1, now_ms=1
    )

    assert "key_id" not in p
    assert p["scores"]["purchase"] == 1.0 and p["latency_ms"] == 0.0


@pytest.mark.parametrize("scores", [{"purchase": math.nan}, {"purchase": math.inf}, {"cart": 0.5}])
def test_unusable_scores_are_refused(scores: dict[str, float]) -> None:
    with pytest.raises(InvalidPrediction):
        build_prediction("u1", "k1", scores, "v", WINDOW, latency_ms=1.0, now_ms=1)


def test_reasons_are_carried_when_given() -> None:
    reasons = [{"event_index": 1, "event_type": "cart", "item_id": "b", "weight": 0.3}]

    p = build_prediction(
        "u1", "k1", {"purchase": 0.4}, "v", WINDOW, latency_ms=1.0, now_ms=1, reasons=reasons
    )

    assert p["reasons"] == reasons


def test_key_partition_matches_the_aiokafka_and_java_default() -> None:
    partitions = [0, 1, 2, 3, 4, 5]
    keys = [f"user-{i}".encode() for i in range(200)]

    ours = [key_partition(k, 6) for k in keys]

    assert ours == [DefaultPartitioner()(k, partitions, partitions) for k in keys]
    assert key_partition(None, 4, fallback=6) == 2


# Kafka's own UtilsTest vectors (Java ints, signed).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_kafkas_java_test_vectors() -> None:
    assert {key: murmur2(key) for key in JAVA_MURMUR2} == {
        key: value & 0xFFFFFFFF for key, value in JAVA_MURMUR2.items()
    }


@given(st.binary(max_size=80))
def test_murmur2_partition_bits_match_aiokafka(data: bytes) -> None:
    assert murmur2(data) & 0x7FFFFFFF == aiokafka_murmur2(data) & 0x7FFFFFFF


def test_records_are_grouped_per_partition_in_order() -> None:
    records = [OutRecord(b"a", b"1"), OutRecord(None, b"2", partition=3), OutRecord(b"a", b"3")]

    groups = group_by_partition(records, 4)

    assert groups[3] == [records[1]]
    assert groups[key_partition(b"a", 4)] == [records[0], records[2]]
