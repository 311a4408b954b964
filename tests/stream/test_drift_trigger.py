"""`bstream retrain --on-drift`: the served champion's PSI alarm, read from a real /metrics page."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest, start_http_server

from schemas.formats import event_json
from stream.drift_trigger import champion_alarm, wait_for_alarm
from stream.kafka.broker import EmbeddedBroker
from stream.simulate import simulate_events
from tests.stream.kafka_helpers import run_cli


class Page:
    """A worker-like metrics page: model info and drift levels, served over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.info = Gauge(
            "bstream_model_info", "", ["role", "model_version"], registry=self.registry
        )
        self.level = Gauge(
            "bstream_drift_level", "", ["model_version", "feature"], registry=self.registry
        )
        self.info.labels(role="champion", model_version="old").set(0)
        self.info.labels(role="champion", model_version="new").set(1)
        self.level.labels(model_version="old", feature="score").set(2)  # stale, swapped out
        for feature in ("score", "event_type"):
            self.level.labels(model_version="new", feature=feature).set(1)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


@pytest.fixture
def page() -> Iterator[tuple[Page, str]]:
    served = Page()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=served.registry)
    try:
        yield served, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        thread.join(5)


def test_only_the_served_champions_alarm_counts() -> None:
    served = Page()
    assert champion_alarm(served.text()) == ("new", ())  # the old version's 2 is stale

    served.level.labels(model_version="new", feature="event_type").set(2)

    assert champion_alarm(served.text()) == ("new", ("event_type",))
    assert champion_alarm("") == (None, ())


def test_waits_until_the_alarm_fires(page: tuple[Page, str]) -> None:
    served, url = page
    polls: list[float] = []

    def sleep(seconds: float) -> None:  # the worker's PSI crosses the alarm on the third poll
        polls.append(seconds)
        if len(polls) == 2:
            served.level.labels(model_version="new", feature="score").set(2)

    alarm = wait_for_alarm([url], 30.0, None, sleep=sleep)

    assert alarm is not None and len(polls) == 2
    assert (alarm.url, alarm.model_version, alarm.features) == (url, "new", ("score",))


def test_gives_up_after_the_wait_and_logs_an_unreachable_worker_once(
    page: tuple[Page, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = page
    ticks = iter(range(100))
    dead = "http://127.0.0.1:1/metrics"

    with caplog.at_level(logging.WARNING, logger="bstream.retrain"):
        alarm = wait_for_alarm(
            [dead, url], 1.0, 5.0, sleep=lambda _: None, clock=lambda: float(next(ticks))
        )

    assert alarm is None
    assert [r.getMessage().startswith(f"cannot read {dead}: ") for r in caplog.records] == [True]


def test_on_drift_without_a_url_is_a_usage_error() -> None:
    result = run_cli("retrain", "--on-drift")

    assert result.exit_code == 2
    assert "--on-drift needs --metrics-url" in result.stderr


def test_no_alarm_within_the_wait_retrains_nothing(page: tuple[Page, str]) -> None:
    _, url = page

    result = run_cli("retrain", "--on-drift", "--metrics-url", url, "--drift-wait-min", "0")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"decision": "none", "reason": "no drift alarm"}


@pytest.mark.slow
def test_an_alarm_starts_one_retrain(
    page: tuple[Page, str], broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    served, url = page
    served.level.labels(model_version="new", feature="score").set(2)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(event_json(e) + b"\n" for e in simulate_events(80, seed=5)))
    env = {
        "BSTREAM_BOOTSTRAP": broker.bootstrap,
        "BSTREAM_MODELS_TOPIC": f"models-{uuid.uuid4().hex[:8]}",
    }

    result = run_cli(
        "retrain", "--on-drift", "--metrics-url", url,
        "--events-file", str(events), "--champion", str(tiny_bundle),
        "--out", str(tmp_path / "candidate"), "--budget-min", "1", "--max-train", "200",
        "--epochs", "1", "--report-only",
        env=env,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "drift alarm at" in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["decision"] == "report"
    assert report["trigger"] == {"drift_alarm": "new", "features": ["score"]}
