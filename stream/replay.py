"""Replay an event file onto Kafka: pure pacing and summary logic; the client is stream.kafka's.

>>> due_offset(index=500, ts_ms=0, first_ts_ms=0, rate=1000.0, speedup=None)
0.5
>>> due_offset(index=0, ts_ms=61_000, first_ts_ms=1_000, rate=None, speedup=60.0)
1.0
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from schemas.formats import CSV_FORMATS, Row, event_json, read_rows
from schemas.validation import Invalid
from stream.kafka import Partitioner
from stream.kafka.clients import Sender
from stream.settings import Settings

MAX_EXAMPLES = 5
PROGRESS_EVERY = 1000  # rows between progress-bar updates (a per-row update costs throughput)


def due_offset(
    index: int, ts_ms: int, first_ts_ms: int, rate: float | None, speedup: float | None
) -> float:
    """Seconds after the replay started at which record `index` (event time `ts_ms`) is due."""
    if rate:
        return index / rate
    if speedup:
        return max(0.0, (ts_ms - first_ts_ms) / 1000.0 / speedup)
    return 0.0


class Pacer:
    """Holds records back until due; the clock and sleep are injected so tests need no real time."""

    def __init__(
        self,
        rate: float | None = None,
        speedup: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if (rate is not None and rate <= 0) or (speedup is not None and speedup <= 0):
            raise ValueError("rate and speedup must be positive")
        if rate and speedup:
            raise ValueError("give either a rate or a speedup, not both")
        self.rate, self.speedup, self.clock, self.sleep = rate, speedup, clock, sleep
        self.start: float | None = None
        self.first_ts_ms = 0

    def wait(self, index: int, ts_ms: int | None) -> None:
        """Block until record `index` is due (absolute schedule: sleep overshoot never adds up)."""
        if not (self.rate or self.speedup):
            return
        if self.start is None:
            self.start, self.first_ts_ms = self.clock(), ts_ms or 0
        ts = self.first_ts_ms if ts_ms is None else ts_ms
        due = self.start + due_offset(index, ts, self.first_ts_ms, self.rate, self.speedup)
        while (remaining := due - self.clock()) > 0:
            self.sleep(remaining)


@dataclass
class ReplaySummary:
    """Counts of one replay; `sent` counts records the broker acknowledged."""

    rows: int = 0
    produced: int = 0
    sent: int = 0
    skipped: int = 0
    invalid: int = 0
    failed: int = 0
    invalid_examples: list[tuple[int, Invalid]] = field(default_factory=list)
    failure_examples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False

    def note_invalid(self, line_no: int, invalid: Invalid) -> None:
        self.invalid += 1
        if len(self.invalid_examples) < MAX_EXAMPLES:
            self.invalid_examples.append((line_no, invalid))

    def note_delivery(self, error: str | None) -> None:
        if error is None:
            self.sent += 1
            return
        self.failed += 1
        if len(self.failure_examples) < MAX_EXAMPLES:
            self.failure_examples.append(error)


def format_summary(summary: ReplaySummary, send_invalid: bool = False) -> list[str]:
    """The summary line, then the first invalid rows and delivery failures."""
    rate = summary.sent / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    invalid = (
        f"{summary.invalid} (sent anyway)" if send_invalid and summary.invalid else summary.invalid
    )
    lines = [
        f"sent={summary.sent} skipped={summary.skipped} invalid={invalid} "
        f"failed={summary.failed} elapsed={summary.elapsed_s:.2f}s rate={rate:,.0f} ev/s"
    ]
    lines += [
        f"  invalid line {n}: {inv.code}: {inv.message}" for n, inv in summary.invalid_examples
    ]
    if summary.invalid > len(summary.invalid_examples):
        lines.append(
            f"  ... and {summary.invalid - len(summary.invalid_examples)} more invalid rows"
        )
    lines += [f"  delivery failed: {message}" for message in summary.failure_examples]
    return lines


def exit_problem(summary: ReplaySummary, path: Path) -> str | None:
    """Why the replay should exit non-zero, or None.

    Invalid rows alone are not a failure (they are reported and every valid row is sent);
    delivery failures, an interrupted run and a file with no rows at all are.
    """
    if summary.failed:
        return f"{summary.failed} records were not delivered"
    if summary.interrupted:
        return "interrupted"
    if summary.rows == 0:
        return f"nothing to replay: {path} has no rows"
    return None


def invalid_key(raw: bytes, fmt: str) -> bytes | None:
    """Best-effort user key for a row that failed validation (None when there is none)."""
    csv_format = CSV_FORMATS.get(fmt)
    try:
        if csv_format is None:
            obj = orjson.loads(raw)
            user = obj.get("user_id") if isinstance(obj, dict) else None
        else:
            values = next(csv.reader(io.StringIO(raw.decode("utf-8"))), [])
            column = csv_format.columns.index(csv_format.fields["user_id"])
            user = values[column] if column < len(values) else None
    except (orjson.JSONDecodeError, UnicodeDecodeError, csv.Error):
        return None
    return str(user).encode() if isinstance(user, str | int) and str(user) else None


def count_lines(path: Path) -> int:
    """Newline count of a file, read in binary chunks (fast enough for GB-sized files)."""
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


@dataclass
class ReplayOptions:
    """What `bstream replay` was asked to do."""

    topic: str
    rate: float | None = None
    speedup: float | None = None
    limit: int | None = None
    partitioner: Partitioner = "murmur2"
    idempotent: bool = False
    send_invalid: bool = False
    progress: bool | None = None  # None: only on a terminal


def _records(
    rows: Iterable[Row], fmt: str, summary: ReplaySummary, send_invalid: bool
) -> Iterable[tuple[bytes | None, bytes, int | None]]:
    """(key, value, ts) of each row to produce, counting skipped and invalid rows on the way."""
    for row in rows:
        summary.rows += 1
        if row.skipped:
            summary.skipped += 1
        elif row.event is not None:
            # JSONL lines go out byte for byte (the worker drops and counts extra fields);
            # CSV rows become UserEvent JSON.
            value = row.raw if fmt == "jsonl" else event_json(row.event)
            yield row.event["user_id"].encode(), value, row.event["ts"]
        else:
            summary.note_invalid(row.line_no, row.invalid or Invalid("bad_value", "invalid row"))
            if send_invalid:
                yield invalid_key(row.raw, fmt), row.raw, None


def replay_file(path: Path, fmt: str, settings: Settings, options: ReplayOptions) -> ReplaySummary:
    """Send every row of `path` to `options.topic` in file order, keyed by user id."""

    rows = read_rows(path, fmt)  # a generator: a bad path or format raises FormatError on first use
    summary = ReplaySummary()
    sender = Sender(settings, summary.note_delivery, options.partitioner, options.idempotent)
    # poll() doubles as the pacer's sleep, so deliveries are served while waiting.
    pacer = Pacer(options.rate, options.speedup, sleep=sender.poll)

    total = count_lines(path)
    disable = None if options.progress is None else not options.progress
    bar = tqdm(total=min(total, options.limit or total), unit="row", disable=disable)
    started = time.monotonic()
    try:
        for key, value, ts in _records(rows, fmt, summary, options.send_invalid):
            pacer.wait(summary.produced, ts)
            refused = sender.send(options.topic, key, value)
            if refused is not None:
                summary.note_delivery(refused)
            summary.produced += 1
            if summary.produced % PROGRESS_EVERY == 0:
                sender.poll(0)
                bar.update(summary.rows - bar.n)
            if options.limit and summary.produced >= options.limit:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.update(summary.rows - bar.n)
        bar.close()
        unsent = sender.flush(60)
        summary.failed += unsent  # still queued after the delivery timeout: not delivered
        summary.elapsed_s = time.monotonic() - started
    return summary
