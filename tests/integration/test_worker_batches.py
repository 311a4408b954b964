"""One real worker: bad records go to the DLQ with reasons; a burst for one user is coalesced."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.validation import validate_prediction
from stream.kafka.broker import EmbeddedBroker
from tests.integration.worker_support import (
    Msg,
    WorkerEnv,
    WorkerProcess,
    collect,
    latest_by_user,
    new_env,
    produce,
    reflects,
)

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def valid_event(user: str, i: int, **extra: Any) -> dict[str, Any]:
    kinds = ("view", "view", "click", "cart", "fav", "purchase")
    return {
        "user_id": user,
        "event_type": kinds[i % 6],
        "ts": T0 + i * 1000,
        "item_id": f"i{i % 7}",
        **extra,
    }


# (expected error.code, raw value) for each kind of bad record
BAD_KINDS: list[tuple[str, bytes | None]] = [
    ("not_json", b'{"user_id": "x", '),
    ("not_json", None),  # a null value (tombstone) on the events topic
    ("not_utf8", b'{"user_id": "\xff\xfe"}'),
    ("oversized", orjson.dumps({**valid_event("x", 1), "blob": "b" * 20_000})),
    ("oversized", orjson.dumps({**valid_event("x", 1), "blob": "b" * 300_000})),  # > a record batch
    ("wrong_type", orjson.dumps({**valid_event("x", 1), "ts": "yesterday"})),
    ("missing_field", orjson.dumps({"user_id": "x", "event_type": "view", "ts": T0})),
    ("bad_value", orjson.dumps({**valid_event("x", 1), "event_type": "teleport"})),
    ("not_object", b"[1, 2, 3]"),
    ("not_object", b'"just a string"'),
]  # 10 kinds x 20 = 200


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerEnv, WorkerProcess]]:
    wenv = new_env(broker.bootstrap)
    with WorkerProcess(wenv, tiny_bundle, tmp_path_factory.mktemp("batches")) as running:
        yield wenv, running.wait_ready()


def test_mixed_input_sends_exactly_the_invalid_records_to_the_dlq(
    worker: tuple[WorkerEnv, WorkerProcess], broker: EmbeddedBroker
) -> None:
    wenv, process = worker
    raw_ids = [f"mixed-user-{u}" for u in range(100)]
    valid = [valid_event(uid, i, email="a@b.example") for uid in raw_ids for i in range(10)]
    bad = [(code, value) for _ in range(20) for code, value in BAD_KINDS]
    records: list[tuple[str | None, bytes | None, bytes | None]] = [
        *((None, e["user_id"].encode(), orjson.dumps(e)) for e in valid),
        *((code, f"bad{i}".encode(), value) for i, (code, value) in enumerate(bad)),
    ]
    random.Random(4).shuffle(records)
    newest = {wenv.user(uid): T0 + 9000 for uid in raw_ids}

    placed = produce(broker.bootstrap, wenv.settings.events_topic, [(k, v) for _, k, v in records])
    dlq = collect(
        broker.bootstrap, wenv.settings.dlq_topic, lambda got: len(got) >= 200, timeout=120
    )
    predictions = collect(
        broker.bootstrap,
        wenv.settings.predictions_topic,
        reflects(newest, dict.fromkeys(newest, 10)),
        timeout=120,
    )

    expected = {
        (str(p), str(o)): (code, key, value)
        for (code, key, value), (p, o) in zip(records, placed, strict=True)
        if code is not None
    }
    got = {(m.headers["source.partition"], m.headers["source.offset"]): m for m in dlq}
    assert len(dlq) == 200 and got.keys() == expected.keys()
    for where, (code, key, value) in expected.items():
        message = got[where]
        assert message.headers["error.code"] == code
        assert message.headers["source.topic"] == wenv.settings.events_topic
        assert message.headers["error.message"]
        # with a key configured the DLQ key is the original key's pseudonym (docs/privacy.md)
        assert key is not None and (message.key, message.value) == (
            wenv.user(key.decode()).encode(),
            value,
        )
    assert all(validate_prediction(orjson.loads(m.value or b"")) is None for m in predictions)
    assert process.metric("bstream_dlq_total") == 200
    for code, n in Counter(code for code, _ in bad).items():
        assert process.metric("bstream_invalid_total", reason=code) == n
    assert process.metric("bstream_dropped_fields_total", kind="email") >= 1000
    exposed = process.log() + process.metrics_text()
    assert not [uid for uid in raw_ids if uid in exposed]
    assert "a@b.example" not in exposed


def test_a_burst_for_one_user_is_coalesced(
    worker: tuple[WorkerEnv, WorkerProcess], broker: EmbeddedBroker
) -> None:
    wenv, _ = worker
    burst = [valid_event("burst-user", i) for i in range(50)]
    user = wenv.user("burst-user")

    produce(
        broker.bootstrap,
        wenv.settings.events_topic,
        [(b"burst-user", orjson.dumps(e)) for e in burst],
    )
    records = collect(
        broker.bootstrap,
        wenv.settings.predictions_topic,
        reflects({user: T0 + 49_000}, {user: 50}),
        timeout=60,
    )

    mine: list[Msg] = [r for r in records if r.key == user.encode()]
    assert len(mine) <= 5, f"{len(mine)} inferences for a burst of 50 events"
    final = latest_by_user(mine)[user]
    assert (final["window_size"], final["last_event_ts"]) == (50, T0 + 49_000)
