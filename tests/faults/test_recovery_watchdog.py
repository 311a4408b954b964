"""A changelog recovery that cannot progress: the watchdog fires, says so, and acts.

A worker fills its windows changelog and stops. A proxy in front of the broker then starves every
Fetch of the restarted worker's Faust client (tests/faults/kafkaproxy.py): the changelog reports
records that recovery can never read, while the broker, the group coordinator and the producers
keep working. With `BSTREAM_RECOVERY_STALL_S` set low:
- the default action: progress shows in `bstream_recovery_remaining_offsets` and in /health
  `recovery`; after the stall time one ERROR line names each stuck partition with its offsets,
  and the worker exits non-zero (so that a supervisor restarts it);
- `BSTREAM_RECOVERY_STALL_ACTION=continue`: the same ERROR line, then the worker finishes recovery
  without those records, counts them (`bstream_recovery_unrestored_records_total`, /health) and,
  once fetches flow again, serves new events from empty windows.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import orjson
import pytest

from stream.kafka.broker import EmbeddedBroker, free_port
from tests.faults.kafkaproxy import FetchHoldingProxy
from tests.faults.support import Expected, PredictionWatcher, record_result, wait_for
from tests.integration.worker_support import WorkerProcess, collect, new_env, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]
T0 = 1_700_000_000_000
USERS = 12
STALL_S = 15
STALL_LINE = re.compile(
    r"changelog recovery stalled: no progress for (\d+)s on \S+: "
    r"(partition \d+ read up to offset -?\d+, end offset \d+ \(\d+ records left\); )+.*"
)


def events(step: int, users: range) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"w{u}".encode(),
            orjson.dumps(
                {"user_id": f"w{u}", "event_type": "view", "ts": T0 + step, "item_id": f"i{step}"}
            ),
        )
        for u in users
    ]


def stall_line(log: str) -> re.Match[str] | None:
    return STALL_LINE.search(log)


def metric(worker: WorkerProcess, name: str) -> float:
    """The metric's value; 0 while the worker does not serve /metrics yet (loading its model)."""
    try:
        return worker.metric(name)
    except OSError:
        return 0.0


def test_watchdog_exits_or_continues_when_recovery_cannot_progress(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = free_port()
    proxy = FetchHoldingProxy(upstream)
    broker = EmbeddedBroker(
        port=upstream, advertised_port=proxy.port, log_path=tmp_path / "broker.log"
    ).start()
    watcher: PredictionWatcher | None = None
    workers: list[WorkerProcess] = []
    try:
        wenv = new_env(proxy.bootstrap)
        topic = wenv.settings.events_topic
        monkeypatch.setenv("BSTREAM_RECOVERY_STALL_S", str(STALL_S))
        first = WorkerProcess(wenv, tiny_bundle, tmp_path, name="first")
        workers.append(first)
        first.start().wait_ready(timeout=180)
        produce(proxy.bootstrap, topic, events(1, range(USERS)))
        collect(proxy.bootstrap, wenv.changelog_topic, lambda got: len(got) >= USERS, 120)
        assert first.stop() == 0

        # 1. The default action: exit non-zero.
        proxy.hold("faust-")
        stuck = WorkerProcess(wenv, tiny_bundle, tmp_path, name="stuck")
        workers.append(stuck)
        stuck.start()
        assert stuck.proc is not None
        wait_for(
            lambda: (
                stuck.proc.poll() is not None  # type: ignore[union-attr]
                or metric(stuck, "bstream_recovery_remaining_offsets") > 0
            ),
            180,
            "recovery to report offsets left",
        )
        remaining = stuck.metric("bstream_recovery_remaining_offsets")
        health = orjson.loads(stuck._get("/health")[1])
        seen_at = time.monotonic()
        wait_for(lambda: stuck.proc.poll() is not None, STALL_S + 120, "the watchdog's exit")  # type: ignore[union-attr]
        exit_s = time.monotonic() - seen_at
        exit_code = stuck.proc.returncode
        exit_line = stall_line(stuck.log())

        # 2. continue: recover without the stuck records, count them, then serve new events.
        monkeypatch.setenv("BSTREAM_RECOVERY_STALL_ACTION", "continue")
        going = WorkerProcess(wenv, tiny_bundle, tmp_path, name="continue")
        workers.append(going)
        going.start()
        wait_for(
            lambda: metric(going, "bstream_recovery_unrestored_records_total") > 0,
            STALL_S + 180,
            "the watchdog to continue",
        )
        unrestored = going.metric("bstream_recovery_unrestored_records_total")
        continue_health = orjson.loads(going._get("/health")[1])["recovery"]
        continue_line = stall_line(going.log())
        proxy.release()
        going.wait_ready(timeout=180)
        watcher = PredictionWatcher(proxy.bootstrap, wenv.settings.predictions_topic)
        produce(proxy.bootstrap, topic, events(2, range(USERS)))
        expected = Expected()
        for key, value in events(2, range(USERS)):
            expected.add(wenv.user(key.decode()), orjson.loads(value))
        watcher.wait_reflects(expected, timeout=180, check_sizes=False)
        sizes = {watcher.latest[user]["window_size"] for user in expected.newest}
        assert going.stop() == 0
    finally:
        if watcher is not None:
            watcher.close()
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
        proxy.close()
        broker.stop()

    record_result(
        {
            "scenario": f"recovery stalled (held fetches, stall {STALL_S}s)",
            "runs": 2,
            "events": 2 * USERS,
            "users_lost": 0,
            "duplicates": watcher.duplicates,
            "dlq": 0,
            "time_to_recover_s": round(exit_s, 1),
            "unrestored_records": unrestored,
        }
    )
    assert remaining > 0
    assert health["status"] == "not_ready" and health["recovery"]["in_progress"] is True
    assert sum(health["recovery"]["remaining_offsets"].values()) > 0
    assert exit_line is not None, stuck.log()[-3000:]
    assert int(exit_line.group(1)) >= STALL_S
    assert "exiting non-zero" in exit_line.group(0)
    assert exit_code not in (None, 0)
    assert continue_line is not None and "continuing without those records" in going.log()
    assert continue_health["unrestored_records"] == unrestored
    assert sizes == {1}  # the windows were not restored: each holds only the new event
