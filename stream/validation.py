"""Compatibility alias of `schemas.validation` (moved there so `model` needs no `stream` import).

New code imports `schemas.validation`; this alias stays only while modules edited in parallel
(stream/worker.py, stream/commands/, stream/bench/) still name the old path.
"""

from schemas.validation import (
    DEFAULT_MAX_EVENT_BYTES,
    DLQ_SCHEMA,
    EVENT_SCHEMA,
    PREDICTION_SCHEMA,
    SCHEMA_DIR,
    Decoded,
    Invalid,
    allowed_event_fields,
    check,
    decode_event,
    load_schema,
    validate_event,
    validate_prediction,
)

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DLQ_SCHEMA",
    "EVENT_SCHEMA",
    "PREDICTION_SCHEMA",
    "SCHEMA_DIR",
    "Decoded",
    "Invalid",
    "allowed_event_fields",
    "check",
    "decode_event",
    "load_schema",
    "validate_event",
    "validate_prediction",
]
