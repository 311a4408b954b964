"""`bstream retrain`: warm start from the champion, paired bootstrap, decision on the registry."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from model.bundle import validate_bundle
from model.metrics import pr_auc
from model.retrain import paired_bootstrap
from schemas.formats import event_json
from stream.kafka.broker import EmbeddedBroker
from stream.registry import read_state
from stream.settings import Settings
from stream.simulate import simulate_events
from tests.stream.kafka_helpers import run_cli


def test_paired_bootstrap_sees_a_real_gain_and_no_gain_against_itself() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.2).astype(float)
    good = y + rng.normal(0, 0.5, 600)
    bad = rng.normal(0, 1, 600)

    diff, lo, hi = paired_bootstrap(y, good, bad, pr_auc, n=200)
    same = paired_bootstrap(y, good, good, pr_auc, n=200)

    assert lo > 0 and lo <= diff <= hi
    assert same == (0.0, 0.0, 0.0)


@pytest.mark.slow
def test_retrain_announces_the_candidate_and_records_the_decision(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(event_json(e) + b"\n" for e in simulate_events(120, seed=5)))
    env = {
        "BSTREAM_BOOTSTRAP": broker.bootstrap,
        "BSTREAM_MODELS_TOPIC": f"models-{uuid.uuid4().hex[:8]}",
    }
    settings = Settings(bootstrap=broker.bootstrap, models_topic=env["BSTREAM_MODELS_TOPIC"])
    assert run_cli("promote", str(tiny_bundle), env=env).exit_code == 0

    result = run_cli(
        "retrain",
        "--events-file", str(events),
        "--out", str(tmp_path / "candidate"),
        "--budget-min", "0.2",
        "--max-train", "300",
        "--margin", "-1",  # any candidate wins: this test checks the announce path
        env=env,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    state = read_state(settings)
    candidate = validate_bundle(tmp_path / "candidate")
    assert report["decision"] == "champion" and report["version"] == candidate.version
    assert state.champion is not None and state.champion.version == candidate.version
    assert [h.version for h in state.champion.earlier()] == [report["champion"]]
    (decision,) = state.decisions
    assert decision["action"] == "retrain:champion"
    assert decision["figures"]["test_windows"] > 0
    assert set(decision["figures"]) >= {"pr_auc_candidate", "pr_auc_champion", "pr_auc_diff_ci95"}
    assert orjson.loads(orjson.dumps(decision))["version"] == candidate.version


def test_retrain_without_a_champion_is_a_one_line_error(broker: EmbeddedBroker) -> None:
    env = {
        "BSTREAM_BOOTSTRAP": broker.bootstrap,
        "BSTREAM_MODELS_TOPIC": f"models-{uuid.uuid4().hex[:8]}",
    }

    result = run_cli("retrain", env=env)

    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: no champion: promote one or pass --champion"
