"""Replay's pure parts: pacing on an injected clock, the summary, exit status, invalid-row keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.validation import Invalid
from stream.replay import (
    Pacer,
    ReplaySummary,
    count_lines,
    due_offset,
    exit_problem,
    format_summary,
    invalid_key,
)


class FakeClock:
    """A clock that only moves when someone sleeps; `overshoot` mimics a sleep that wakes late."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.now = 100.0
        self.overshoot = overshoot
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds + self.overshoot


def _release_times(pacer: Pacer, clock: FakeClock, ts: list[int | None]) -> list[float]:
    times = []
    for index, ts_ms in enumerate(ts):
        pacer.wait(index, ts_ms)
        times.append(clock.now - 100.0)
    return times


def test_due_offset_by_rate_by_event_time_and_unpaced() -> None:
    assert due_offset(2000, 0, 0, rate=1000.0, speedup=None) == 2.0
    assert due_offset(0, 10_000, 0, rate=None, speedup=2.0) == 5.0
    assert due_offset(9, 500, 1000, rate=None, speedup=2.0) == 0.0  # older than the first: now
    assert due_offset(9, 10_000, 0, rate=None, speedup=None) == 0.0


@pytest.mark.parametrize("overshoot", [0.0, 0.003])
def test_rate_holds_within_five_percent_for_10k_events(overshoot: float) -> None:
    clock = FakeClock(overshoot)
    pacer = Pacer(rate=2000, clock=clock, sleep=clock.sleep)

    times = _release_times(pacer, clock, [0] * 10_000)

    achieved = (len(times) - 1) / times[-1]
    assert abs(achieved - 2000) / 2000 < 0.05
    assert all(t >= i / 2000 - 1e-9 for i, t in enumerate(times))  # never ahead of schedule


def test_late_wakeups_do_not_accumulate() -> None:
    clock = FakeClock(overshoot=0.002)
    pacer = Pacer(rate=100, clock=clock, sleep=clock.sleep)

    times = _release_times(pacer, clock, [0] * 1001)

    # an absolute schedule: the last release is late by one overshoot, not by 1000 of them
    assert times[-1] == pytest.approx(10.0, abs=0.0021)


def test_speedup_follows_event_time() -> None:
    clock = FakeClock()
    pacer = Pacer(speedup=60, clock=clock, sleep=clock.sleep)

    times = _release_times(pacer, clock, [5_000, 65_000, 65_000, None, 185_000])

    assert times == pytest.approx([0.0, 1.0, 1.0, 1.0, 3.0])


def test_unpaced_replay_never_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)

    _release_times(pacer, clock, [0, 10**9, 2 * 10**9])

    assert clock.sleeps == 0


@pytest.mark.parametrize(("rate", "speedup"), [(0.0, None), (None, -1.0), (10.0, 2.0)])
def test_pacer_rejects_bad_settings(rate: float | None, speedup: float | None) -> None:
    with pytest.raises(ValueError):
        Pacer(rate=rate, speedup=speedup)


def test_summary_lists_the_first_invalid_rows_and_failures() -> None:
    summary = ReplaySummary(rows=12, sent=4, skipped=1, elapsed_s=2.0)
    for line_no in range(2, 9):
        summary.note_invalid(line_no, Invalid("not_json", "unexpected character"))
    summary.note_delivery("Local: Message timed out")

    lines = format_summary(summary)

    assert lines[0].startswith("sent=4 skipped=1 invalid=7 failed=1 elapsed=2.00s rate=2 ev/s")
    assert lines[1] == "  invalid line 2: not_json: unexpected character"
    assert len([line for line in lines if "invalid line" in line]) == 5
    assert "  ... and 2 more invalid rows" in lines
    assert lines[-1] == "  delivery failed: Local: Message timed out"


def test_summary_says_when_invalid_rows_were_sent() -> None:
    summary = ReplaySummary(rows=1)
    summary.note_invalid(1, Invalid("not_utf8", "x"))

    assert "invalid=1 (sent anyway)" in format_summary(summary, send_invalid=True)[0]


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        (ReplaySummary(rows=3, sent=3), None),
        (ReplaySummary(rows=3, sent=1, invalid=2), None),
        (ReplaySummary(rows=3, sent=2, failed=1), "1 records were not delivered"),
        (ReplaySummary(rows=0), "nothing to replay: f.jsonl has no rows"),
        (ReplaySummary(rows=5, sent=2, interrupted=True), "interrupted"),
    ],
)
def test_exit_problem(summary: ReplaySummary, problem: str | None) -> None:
    assert exit_problem(summary, Path("f.jsonl")) == problem


@pytest.mark.parametrize(
    ("raw", "fmt", "key"),
    [
        (b'{"user_id": "u7", "ts": "soon"}', "jsonl", b"u7"),
        (b'{"user_id": 42}', "jsonl", b"42"),
        (b'{"ts": 1}', "jsonl", None),
        (b"[1]", "jsonl", None),
        (b"{broken", "jsonl", None),
        (b"1001,2,3,pv,soon", "taobao", b"1001"),
        (b"1001\xff,2", "taobao", None),
        (b"2019-10-01 00:00:04 UTC,view,1,2,,,1.0,555,s", "rees46", b"555"),
        (b"short,row", "rees46", None),
    ],
)
def test_invalid_rows_keep_their_user_key_when_it_can_be_found(
    raw: bytes, fmt: str, key: bytes | None
) -> None:
    assert invalid_key(raw, fmt) == key


def test_count_lines(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a\nb\n\nc")

    assert count_lines(path) == 3
