"""Replay 20k real Taobao events through a worker: every user predicted with their newest event."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import orjson
import pytest

from schemas.formats import event_json, read_rows
from schemas.validation import validate_prediction
from stream.kafka.broker import EmbeddedBroker
from tests.conftest import TAOBAO_SLICE, need_shared
from tests.integration.worker_support import (
    Msg,
    WorkerEnv,
    WorkerProcess,
    collect,
    new_env,
    produce,
    reflects,
)

pytestmark = pytest.mark.integration
N_EVENTS = 20_000


@pytest.fixture(scope="module")
def replayed(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerEnv, WorkerProcess, list[dict[str, Any]], list[Msg]]]:
    """One worker that has consumed the first 20k Taobao rows and predicted every user."""
    rows = itertools.islice(read_rows(need_shared(TAOBAO_SLICE), "taobao"), N_EVENTS)
    events = [row.event for row in rows if row.event is not None]
    wenv = new_env(broker.bootstrap)
    newest: dict[str, int] = {}
    for event in events:
        user = wenv.user(event["user_id"])
        newest[user] = max(newest.get(user, 0), event["ts"])
    with WorkerProcess(wenv, tiny_bundle, tmp_path_factory.mktemp("taobao")) as worker:
        worker.wait_ready()
        produce(
            broker.bootstrap,
            wenv.settings.events_topic,
            [(e["user_id"].encode(), event_json(e)) for e in events],
        )
        predictions = collect(
            broker.bootstrap, wenv.settings.predictions_topic, reflects(newest), timeout=180
        )
        yield wenv, worker, events, predictions


def test_every_user_gets_a_valid_prediction_for_their_newest_event(
    replayed: tuple[WorkerEnv, WorkerProcess, list[dict[str, Any]], list[Msg]],
) -> None:
    wenv, _, events, predictions = replayed
    raw_ids = {e["user_id"] for e in events}

    decoded = [orjson.loads(r.value or b"") for r in predictions]

    assert len(events) == N_EVENTS
    assert [p for p in decoded if validate_prediction(p) is not None] == []
    assert {p["user"] for p in decoded} == {wenv.user(u) for u in raw_ids}
    assert not raw_ids & {p["user"] for p in decoded}
    assert {p["key_id"] for p in decoded} == {"k1"}
    assert all(r.key == orjson.loads(r.value or b"")["user"].encode() for r in predictions)


def test_metrics_count_the_input(
    replayed: tuple[WorkerEnv, WorkerProcess, list[dict[str, Any]], list[Msg]],
) -> None:
    _, worker, events, predictions = replayed
    by_type = Counter(e["event_type"] for e in events)

    assert worker.metric("bstream_events_total") == N_EVENTS
    for event_type, n in by_type.items():
        assert worker.metric("bstream_events_total", event_type=event_type) == n
    assert worker.metric("bstream_invalid_total") == 0
    assert worker.metric("bstream_dlq_total") == 0
    assert worker.metric("bstream_predictions_total") == len(predictions)
    assert worker.metric("bstream_batch_events_sum") == N_EVENTS
    assert worker.metric("bstream_ready") == 1


def kcat_env(bootstrap: str, workdir: Path) -> dict[str, str] | None:
    """Environment in which kcat can talk to the broker, or None.

    Debian's kcat links librdkafka 2.0.2, which cannot parse the embedded broker's ApiVersions v3
    reply; the same kcat binary works with the newer librdkafka that confluent-kafka ships.
    """
    probe = ["kcat", "-b", bootstrap, "-L", "-m", "2"]
    if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
        return dict(os.environ)
    libs = sorted(
        Path(confluent_kafka.__file__).parent.parent.glob("confluent_kafka.libs/librdkafka*.so*")
    )
    if not libs:
        return None
    (workdir / "librdkafka.so.1").symlink_to(libs[0])
    env = {**os.environ, "LD_LIBRARY_PATH": str(workdir)}
    return (
        env
        if subprocess.run(probe, capture_output=True, env=env, timeout=30).returncode == 0
        else None
    )


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_reads_predictions_as_json(
    replayed: tuple[WorkerEnv, WorkerProcess, list[dict[str, Any]], list[Msg]], tmp_path: Path
) -> None:
    wenv, _, _, predictions = replayed
    env = kcat_env(wenv.bootstrap, tmp_path)
    if env is None:
        pytest.skip("kcat cannot connect to the embedded broker with any available librdkafka")
    cmd = [
        "kcat",
        "-b",
        wenv.bootstrap,
        "-C",
        "-t",
        wenv.settings.predictions_topic,
        "-e",
        "-q",
        "-f",
        "%s\\n",
    ]

    out = subprocess.run(cmd, capture_output=True, check=True, env=env, timeout=60).stdout

    lines = out.splitlines()
    assert len(lines) == len(predictions)
    assert all(validate_prediction(orjson.loads(line)) is None for line in lines)
