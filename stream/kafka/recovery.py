"""Recovery watchdog: changelog recovery reports its progress and never waits forever.

Faust restores the windows table by reading each assigned changelog partition up to its end
offset, and the worker is not ready until it has. When a partition stops delivering (a broker
that reports an end offset it cannot serve, a stalled fetch, a lost leader), Faust only logs a
warning every few seconds, forever (faust-streaming #21 and #74). Kafka Streams bounds the same
wait with `task.timeout.ms`. This module does the same for any broker:
- every second it publishes the offsets left per changelog partition (`bstream_recovery_remaining_
  offsets`, and `recovery` in /health);
- when no partition has moved for `recovery_stall_s`, it logs one ERROR line naming each stuck
  partition and its offsets, then does what `recovery_stall_action` says: `exit` (non-zero, so a
  supervisor restarts the worker; the default) or `continue` (finish recovery without those
  records, counted in `bstream_recovery_unrestored_records_total`).

The stall logic is a pure class (`StallTracker`); `install` wires it to the Faust app.

>>> t = StallTracker(stall_s=10)
>>> t.observe(0.0, {3: Lag(-1, 0)}) is None, t.observe(9.0, {3: Lag(-1, 0)}) is None
(True, True)
>>> t.observe(10.0, {3: Lag(-1, 0)})
Stall(idle_s=10.0, stuck={3: Lag(read=-1, last=0)})
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("bstream.recovery")
CHECK_INTERVAL_S = 1.0
EXIT_GRACE_S = 30.0  # a crash that cannot shut down cleanly (a hung fetch) exits hard after this
EXIT_CODE = 70  # EX_SOFTWARE
Action = Literal["exit", "continue"]


class RecoveryStalled(RuntimeError):
    """Changelog recovery made no progress for the configured time."""


@dataclass(frozen=True)
class Lag:
    """One changelog partition in recovery: last offset read (-1: none) and last offset to read."""

    read: int
    last: int

    @property
    def remaining(self) -> int:
        return max(0, self.last - self.read)


@dataclass(frozen=True)
class Stall:
    """Recovery stood still for `idle_s` seconds with these partitions unfinished."""

    idle_s: float
    stuck: Mapping[int, Lag]


@dataclass
class StallTracker:
    """Pure stall detection over (time, per-partition lag) samples; fires once per recovery."""

    stall_s: float
    _last: dict[int, Lag] = field(default_factory=dict)
    _since: float | None = None
    _fired: bool = False

    def observe(self, now: float, lags: Mapping[int, Lag]) -> Stall | None:
        """Feed one sample (empty or all done: not recovering); a Stall the first time it stalls."""
        pending = {p: lag for p, lag in lags.items() if lag.remaining > 0}
        if not pending:
            self._last, self._since, self._fired = {}, None, False
            return None
        if self._since is None or any(
            p not in self._last or lag.read != self._last[p].read or lag.last != self._last[p].last
            for p, lag in pending.items()
        ):
            self._since = now  # started, or something moved: progress
        self._last = dict(pending)
        idle = now - self._since
        if self._fired or idle < self.stall_s:
            return None
        self._fired = True
        return Stall(idle, pending)

    def idle_s(self, now: float) -> float:
        """Seconds since the last progress (0 when not recovering)."""
        return now - self._since if self._since is not None else 0.0


def stall_line(topic: str, stall: Stall, action: Action) -> str:
    """The one ERROR line for a stall: every stuck partition with its offsets, and what happens."""
    parts = "; ".join(
        f"partition {p} read up to offset {lag.read}, end offset {lag.last + 1} "
        f"({lag.remaining} records left)"
        for p, lag in sorted(stall.stuck.items())
    )
    then = (
        "exiting non-zero so that a supervisor restarts the worker "
        "(BSTREAM_RECOVERY_STALL_ACTION=continue starts without those records)"
        if action == "exit"
        else "continuing without those records (their windows are not restored)"
    )
    return (
        f"changelog recovery stalled: no progress for {stall.idle_s:.0f}s on {topic}: "
        f"{parts}; {then}"
    )


def health_detail(
    lags: Mapping[int, Lag], idle_s: float, stalled: bool, skipped: int
) -> dict[str, Any]:
    """The `recovery` object of /health."""
    remaining = {str(p): lag.remaining for p, lag in sorted(lags.items()) if lag.remaining > 0}
    return {
        "in_progress": bool(remaining),
        "remaining_offsets": remaining,
        "seconds_without_progress": round(idle_s, 1) if remaining else 0.0,
        "stalled": stalled,
        "unrestored_records": skipped,
    }


def active_lags(recovery: Any, changelog: str) -> dict[int, Lag]:
    """Per changelog partition in active recovery: its Lag; {} when not recovering."""
    if not recovery.in_recovery:
        return {}
    offsets = recovery.active_offsets
    lags = {}
    for tp, highwater in list(recovery.active_highwaters.items()):
        read = offsets.get(tp)
        if tp.topic == changelog and highwater is not None and read is not None:
            lags[tp.partition] = Lag(int(read), int(highwater))
    return lags


def forbid_topic_auto_creation() -> None:
    """Make aiokafka (Faust's client) never ask the broker to create a topic it looks up.

    aiokafka sends `allow_auto_topic_creation=True` with every metadata request, so a write to a
    topic the broker lost would create it with the broker's defaults, racing the worker's own
    declaration of it. Topics are created only by `bstream topics create` and by Faust's explicit
    declarations (CreateTopics), which this does not touch. Idempotent.
    """
    from aiokafka import client
    from aiokafka.protocol.metadata import MetadataRequest

    if getattr(client.MetadataRequest, "no_auto_create", False):
        return

    class NoAutoCreateMetadataRequest(MetadataRequest):
        no_auto_create = True

        def __init__(self, topics: list[str] | None = None, **_: Any) -> None:
            super().__init__(topics, allow_auto_topic_creation=False)

    client.MetadataRequest = NoAutoCreateMetadataRequest  # type: ignore[misc]


def _hard_exit() -> None:
    os._exit(EXIT_CODE)


async def exit_for_restart(app: Any, reason: Exception) -> None:
    """Crash the app so the worker exits non-zero; a hard exit follows if shutdown hangs."""
    timer = threading.Timer(EXIT_GRACE_S, _hard_exit)
    timer.daemon = True
    timer.start()
    await app.crash(reason)


def install(app: Any, changelog: str, metrics: Any, stall_s: float, action: Action) -> None:
    """Watch the app's table recovery every second; act on a stall as `action` says."""
    tracker = StallTracker(stall_s)
    state = {"stalled": False, "skipped": 0}

    running: list[asyncio.Future[None]] = []  # keeps a reference to the watching task

    # Faust starts app tasks and timers only after the first recovery completed, so the watch
    # starts with the first partition assignment, which comes before any recovery.
    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def start_watching(sender: Any, assigned: Any, **kwargs: Any) -> None:
        if not running:
            running.append(asyncio.ensure_future(watch_recovery()))

    async def watch_recovery() -> None:
        seen: set[int] = set()
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            recovery = app.tables.recovery
            lags = active_lags(recovery, changelog)
            now = asyncio.get_running_loop().time()
            stall = tracker.observe(now, lags)
            for partition in seen - set(lags):
                metrics.recovery_remaining.labels(partition=str(partition)).set(0)
            for partition, lag in lags.items():
                metrics.recovery_remaining.labels(partition=str(partition)).set(lag.remaining)
            seen = set(lags)
            idle = tracker.idle_s(now)
            if not any(lag.remaining for lag in lags.values()) and state["stalled"]:
                state["stalled"] = False
                metrics.recovery_stalled.set(0)
            if stall is not None:
                state["stalled"] = True
                metrics.recovery_stalled.set(1)
                log.error(stall_line(changelog, stall, action))
            metrics.set_health(
                recovery=health_detail(lags, idle, bool(state["stalled"]), int(state["skipped"]))
            )
            if stall is None:
                continue
            if action == "exit":
                stalled = RecoveryStalled(f"changelog recovery stalled on {changelog}")
                await exit_for_restart(app, stalled)
                return
            skipped = sum(lag.remaining for lag in stall.stuck.values())
            for tp in list(recovery.active_highwaters):
                if tp.topic == changelog and tp.partition in stall.stuck:
                    recovery.active_offsets[tp] = recovery.active_highwaters[tp]
            state["skipped"] = int(state["skipped"]) + skipped
            metrics.set_health(recovery=health_detail(lags, idle, True, int(state["skipped"])))
            metrics.recovery_unrestored.inc(skipped)  # after /health: both agree once visible
