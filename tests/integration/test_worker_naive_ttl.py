"""A naive-mode worker with a short idle TTL: one inference per event, then idle windows expire.

It runs on the RocksDB store when rocksdict is installed (the `rocksdb` extra), else in memory.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import orjson
import pytest

from stream.kafka.broker import EmbeddedBroker
from tests.integration.worker_support import WorkerProcess, collect, new_env, produce, reflects

pytestmark = pytest.mark.integration
STORE = "rocksdb://" if importlib.util.find_spec("rocksdict") else "memory://"
T0 = 1_700_000_000_000


def test_naive_mode_predicts_per_event_and_idle_windows_expire(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BSTREAM_IDLE_TTL_S", "2")
    wenv = new_env(broker.bootstrap)
    events = [
        {"user_id": "ttl-user", "event_type": "view", "ts": T0 + i, "item_id": f"i{i}"}
        for i in range(5)
    ]
    user = wenv.user("ttl-user")

    with WorkerProcess(wenv, tiny_bundle, tmp_path, "--naive", "--store", STORE) as worker:
        worker.wait_ready()
        placed = produce(
            broker.bootstrap,
            wenv.settings.events_topic,
            [(b"ttl-user", orjson.dumps(e)) for e in events],
        )
        predictions = collect(
            broker.bootstrap, wenv.settings.predictions_topic, reflects({user: T0 + 4}, {user: 5})
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            expired = worker.metric("bstream_expired_windows_total")
            active = worker.metric("bstream_active_windows")
            if expired >= 1 and active == 0:
                break
            time.sleep(0.5)

    sizes = [orjson.loads(p.value or b"")["window_size"] for p in predictions]
    changelog = collect(
        broker.bootstrap, wenv.changelog_topic, lambda got: any(m.value is None for m in got)
    )
    assert sizes == [1, 2, 3, 4, 5]
    assert (expired, active) == (1, 0)
    assert changelog[-1].key == user.encode() and changelog[-1].value is None
    assert {m.partition for m in changelog} == {placed[0][0]}
