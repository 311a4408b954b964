"""Input file formats as data: each maps a source row to a UserEvent, then the validator checks it.

>>> event, invalid, skipped = map_csv_row(
...     ["1", "2268318", "2520377", "pv", "1511544070"], CSV_FORMATS["taobao"])
>>> event  # doctest: +NORMALIZE_WHITESPACE
{'user_id': '1', 'item_id': '2268318', 'category': '2520377', 'event_type': 'view',
 'ts': 1511544070000}
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from schemas.validation import Invalid, decode_event, validate_event

TimeUnit = Literal["epoch_s", "epoch_ms", "iso"]


@dataclass(frozen=True)
class CsvFormat:
    """How one CSV flavour maps onto UserEvent fields."""

    columns: tuple[str, ...]
    has_header: bool
    fields: dict[str, str]  # UserEvent field -> source column
    event_types: dict[str, str]  # source event type -> UserEvent event_type
    skip_event_types: frozenset[str] = frozenset()  # known, deliberately not replayed
    ts_unit: TimeUnit = "epoch_s"
    attrs: tuple[str, ...] = ()  # source columns kept as string attrs
    numeric: frozenset[str] = field(default_factory=lambda: frozenset({"price"}))


CSV_FORMATS: dict[str, CsvFormat] = {
    "taobao": CsvFormat(
        columns=("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
        has_header=False,
        fields={
            "user_id": "user_id",
            "item_id": "item_id",
            "category": "category_id",
            "event_type": "behavior_type",
            "ts": "timestamp",
        },
        event_types={"pv": "view", "buy": "purchase", "cart": "cart", "fav": "fav"},
        ts_unit="epoch_s",
    ),
    "rees46": CsvFormat(
        columns=(
            "event_time",
            "event_type",
            "product_id",
            "category_id",
            "category_code",
            "brand",
            "price",
            "user_id",
            "user_session",
        ),
        has_header=True,
        fields={
            "user_id": "user_id",
            "item_id": "product_id",
            "category": "category_id",
            "event_type": "event_type",
            "ts": "event_time",
            "price": "price",
            "session_id": "user_session",
        },
        event_types={"view": "view", "cart": "cart", "purchase": "purchase"},
        skip_event_types=frozenset({"remove_from_cart"}),
        ts_unit="iso",
        attrs=("brand", "category_code"),
    ),
}
FORMAT_NAMES = ("jsonl", *CSV_FORMATS)


@dataclass(slots=True)
class Row:
    """One source row: line number, raw bytes, and an event, an `invalid` reason, or skipped."""

    line_no: int
    raw: bytes
    event: dict[str, Any] | None = None
    invalid: Invalid | None = None
    skipped: bool = False


class FormatError(ValueError):
    """The file as a whole cannot be read in the asked format."""


def _to_ms(value: str, unit: TimeUnit) -> int:
    if unit == "epoch_s":
        return int(value) * 1000
    if unit == "epoch_ms":
        return int(value)
    text = value.strip().replace(" UTC", "+00:00")
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def map_csv_row(
    values: list[str], fmt: CsvFormat
) -> tuple[dict[str, Any] | None, Invalid | None, bool]:
    """Map one CSV row to a validated event: (event, invalid, skipped)."""
    if len(values) != len(fmt.columns):
        return (
            None,
            Invalid("missing_field", f"expected {len(fmt.columns)} columns, got {len(values)}"),
            False,
        )
    source = dict(zip(fmt.columns, (v.strip() for v in values), strict=True))
    raw_type = source[fmt.fields["event_type"]]
    if raw_type in fmt.skip_event_types:
        return None, None, True
    event: dict[str, Any] = {}
    for target, column in fmt.fields.items():
        value = source[column]
        if value == "" and target not in ("user_id", "item_id", "event_type", "ts"):
            continue
        event[target] = value
    event["event_type"] = fmt.event_types.get(raw_type, raw_type)
    try:
        event["ts"] = _to_ms(source[fmt.fields["ts"]], fmt.ts_unit)
        for name in fmt.numeric & event.keys():
            event[name] = float(event[name])
    except (ValueError, OverflowError) as exc:
        return None, Invalid("wrong_type", f"cannot parse a number or time: {exc}"), False
    attrs = {name: source[name] for name in fmt.attrs if source.get(name)}
    if attrs:
        event["attrs"] = attrs
    decoded = validate_event(event)
    return decoded.event, decoded.invalid, False


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            yield line_no, line.rstrip(b"\r\n")


def read_rows(path: Path, fmt: str) -> Iterator[Row]:
    """Yield every row of `path` in file order, mapped and validated; blank lines are skipped."""
    if fmt not in FORMAT_NAMES:
        raise FormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}")
    if not path.is_file():
        raise FormatError(f"no such file: {path}")
    csv_format = CSV_FORMATS.get(fmt)
    for line_no, raw in _iter_lines(path):
        if not raw.strip():
            continue
        if csv_format is None:
            decoded = decode_event(raw)
            yield Row(line_no, raw, decoded.event, decoded.invalid)
            continue
        if csv_format.has_header and line_no == 1:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Row(
                line_no, raw, invalid=Invalid("not_utf8", f"invalid UTF-8 at byte {exc.start}")
            )
            continue
        values = next(csv.reader(io.StringIO(text)))
        event, invalid, skipped = map_csv_row(values, csv_format)
        yield Row(line_no, raw, event, invalid, skipped)


def read_events(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """Yield only the valid events of a file, in file order."""
    for row in read_rows(path, fmt):
        if row.event is not None:
            yield row.event


def event_json(event: dict[str, Any]) -> bytes:
    """Serialize an event for the events topic."""
    return orjson.dumps(event)
