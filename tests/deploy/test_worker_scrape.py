"""A real `bstream worker` (tiny bundle, embedded broker): its /metrics serves every name the
dashboard and alerts query, and the image's health probe accepts its /health."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.kafka.broker import EmbeddedBroker
from tests.deploy.manifests import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_SYNTHETIC,
    alert_rules,
    dashboard_queries,
    exposition_names,
    grafana_to_promql,
    load_json,
    load_yaml,
    promql_metric_names,
)
from tests.integration.worker_support import WorkerProcess, new_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One ready worker on its own topics."""
    with WorkerProcess(
        new_env(broker.bootstrap), tiny_bundle, tmp_path_factory.mktemp("scrape")
    ) as running:
        yield running.wait_ready()


def test_dashboard_and_alerts_query_only_what_a_real_worker_exports(worker: WorkerProcess) -> None:
    exported = exposition_names(worker.metrics_text())
    queries = [grafana_to_promql(expr) for _, expr in dashboard_queries(load_json(DASHBOARD))]
    queries += [rule["expr"] for rule in alert_rules(load_yaml(ALERTS))]

    used = set().union(*(promql_metric_names(q) for q in queries)) - PROMETHEUS_SYNTHETIC

    assert used <= exported, f"queried but not exported: {sorted(used - exported)}"


def test_image_health_probe_accepts_a_ready_worker(worker: WorkerProcess) -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")],
        env={"BSTREAM_METRICS_PORT": str(worker.port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert '"status":"ready"' in result.stdout
