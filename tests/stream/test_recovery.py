"""Recovery watchdog logic as pure functions: stall detection, the ERROR line, /health detail."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from stream.kafka.recovery import Lag, Stall, StallTracker, active_lags, health_detail, stall_line
from stream.settings import Settings


def test_progress_on_any_partition_restarts_the_clock() -> None:
    tracker = StallTracker(stall_s=10)

    assert tracker.observe(0, {0: Lag(-1, 5), 1: Lag(-1, 3)}) is None
    assert tracker.observe(8, {0: Lag(2, 5), 1: Lag(-1, 3)}) is None  # partition 0 moved
    assert tracker.observe(17, {0: Lag(2, 5), 1: Lag(-1, 3)}) is None  # 9 s without progress
    stall = tracker.observe(18, {0: Lag(2, 5), 1: Lag(-1, 3)})

    assert stall == Stall(10, {0: Lag(2, 5), 1: Lag(-1, 3)})


def test_finished_partitions_are_not_stuck_and_a_stall_fires_once_per_recovery() -> None:
    tracker = StallTracker(stall_s=5)

    tracker.observe(0, {0: Lag(4, 4), 1: Lag(0, 9)})
    first = tracker.observe(5, {0: Lag(4, 4), 1: Lag(0, 9)})
    again = tracker.observe(60, {0: Lag(4, 4), 1: Lag(0, 9)})
    tracker.observe(61, {})  # recovery over
    tracker.observe(62, {2: Lag(-1, 1)})  # the next one
    next_stall = tracker.observe(67, {2: Lag(-1, 1)})

    assert first is not None and set(first.stuck) == {1}
    assert again is None
    assert next_stall is not None and set(next_stall.stuck) == {2}


def test_not_recovering_is_never_a_stall() -> None:
    tracker = StallTracker(stall_s=1)

    assert all(tracker.observe(t, {}) is None for t in range(10))
    assert tracker.observe(20, {0: Lag(7, 7)}) is None
    assert tracker.idle_s(20) == 0.0


def test_the_error_line_names_every_stuck_partition_with_its_offsets() -> None:
    stall = Stall(181.4, {3: Lag(-1, 0), 1: Lag(9, 20)})

    exiting = stall_line("app-windows-changelog", stall, "exit")
    going_on = stall_line("app-windows-changelog", stall, "continue")

    assert exiting == (
        "changelog recovery stalled: no progress for 181s on app-windows-changelog: "
        "partition 1 read up to offset 9, end offset 21 (11 records left); "
        "partition 3 read up to offset -1, end offset 1 (1 records left); "
        "exiting non-zero so that a supervisor restarts the worker "
        "(BSTREAM_RECOVERY_STALL_ACTION=continue starts without those records)"
    )
    assert "\n" not in exiting
    assert going_on.endswith("continuing without those records (their windows are not restored)")


def test_health_detail_lists_only_partitions_with_offsets_left() -> None:
    detail = health_detail({0: Lag(5, 5), 2: Lag(1, 4)}, idle_s=12.345, stalled=False, skipped=0)
    idle = health_detail({}, idle_s=0, stalled=False, skipped=7)

    assert detail == {
        "in_progress": True,
        "remaining_offsets": {"2": 3},
        "seconds_without_progress": 12.3,
        "stalled": False,
        "unrestored_records": 0,
    }
    assert idle["in_progress"] is False and idle["unrestored_records"] == 7


def test_active_lags_read_fausts_recovery_state_for_the_changelog_only() -> None:
    changelog, other = TP("app-windows-changelog", 1), TP("other-changelog", 0)
    recovery = SimpleNamespace(
        in_recovery=True,
        active_highwaters={changelog: 9, other: 4},
        active_offsets={changelog: 2, other: 0},
    )

    assert active_lags(recovery, "app-windows-changelog") == {1: Lag(2, 9)}
    recovery.in_recovery = False
    assert active_lags(recovery, "app-windows-changelog") == {}


def test_stall_settings_default_to_three_minutes_and_exit() -> None:
    settings = Settings()

    assert (settings.recovery_stall_s, settings.recovery_stall_action) == (180.0, "exit")
