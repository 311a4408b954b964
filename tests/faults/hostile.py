"""Hypothesis strategies for malformed and adversarial event records, drawn deterministically.

Each drawn record is a `Hostile(kind, key, value, expect)`. `expect` is what the event contract
says must happen to it: "dlq" (invalid: DLQ with a reason), "valid" (an event the worker must
reflect) or "either" (the shared validator decides, e.g. a deep but parseable nesting in an
unknown field). Every record belongs to its own fresh user (`user_slot` is filled in later), so
the expected newest event per user does not depend on how records interleave.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

Expect = Literal["dlq", "valid", "either"]
MAX_TS = 4_102_444_800_000  # the schema's upper bound (year 2100)
T0 = 1_700_000_000_000
SLOT = "@@SLOT@@"  # replaced by a fresh user id once records are numbered
REQUIRED = ("user_id", "event_type", "ts", "item_id")
# Every field the schema knows: an "extra" must not be one of these with a wrong type (Hypothesis
# draws string constants found in the code, "price" among them, as text).
SCHEMA_FIELDS = frozenset(
    json.loads((Path(__file__).parents[2] / "schemas" / "user_event.v1.json").read_text())[
        "properties"
    ]
)


@dataclass(frozen=True)
class Hostile:
    """One adversarial record before its user slot is filled in."""

    kind: str
    key: bytes | None
    value: bytes | None
    expect: Expect


def base_event(ts: int = T0) -> dict[str, Any]:
    return {"user_id": SLOT, "event_type": "view", "ts": ts, "item_id": "item"}


def _json(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers beyond 64 bits: the stdlib encoder writes them
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _key(value: bytes) -> bytes:
    return SLOT.encode() if SLOT.encode() in value else b"no-user"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Characters a JSON encoder can write (no lone surrogates); plenty of odd ones among them.
text_chars = st.characters(codec="utf-8")
huge_lengths = st.sampled_from([129, 256, 4_000, 16_000, 16_500, 100_000, 500_000]) | st.integers(
    129, 200_000
)


@st.composite
def random_bytes(draw: st.DrawFn) -> Hostile:
    value = draw(st.binary(max_size=512))
    key = draw(st.none() | st.binary(max_size=64))
    return Hostile("random_bytes", key, value, "dlq")


@st.composite
def deep_nesting(draw: st.DrawFn) -> Hostile:
    depth = draw(st.integers(1, 3_000) | st.sampled_from([1_023, 1_024, 1_025, 50_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = (opener * depth + "1" + closer * depth).encode()
    where = draw(st.sampled_from(["top", "unknown_field", "attrs"]))
    if where == "top":
        return Hostile("deep_nesting", b"deep", nested, "dlq")
    head = _json(base_event())[:-1]
    field = b"attrs" if where == "attrs" else b"extra"
    value = head + b',"' + field + b'":' + nested + b"}"
    # a parseable nesting in an unknown field is dropped (valid); attrs must be flat (invalid)
    return Hostile("deep_nesting", _key(value), value, "dlq" if where == "attrs" else "either")


@st.composite
def huge_string(draw: st.DrawFn) -> Hostile:
    length = draw(huge_lengths)
    text = draw(text_chars) * length
    where = draw(st.sampled_from(["user_id", "item_id", "category", "event_id", "extra", "key"]))
    event = base_event()
    if where == "key":
        return Hostile("huge_string", text.encode()[:100_000], _json(event), "valid")
    event[where] = text
    value = _json(event)
    expect: Expect = "either" if where == "extra" else "dlq"  # extra: ok below the size limit
    return Hostile("huge_string", _key(value), value, expect)


@st.composite
def non_finite(draw: st.DrawFn) -> Hostile:
    literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "nan"]))
    field = draw(st.sampled_from(["ts", "price"]))
    event = base_event()
    event[field] = 0
    value = _json(event).replace(f'"{field}":0'.encode(), f'"{field}":{literal}'.encode())
    return Hostile("non_finite", _key(value), value, "dlq")


@st.composite
def bad_timestamp(draw: st.DrawFn) -> Hostile:
    ts = draw(
        st.integers(max_value=-1)
        | st.integers(min_value=MAX_TS + 1)
        | st.sampled_from([-1, MAX_TS + 1, 2**63, 2**64 + 1, 10**30, -(2**63)])
        | st.floats(0, MAX_TS).filter(lambda x: not x.is_integer())
    )
    value = _json(base_event() | {"ts": 0}).replace(b'"ts":0', f'"ts":{ts}'.encode())
    return Hostile("bad_timestamp", _key(value), value, "dlq")


@st.composite
def edge_timestamp(draw: st.DrawFn) -> Hostile:
    ts = draw(st.sampled_from([0, 1, MAX_TS - 1, MAX_TS]) | st.integers(0, MAX_TS))
    value = _json(base_event(ts) | {"event_id": draw(st.text(text_chars, min_size=1, max_size=20))})
    return Hostile("edge_timestamp", _key(value), value, "valid")


def _wrong_type_for(field: str) -> st.SearchStrategy[Any]:
    if field == "ts":
        return json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
    if field == "price":
        return json_values.filter(lambda v: isinstance(v, str | list | dict | bool) or v is None)
    if field == "attrs":
        not_strings = json_values.filter(lambda v: not isinstance(v, str))
        return json_values.filter(lambda v: not isinstance(v, dict)) | st.dictionaries(
            st.text(max_size=4), not_strings, min_size=1, max_size=3
        )
    return json_values.filter(lambda v: not isinstance(v, str))


@st.composite
def wrong_type(draw: st.DrawFn) -> Hostile:
    field = draw(st.sampled_from([*REQUIRED, "category", "price", "event_id", "attrs"]))
    bad = draw(_wrong_type_for(field))
    if field == "ts" and isinstance(bad, float) and bad.is_integer():
        bad = [bad]  # 3.0 counts as an integer timestamp; keep this one unambiguous
    event = base_event() | {field: bad}
    value = _json(event)
    return Hostile("wrong_type", _key(value), value, "dlq")


@st.composite
def missing_field(draw: st.DrawFn) -> Hostile:
    gone = draw(st.lists(st.sampled_from(REQUIRED), min_size=1, unique=True))
    event = {k: v for k, v in base_event().items() if k not in gone}
    value = _json(event)
    return Hostile("missing_field", _key(value), value, "dlq")


@st.composite
def bad_enum(draw: st.DrawFn) -> Hostile:
    kind = draw(
        st.text(text_chars, max_size=12).filter(
            lambda t: t not in {"view", "click", "cart", "fav", "purchase"}
        )
    )
    value = _json(base_event() | {"event_type": kind})
    return Hostile("bad_enum", _key(value), value, "dlq")


@st.composite
def not_object(draw: st.DrawFn) -> Hostile:
    value = _json(draw(json_values.filter(lambda v: not isinstance(v, dict))))
    return Hostile("not_object", draw(st.none() | st.binary(max_size=8)), value, "dlq")


@st.composite
def not_utf8(draw: st.DrawFn) -> Hostile:
    junk = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
    value = _json(base_event()).replace(b'"item"', b'"it' + junk + b'em"')
    return Hostile("not_utf8", _key(value), value, "dlq")


@st.composite
def truncated(draw: st.DrawFn) -> Hostile:
    raw = _json(base_event() | {"category": "c", "price": 1.5})
    cut = draw(st.integers(0, len(raw) - 1))
    return Hostile("truncated", b"cut", raw[:cut] if cut else None, "dlq")


@st.composite
def pii_and_extras(draw: st.DrawFn) -> Hostile:
    extras = draw(
        st.dictionaries(
            st.sampled_from(["email", "phone", "ip", "name", "address", "userAgent", "x"])
            | st.text(text_chars, min_size=1, max_size=10).filter(lambda k: k not in SCHEMA_FIELDS),
            json_values,
            min_size=1,
            max_size=5,
        )
    )
    event = {**extras, **base_event(draw(st.integers(0, MAX_TS)))}
    value = _json(event)
    return Hostile("pii_extras", _key(value), value, "valid")


@st.composite
def odd_but_valid(draw: st.DrawFn) -> Hostile:
    event = base_event(draw(st.integers(0, MAX_TS)))
    event["event_type"] = draw(st.sampled_from(["view", "click", "cart", "fav", "purchase"]))
    event["item_id"] = draw(st.text(text_chars, min_size=1, max_size=128))
    if draw(st.booleans()):
        event["price"] = draw(st.floats(0, 1e9) | st.integers(0, 10**9))
    if draw(st.booleans()):
        event["attrs"] = draw(
            st.dictionaries(st.text(max_size=8), st.text(max_size=256), max_size=32)
        )
    if draw(st.booleans()):
        event["event_id"] = draw(st.text(text_chars, min_size=1, max_size=128))
    value = _json(event)
    key = draw(st.sampled_from([_key(value), None, b"", b"\x00\xff"]))
    return Hostile("odd_valid", key, value, "valid")


@st.composite
def duplicate_keys(draw: st.DrawFn) -> Hostile:
    # orjson keeps the last of duplicate names: the event belongs to the second user id
    second = draw(st.sampled_from(["user_id", "ts", "event_type"]))
    head = _json(base_event())[:-1]
    tail = {"user_id": '"' + SLOT + '-2"', "ts": "-5", "event_type": '"teleport"'}[second]
    value = head + f',"{second}":{tail}}}'.encode()
    return Hostile(
        "duplicate_json_keys", _key(value), value, "valid" if second == "user_id" else "dlq"
    )


@st.composite
def tombstone(draw: st.DrawFn) -> Hostile:
    return Hostile("tombstone", draw(st.none() | st.binary(max_size=16)), None, "dlq")


HOSTILE_KINDS: tuple[Callable[[], st.SearchStrategy[Hostile]], ...] = (
    random_bytes,
    deep_nesting,
    huge_string,
    non_finite,
    bad_timestamp,
    edge_timestamp,
    wrong_type,
    missing_field,
    bad_enum,
    not_object,
    not_utf8,
    truncated,
    pii_and_extras,
    odd_but_valid,
    duplicate_keys,
    tombstone,
)
hostile_records = st.one_of(*(kind() for kind in HOSTILE_KINDS))


def draw_many(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` examples of `strategy`, the same ones on every run (derandomized; no database)."""
    drawn: list[Any] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        drawn.append(example)

    collect()
    return drawn[:n]
