"""File formats as data tables: Taobao, REES46 and JSONL rows mapped onto UserEvent."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.formats import FORMAT_NAMES, FormatError, read_events, read_rows
from tests.conftest import TAOBAO_SLICE, need_shared

REES46_HEADER = (
    b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
)


def _write(tmp_path: Path, data: bytes, name: str = "f") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_taobao_row_maps_types_and_seconds_to_ms(tmp_path: Path) -> None:
    path = _write(tmp_path, b"1,2268318,2520377,pv,1511544070\r\n7,9,4,buy,1511544071\n")

    events = list(read_events(path, "taobao"))

    assert events == [
        {"user_id": "1", "item_id": "2268318", "category": "2520377", "event_type": "view",
         "ts": 1_511_544_070_000},
        {"user_id": "7", "item_id": "9", "category": "4", "event_type": "purchase",
         "ts": 1_511_544_071_000},
    ]  # fmt: skip


def test_rees46_maps_columns_price_session_and_attrs(tmp_path: Path) -> None:
    row = (
        b"2019-10-01 00:00:04 UTC,cart,5773203,1487580005134238553,,runail,2.62,463240011,26dd6e6e"
    )
    path = _write(tmp_path, REES46_HEADER + b"\n" + row + b"\n")

    [event] = read_events(path, "rees46")

    assert event == {
        "user_id": "463240011",
        "item_id": "5773203",
        "category": "1487580005134238553",
        "event_type": "cart",
        "ts": 1_569_888_004_000,
        "price": 2.62,
        "session_id": "26dd6e6e",
        "attrs": {"brand": "runail"},
    }


def test_rees46_remove_from_cart_is_skipped_not_invalid(tmp_path: Path) -> None:
    row = b"2019-10-01 00:00:04 UTC,remove_from_cart,5773203,1,,,2.62,463240011,s"
    path = _write(tmp_path, REES46_HEADER + b"\n" + row + b"\n")

    [only] = read_rows(path, "rees46")

    assert only.skipped and only.event is None and only.invalid is None


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"1,2,3,pv", "missing_field"),
        (b"1,2,3,pv,soon", "wrong_type"),
        (b"1,2,3,click2,1511544070", "bad_value"),
        (b"1,2,3,pv,1511544070\xff", "not_utf8"),
    ],
)
def test_taobao_bad_rows_get_a_reason(tmp_path: Path, line: bytes, code: str) -> None:
    path = _write(tmp_path, line + b"\n")

    [row] = read_rows(path, "taobao")

    assert row.event is None and row.invalid is not None
    assert row.invalid.code == code
    assert row.raw == line


def test_jsonl_keeps_line_numbers_and_skips_blank_lines(tmp_path: Path) -> None:
    good = b'{"user_id":"u","event_type":"view","ts":1,"item_id":"i"}'
    path = _write(tmp_path, good + b"\n\n{oops\n" + good + b"\n")

    rows = list(read_rows(path, "jsonl"))

    assert [r.line_no for r in rows] == [1, 3, 4]
    assert [r.invalid.code if r.invalid else "ok" for r in rows] == ["ok", "not_json", "ok"]


def test_unknown_format_and_missing_file_are_format_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="unknown format"):
        list(read_rows(_write(tmp_path, b""), "parquet"))
    with pytest.raises(FormatError, match="no such file"):
        list(read_rows(tmp_path / "missing.csv", "taobao"))


def test_format_names_cover_jsonl_and_tables() -> None:
    assert set(FORMAT_NAMES) == {"jsonl", "taobao", "rees46"}


def test_taobao_slice_is_entirely_valid() -> None:
    rows = list(read_rows(need_shared(TAOBAO_SLICE), "taobao"))

    assert len(rows) == 110_300
    assert all(row.event is not None for row in rows)
