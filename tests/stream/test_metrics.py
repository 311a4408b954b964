"""Metric names (a contract with dashboards), health semantics, the /metrics + /health endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from stream.metrics import Metrics, serve

CONTRACT = [
    "bstream_events_total", "bstream_invalid_total", "bstream_dropped_fields_total",
    "bstream_dlq_total", "bstream_duplicate_events_total", "bstream_predictions_total",
    "bstream_batch_events",
    "bstream_batch_users", "bstream_inference_seconds", "bstream_event_to_prediction_seconds",
    "bstream_inference_failures_total", "bstream_active_windows", "bstream_expired_windows_total",
    "bstream_erasures_total", "bstream_consumer_lag", "bstream_ready", "bstream_broker_up",
]  # fmt: skip


def test_every_contract_metric_is_exported() -> None:
    m = Metrics()
    m.consumer_lag.labels(partition="0").set(3)

    text = m.exposition().decode()

    for name in CONTRACT:
        assert f"# TYPE {name} " in text, name
    assert 'bstream_events_total{event_type="purchase"} 0.0' in text
    assert 'bstream_dropped_fields_total{kind="email"} 0.0' in text
    assert 'bstream_consumer_lag{partition="0"} 3.0' in text
    assert "_created" not in text


def test_ready_needs_the_model_and_partitions() -> None:
    m = Metrics()

    m.set_health(model_loaded=True)
    assert not m.health.ready and m.ready._value.get() == 0

    m.set_health(partitions_assigned=2, broker_up=True)
    assert m.health.ready and m.ready._value.get() == 1 and m.broker_up._value.get() == 1


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    m = Metrics()
    server = serve(m, 0, host="127.0.0.1")
    yield m, server.server_port
    server.shutdown()


def test_health_is_503_until_ready_then_200(served: tuple[Metrics, int]) -> None:
    m, port = served

    status, body = get(port, "/health")
    m.set_health(model_loaded=True, partitions_assigned=1, broker_up=True, model_version="v1")
    m.set_health(instance_id="abc123", pid=42)
    ready_status, ready_body = get(port, "/health")

    assert status == 503 and orjson.loads(body)["status"] == "not_ready"
    assert ready_status == 200
    assert orjson.loads(ready_body) == {
        "status": "ready",
        "model_loaded": True,
        "model_version": "v1",
        "partitions_assigned": 1,
        "broker_up": True,
        "recovery": {},
        "instance_id": "abc123",
        "pid": 42,
    }


def test_metrics_endpoint_serves_prometheus_text(served: tuple[Metrics, int]) -> None:
    m, port = served
    m.predictions.inc(3)

    status, body = get(port, "/metrics")

    assert status == 200 and b"bstream_predictions_total 3.0" in body
    assert get(port, "/nope")[0] == 404
