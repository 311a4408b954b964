"""The shared validator: schema examples, one input per reason code, allow-listing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas.validation import (
    DLQ_SCHEMA,
    SCHEMA_DIR,
    check,
    decode_event,
    load_schema,
    validate_event,
    validate_prediction,
)

EXAMPLES = sorted((SCHEMA_DIR / "examples").glob("*.json"))
VALID = {"user_id": "u1", "event_type": "view", "ts": 1_511_658_000_000, "item_id": "i1"}


def _schema_for(example: Path) -> str:
    return example.name.split(".")[0] + ".v1.json"


def _raw(**changes: object) -> bytes:
    event = {**VALID, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


def test_examples_exist_for_every_schema() -> None:
    assert {_schema_for(p) for p in EXAMPLES} == {p.name for p in SCHEMA_DIR.glob("*.v1.json")}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_verdict_matches_its_name(example: Path) -> None:
    obj = orjson.loads(example.read_bytes())

    verdict = check(_schema_for(example), obj)

    assert (verdict is None) == (".valid" in example.name)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_reference_validator_agrees(example: Path) -> None:
    schema = load_schema(_schema_for(example))
    Draft202012Validator.check_schema(schema)

    ok = Draft202012Validator(schema).is_valid(orjson.loads(example.read_bytes()))

    assert ok == (".valid" in example.name)


REASONS = [
    (b"x" * 20_000, "oversized"),
    (b'{"user_id": "\xff\xfe"}', "not_utf8"),
    (b'{"user_id": "u1",', "not_json"),
    (None, "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"just a string"', "not_object"),
    (_raw(user_id=...), "missing_field"),
    (_raw(item_id=...), "missing_field"),
    (_raw(ts="yesterday"), "wrong_type"),
    (_raw(ts=True), "wrong_type"),
    (_raw(ts=1.5), "wrong_type"),
    (_raw(price="3"), "wrong_type"),
    (_raw(attrs={"channel": 1}), "wrong_type"),
    (_raw(event_type="pv"), "bad_value"),
    (_raw(ts=-1), "bad_value"),
    (_raw(user_id=""), "bad_value"),
]


@pytest.mark.parametrize(("raw", "code"), REASONS)
def test_each_bad_input_gets_its_reason_code(raw: bytes | None, code: str) -> None:
    decoded = decode_event(raw)

    assert decoded.event is None
    assert decoded.invalid is not None
    assert decoded.invalid.code == code
    assert decoded.invalid.message


def test_reason_codes_are_exactly_the_dlq_codes() -> None:
    dlq_codes = set(load_schema(DLQ_SCHEMA)["properties"]["error.code"]["enum"])

    produced = {code for _raw_value, code in REASONS}

    # inference_failed comes from the worker, not from decoding
    assert produced == dlq_codes - {"inference_failed"}


def test_valid_event_passes_unchanged() -> None:
    decoded = decode_event(_raw(category="c1", price=9.5, session_id="s", event_id="e"))

    assert decoded.invalid is None
    assert decoded.event == {
        **VALID,
        "category": "c1",
        "price": 9.5,
        "session_id": "s",
        "event_id": "e",
    }
    assert decoded.dropped_fields == []


def test_fields_not_allow_listed_are_dropped_and_named() -> None:
    decoded = validate_event({**VALID, "email": "a@b.c", "ip": "10.0.0.1"})

    assert decoded.event == VALID
    assert sorted(decoded.dropped_fields) == ["email", "ip"]


def test_prediction_validation() -> None:
    good = {
        "user": "u1",
        "scores": {"purchase": 0.4},
        "model_version": "v1",
        "window_size": 3,
        "last_event_ts": 1,
        "predicted_at": 2,
    }

    assert validate_prediction(good) is None
    assert validate_prediction({**good, "scores": {"cart": 0.1}}) is not None
    assert validate_prediction({**good, "extra": 1}) is not None
