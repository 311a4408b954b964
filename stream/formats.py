"""Compatibility alias of `schemas.formats` (moved there so `model` needs no `stream` import).

New code imports `schemas.formats`; this alias stays only while modules edited in parallel
(stream/commands/, stream/bench/) still name the old path.
"""

from schemas.formats import (
    CSV_FORMATS,
    FORMAT_NAMES,
    CsvFormat,
    FormatError,
    Row,
    event_json,
    map_csv_row,
    read_events,
    read_rows,
)

__all__ = [
    "CSV_FORMATS",
    "FORMAT_NAMES",
    "CsvFormat",
    "FormatError",
    "Row",
    "event_json",
    "map_csv_row",
    "read_events",
    "read_rows",
]
