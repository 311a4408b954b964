"""kill -9 the worker at random points while `bstream replay` streams the Taobao slice; restart it.

Afterwards every user's newest event is reflected in their latest prediction (`last_event_ts`),
and the window holds every distinct event of theirs: nothing consumed before a crash is lost.
Duplicate predictions are allowed (at-least-once) and reported. A supervisor restarts a worker
that exits non-zero on its own (a recovery it could not finish), as a deployment's would; such
restarts are reported too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import time
from pathlib import Path

import pytest

from stream.kafka.broker import EmbeddedBroker
from tests.conftest import TAOBAO_SLICE, need_shared
from tests.faults.support import (
    PredictionWatcher,
    ProcessSampler,
    Supervisor,
    expected_for,
    finish_replay,
    kill9,
    mib,
    record_result,
    start_replay,
    taobao_events,
    wait_for,
)
from tests.integration.worker_support import WorkerProcess, new_env

pytestmark = pytest.mark.integration


def crash_and_recover(
    broker: EmbeddedBroker,
    bundle: Path,
    workdir: Path,
    events: int,
    kills: int,
    rate: int,
    store: str = "memory://",
) -> None:
    path = need_shared(TAOBAO_SLICE)
    sent = taobao_events(path, events)
    wenv = new_env(broker.bootstrap)
    expected = expected_for(wenv, sent)
    rng = random.Random(events * 31 + kills)
    watcher = PredictionWatcher(broker.bootstrap, wenv.settings.predictions_topic)
    worker = WorkerProcess(wenv, bundle, workdir, "--store", store, name="crash")
    worker.start().wait_ready()
    supervisor = Supervisor(worker)
    peak_rss, recover_s = 0, []
    silenced, replayed_events = 0.0, 0.0  # summed over the worker's lives (metrics restart at 0)

    def count_replays() -> None:
        nonlocal silenced, replayed_events
        with contextlib.suppress(OSError):
            silenced += worker.metric("bstream_unchanged_windows_total")
            replayed_events += worker.metric("bstream_duplicate_events_total")

    replay = start_replay(wenv, path, "taobao", "--limit", str(events), "--rate", str(rate))
    try:
        for _ in range(kills):
            sampler = ProcessSampler(worker.proc.pid)  # type: ignore[union-attr]
            wait_for(lambda: worker.metric("bstream_events_total") > 0, 120, "events to flow")
            time.sleep(rng.uniform(0.2, 3.0))  # a random point mid-stream
            count_replays()  # just before the kill: what this life saw
            kill9(worker)
            sampler.stop()
            peak_rss = max(peak_rss, sampler.peak_rss)
            killed = time.monotonic()
            worker.start().wait_ready(timeout=180)
            recover_s.append(time.monotonic() - killed)
        summary = finish_replay(replay)
        drain_s = watcher.wait_reflects(expected, timeout=600)
        assert worker.proc is not None and worker.proc.poll() is None
        assert worker.metric("bstream_dlq_total") == 0
        count_replays()
        supervisor.stop()
        assert worker.stop() == 0
    finally:
        supervisor.stop()
        replay.kill()
        watcher.close()
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()

    assert f"sent={len(sent)}" in summary
    record_result(
        {
            "scenario": f"crash recovery (kill -9, {store.rstrip(':/')} store)",
            "runs": kills,
            "events": len(sent),
            "users": len(expected.newest),
            "users_lost": len(watcher.missing(expected)),
            "predictions": watcher.total,
            "duplicates": watcher.duplicates,
            "duplicate_rate": round(watcher.duplicates / max(1, watcher.total), 4),
            # replayed updates whose windows already held the events: no prediction (were repeats)
            "replayed_updates_silenced": int(silenced),
            "replayed_duplicate_events": int(replayed_events),
            "dlq": 0,
            "peak_rss_mib": mib(peak_rss),
            "time_to_recover_s": round(max(recover_s), 1),
            "supervisor_restarts": len(supervisor.exits),
            "supervisor_restart_reasons": supervisor.exits,
            "drain_after_replay_s": round(drain_s, 1),
        }
    )


def test_kill9_during_a_short_replay_loses_no_user(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    crash_and_recover(broker, tiny_bundle, tmp_path, events=3_000, kills=1, rate=300)


@pytest.mark.slow
def test_kill9_five_times_during_the_taobao_slice_loses_no_user(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    crash_and_recover(broker, tiny_bundle, tmp_path, events=110_300, kills=5, rate=1_000)


@pytest.mark.slow
@pytest.mark.skipif(not importlib.util.find_spec("rocksdict"), reason="needs the rocksdb extra")
def test_kill9_three_times_with_the_rocksdb_store_loses_no_user(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    crash_and_recover(
        broker, tiny_bundle, tmp_path, 20_000, kills=3, rate=1_000, store="rocksdb://"
    )
