"""Overload: offer ~5x the measured capacity; memory stays bounded, lag grows then drains, no loss.

The worker is slowed on purpose (`--max-batch 8`: the per-batch model call and publish round trip
are the bottleneck) so a few seconds of overload build a large backlog. Each event carries a
~12 KB field that is not allow-listed (dropped and counted), so holding the backlog in memory would
show up clearly in the worker's RSS.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.kafka.broker import EmbeddedBroker
from tests.faults.support import (
    PredictionWatcher,
    ProcessSampler,
    expected_for,
    finish_replay,
    mib,
    record_result,
    start_replay,
    wait_for,
)
from tests.integration.worker_support import WorkerProcess, new_env, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]
T0 = 1_700_000_000_000
BLOB = "x" * 12_000  # below the 16 KiB record limit
PER_USER = 5
OVERLOAD_S = 15
FACTOR = 5


def heavy_events(prefix: str, users: int, per_user: int) -> list[dict[str, Any]]:
    """Round-robin events (each user's in time order) with a large dropped field."""
    return [
        {
            "user_id": f"{prefix}{u}",
            "event_type": ("view", "click", "cart")[i % 3],
            "ts": T0 + i * 1000,
            "item_id": f"i{(u + i) % 50}",
            "blob": BLOB,
        }
        for i in range(per_user)
        for u in range(users)
    ]


def test_five_times_capacity_builds_lag_that_drains_with_bounded_memory(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    wenv = new_env(broker.bootstrap)
    watcher = PredictionWatcher(broker.bootstrap, wenv.settings.predictions_topic)
    worker = WorkerProcess(wenv, tiny_bundle, tmp_path, "--max-batch", "8", name="overload")
    worker.start().wait_ready()
    sampler = ProcessSampler(worker.proc.pid)  # type: ignore[union-attr]

    def lag() -> float:
        return worker.metric("bstream_consumer_lag")

    try:
        warm = heavy_events("c", 3_000, 1)
        started = time.monotonic()
        records = [(e["user_id"].encode(), orjson.dumps(e)) for e in warm]
        produce(wenv.bootstrap, wenv.settings.events_topic, records)
        watcher.wait_reflects(expected_for(wenv, warm), timeout=300)
        capacity = len(warm) / (time.monotonic() - started)
        baseline_rss = sampler.process.memory_info().rss

        offered = int(capacity * FACTOR)
        events = heavy_events("o", max(1, offered * OVERLOAD_S // PER_USER), PER_USER)
        source = tmp_path / "overload.jsonl"
        source.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
        replay = start_replay(wenv, source, "jsonl", "--rate", str(offered))
        lags: list[float] = []
        while replay.poll() is None:
            lags.append(lag())
            time.sleep(0.5)
        finish_replay(replay)
        overload_rss = sampler.peak_rss
        ended = time.monotonic()

        def drained() -> bool:
            lags.append(lag())
            return lags[-1] == 0

        wait_for(drained, 900, "the lag to drain", every=1.0)
        watcher.wait_reflects(expected_for(wenv, events), timeout=300)
        drain_s = time.monotonic() - ended
        drained_rss = sampler.process.memory_info().rss
        alive = worker.proc is not None and worker.proc.poll() is None
        counters = {
            "events": worker.metric("bstream_events_total"),
            "dropped": worker.metric("bstream_dropped_fields_total"),
            "dlq": worker.metric("bstream_dlq_total"),
        }
        sampler.stop()
        assert worker.stop() == 0
    finally:
        watcher.close()
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()

    backlog_bytes = max(lags) * len(orjson.dumps(events[0]))
    growth = sampler.peak_rss - baseline_rss
    record_result(
        {
            "scenario": f"overload ({FACTOR}x capacity for {OVERLOAD_S}s)",
            "runs": 1,
            "events": len(warm) + len(events),
            "capacity_ev_s": round(capacity),
            "offered_ev_s": offered,
            "peak_lag": int(max(lags)),
            "backlog_mib": mib(int(backlog_bytes)),
            "users_lost": len(watcher.missing(expected_for(wenv, events))),
            "duplicates": watcher.duplicates,
            "dlq": int(counters["dlq"]),
            "baseline_rss_mib": mib(baseline_rss),
            "overload_rss_mib": mib(overload_rss),
            "peak_rss_mib": mib(sampler.peak_rss),
            "drained_rss_mib": mib(drained_rss),
            "time_to_recover_s": round(drain_s, 1),
        }
    )
    assert alive
    assert max(lags) >= 0.25 * len(events), f"no overload: peak lag {max(lags)} of {len(events)}"
    assert lags[-1] == 0
    assert counters["events"] == len(warm) + len(events)
    assert counters["dropped"] == len(warm) + len(events)
    assert counters["dlq"] == 0
    # Bounded: the worker holds a bounded buffer, not the backlog (which would add > backlog_bytes).
    assert growth < backlog_bytes / 2, (
        f"RSS grew {mib(growth)} MiB, backlog {mib(int(backlog_bytes))} MiB"
    )
