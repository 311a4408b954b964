"""Decode and validate records against the versioned JSON Schemas (replay, worker and tests).

Each failure is an `Invalid(code, message)`; codes are the DLQ `error.code` values.

>>> decode_event(b'{"user_id":"u","event_type":"view","ts":1,"item_id":"i"}').event["user_id"]
'u'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

# The schema files sit next to this module (package data), in a checkout and in a wheel alike.
SCHEMA_DIR = Path(__file__).resolve().parent
EVENT_SCHEMA = "user_event.v1.json"
PREDICTION_SCHEMA = "prediction.v1.json"
DLQ_SCHEMA = "dlq_record.v1.json"
DEFAULT_MAX_EVENT_BYTES = 16 * 1024

# fastjsonschema rule -> DLQ reason code
_RULE_CODES = {
    "required": "missing_field",
    "type": "wrong_type",
}


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a record was rejected: a stable code (DLQ `error.code`) and a human message."""

    code: str
    message: str


@dataclass(slots=True)
class Decoded:
    """One decoded record: `event` (allow-listed fields) or `invalid`, plus dropped field names."""

    event: dict[str, Any] | None = None
    invalid: Invalid | None = None
    dropped_fields: list[str] = field(default_factory=list)


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load one schema file from `schemas/` by file name."""
    path = SCHEMA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"schema {name} not found in {SCHEMA_DIR}")
    schema: dict[str, Any] = orjson.loads(path.read_bytes())
    return schema


@functools.cache
def _validator(name: str) -> Any:
    # fastjsonschema knows drafts 4/6/7; our schemas use only keywords common with 2020-12.
    schema = dict(load_schema(name))
    schema.pop("$schema", None)
    return fastjsonschema.compile(schema)


@functools.cache
def allowed_event_fields() -> frozenset[str]:
    """Field names allow-listed by the UserEvent schema."""
    return frozenset(load_schema(EVENT_SCHEMA)["properties"])


def _invalid_from(exc: fastjsonschema.JsonSchemaValueException) -> Invalid:
    code = _RULE_CODES.get(exc.rule or "", "bad_value")
    return Invalid(code, exc.message[:500])


def check(name: str, obj: Any) -> Invalid | None:
    """Validate an already-decoded object against schema `name`; None when valid."""
    try:
        _validator(name)(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        return _invalid_from(exc)
    return None


def validate_event(obj: Any) -> Decoded:
    """Validate a decoded event object; keep only allow-listed fields, report the rest dropped."""
    if not isinstance(obj, dict):
        return Decoded(
            invalid=Invalid("not_object", f"expected a JSON object, got {type(obj).__name__}")
        )
    # bool is an int subclass in Python; the schema means a real integer timestamp
    if isinstance(obj.get("ts"), bool):
        return Decoded(invalid=Invalid("wrong_type", "data.ts must be integer"))
    invalid = check(EVENT_SCHEMA, obj)
    if invalid is not None:
        return Decoded(invalid=invalid)
    allowed = allowed_event_fields()
    dropped = [k for k in obj if k not in allowed]
    event = {k: v for k, v in obj.items() if k in allowed} if dropped else obj
    return Decoded(event=event, dropped_fields=dropped)


def decode_event(raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Decoded:
    """Decode raw Kafka value bytes into a validated UserEvent dict, or say why not."""
    if raw is None:
        return Decoded(invalid=Invalid("not_json", "empty record value"))
    if len(raw) > max_bytes:
        return Decoded(invalid=Invalid("oversized", f"{len(raw)} bytes > limit {max_bytes}"))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Decoded(invalid=Invalid("not_utf8", f"invalid UTF-8 at byte {exc.start}"))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Decoded(invalid=Invalid("not_json", str(exc)[:500]))
    return validate_event(obj)


def validate_prediction(obj: Any) -> Invalid | None:
    """Validate a Prediction v1 object; None when valid."""
    return check(PREDICTION_SCHEMA, obj)
