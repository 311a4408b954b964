"""`bstream retrain --source outcomes`: the windows the workers scored, with their live labels."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from model.data import label_events
from model.labels import label_sequence
from schemas.formats import event_json
from stream.kafka.broker import EmbeddedBroker
from stream.kafka.topics import create_topics, default_topics
from stream.outcomes import Pending, Resolved, build_outcome, validate_outcome
from stream.privacy import pseudonym
from stream.retrain_data import outcome_data
from stream.settings import Settings
from stream.simulate import simulate_events
from tests.integration.worker_support import produce
from tests.stream.kafka_helpers import run_cli

KEY = "retrain-outcomes-test-key-0123456789"
HORIZON_MS = 30 * 60_000


def user_key(raw: str) -> str:
    return pseudonym(KEY.encode(), raw)


def outcomes_of(events: list[dict[str, Any]], version: str = "v1") -> list[dict[str, Any]]:
    """Outcome v1 records as a worker making one prediction per event would publish them."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append(event)
    out = []
    for raw, seq in by_user.items():
        seq.sort(key=lambda e: e["ts"])
        for index, labels in label_sequence(seq, HORIZON_MS, ("purchase",)):
            ts = seq[index]["ts"]
            later = [e["ts"] for e in seq[index + 1 :] if e["ts"] > ts]
            if not later:
                continue  # still pending: the user has no later event
            pending = Pending(ts, 0, version, HORIZON_MS, {"purchase": 0.5}, {}, [])
            resolved = Resolved(pending, {"purchase": labels[0]}, later[0])
            outcome = build_outcome(user_key(raw), None, resolved, 1)
            # with tied events, which of them the window ends at (ids are distinct here)
            outcome["last_ts_events"] = sum(e["ts"] == ts for e in seq[: index + 1])
            out.append(outcome)
    return out


def test_outcome_data_rebuilds_the_scored_windows_with_their_live_labels() -> None:
    events = simulate_events(60, seed=3)
    outcomes = outcomes_of(events)
    assert outcomes and validate_outcome(outcomes[0]) is None
    # a redelivered copy, a shadow challenger's outcome of the same window, one of another stream
    stranger = {**outcomes[0], "user": user_key("nobody")}
    noisy = [*outcomes, outcomes[0], {**outcomes[1], "model_version": "v2"}, stranger]

    data = outcome_data(noisy, events, user_key, ["purchase"], 30.0)

    offline = label_events(events, 30.0, ("purchase",))
    for example in data.examples:
        window = data.window(example, 20)
        assert window[-1]["ts"] == example.ts  # the window ends at the prediction point
        raw = next(u for u in offline.sequences if user_key(u) == example.user)
        assert offline.labels_at(raw, example.index) in (example.labels, None)  # None: purged
    assert data.stats["duplicates"] == 2 and data.stats["no_window"] == 1
    assert data.stats["outcomes"] == len(noisy)
    kept = len(data.examples) + data.stats["purged"]
    assert kept == len(outcomes)
    assert {e.split for e in data.examples} == {"train", "val", "test"}
    assert data.fingerprint["source"] == "outcomes"


def test_outcome_data_without_a_matching_window_is_an_error() -> None:
    events = simulate_events(5, seed=3)
    outcomes = outcomes_of(events)
    with pytest.raises(ValueError, match="no outcome matches"):
        outcome_data(outcomes, events, lambda raw: "x" + raw, ["purchase"], 30.0)


@pytest.mark.slow
def test_retrain_from_the_outcomes_topic(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap=broker.bootstrap,
        events_topic=f"events-{suffix}",
        outcomes_topic=f"outcomes-{suffix}",
        models_topic=f"models-{suffix}",
    )
    create_topics(settings, default_topics(settings, 2))
    events = simulate_events(120, seed=5)
    produce(broker.bootstrap, settings.events_topic, [(None, event_json(e)) for e in events])
    outcomes = outcomes_of(events)
    produce(
        broker.bootstrap,
        settings.outcomes_topic,
        [(o["user"].encode(), json.dumps(o).encode()) for o in outcomes],
    )
    env = {
        "BSTREAM_BOOTSTRAP": broker.bootstrap,
        "BSTREAM_EVENTS_TOPIC": settings.events_topic,
        "BSTREAM_OUTCOMES_TOPIC": settings.outcomes_topic,
        "BSTREAM_MODELS_TOPIC": settings.models_topic,
        "BSTREAM_HMAC_KEY": KEY,
    }

    result = run_cli(
        "retrain",
        "--source", "outcomes",
        "--champion", str(tiny_bundle),
        "--out", str(tmp_path / "candidate"),
        "--budget-min", "2",
        "--max-train", "300",
        "--epochs", "1",
        "--report-only",
        env=env,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["decision"] == "report" and report["source"] == "outcomes"
    assert report["test_windows"] > 0 and (tmp_path / "candidate" / "model.ts").is_file()
    assert (tmp_path / "candidate" / "drift_reference.json").is_file()


def test_retrain_from_outcomes_needs_the_pseudonym_key(
    broker: EmbeddedBroker, tiny_bundle: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "BSTREAM_BOOTSTRAP": broker.bootstrap,
        "BSTREAM_MODELS_TOPIC": f"models-{suffix}",
        "BSTREAM_OUTCOMES_TOPIC": f"outcomes-{suffix}",
    }
    settings = Settings(
        bootstrap=broker.bootstrap,
        models_topic=env["BSTREAM_MODELS_TOPIC"],
        outcomes_topic=env["BSTREAM_OUTCOMES_TOPIC"],
    )
    create_topics(settings, default_topics(settings, 1))

    result = run_cli("retrain", "--source", "outcomes", "--champion", str(tiny_bundle), env=env)

    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: no HMAC key")
    assert len(result.stderr.strip().splitlines()) == 1
