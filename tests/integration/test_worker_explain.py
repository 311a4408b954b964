"""`bstream worker --explain all`: every prediction carries schema-valid reasons that point at real
events of the user's window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from stream.kafka.broker import EmbeddedBroker
from tests.conftest import REPO
from tests.integration.worker_support import WorkerProcess, collect, new_env, produce, reflects

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000
TYPES = ("view", "cart", "view", "fav", "purchase", "view")


def user_events(user: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user,
            "event_type": TYPES[i % len(TYPES)],
            "ts": T0 + i * 1000,
            "item_id": f"{user}-item-{i}",
        }
        for i in range(n)
    ]


def test_predictions_carry_reasons_about_events_of_the_window(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    wenv = new_env(broker.bootstrap)
    sent = {f"xu{i}": user_events(f"xu{i}", 2 + i) for i in range(5)}
    by_user = {wenv.user(raw): events for raw, events in sent.items()}
    schema = json.loads((REPO / "schemas" / "prediction.v1.json").read_text())

    with WorkerProcess(wenv, tiny_bundle, tmp_path, "--explain", "all") as worker:
        worker.wait_ready()
        produce(
            broker.bootstrap,
            wenv.settings.events_topic,
            [(e["user_id"].encode(), orjson.dumps(e)) for es in sent.values() for e in es],
        )
        records = collect(
            broker.bootstrap,
            wenv.settings.predictions_topic,
            reflects(
                {u: es[-1]["ts"] for u, es in by_user.items()},
                {u: len(es) for u, es in by_user.items()},
            ),
        )
        log = worker.log()

    predictions = [orjson.loads(r.value or b"") for r in records]
    assert "explain=all" in log
    for p in predictions:
        jsonschema.validate(p, schema)
        window = [e for e in by_user[p["user"]] if e["ts"] <= p["last_event_ts"]]
        window = window[-p["window_size"] :]
        assert 1 <= len(p["reasons"]) <= min(3, len(window))
        for reason in p["reasons"]:
            event = window[reason["event_index"]]
            assert (reason["event_type"], reason["item_id"]) == (
                event["event_type"],
                event["item_id"],
            )
