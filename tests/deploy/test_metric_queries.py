"""Grafana dashboard and alert rules: valid PromQL that uses only metric names the worker exports.

The exported names come from a live HTTP scrape of /metrics, served by the same code the worker
runs (stream.metrics.Metrics + stream.metrics.serve); test_worker_scrape.py repeats the check
against a real `bstream worker` process.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from stream.metrics import Metrics, serve
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

DASHBOARD_DATA: dict[str, Any] = load_json(DASHBOARD)
QUERIES = list(dashboard_queries(DASHBOARD_DATA))
RULES = alert_rules(load_yaml(ALERTS))


def scrape_live_metrics_endpoint() -> str:
    """Serve /metrics as `bstream worker` does (Metrics(process=True), serve); GET it over HTTP."""
    server = serve(Metrics(process=True), 0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            return response.read().decode()
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def exported() -> Iterator[set[str]]:
    """Every series name the live /metrics endpoint exports."""
    yield exposition_names(scrape_live_metrics_endpoint())


def test_dashboard_json_is_a_provisionable_dashboard() -> None:
    panel_ids = [panel["id"] for panel in DASHBOARD_DATA["panels"]]
    variables = {v["name"] for v in DASHBOARD_DATA["templating"]["list"]}

    assert DASHBOARD_DATA["uid"] == "behavior-stream"
    assert len(panel_ids) == len(set(panel_ids))
    assert QUERIES and all(expr.strip() for _, expr in QUERIES)
    assert {"datasource", "instance"} <= variables
    for panel in DASHBOARD_DATA["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}:{e[:40]}" for t, e in QUERIES])
def test_dashboard_query_uses_only_exported_metrics(
    title: str, expr: str, exported: set[str]
) -> None:
    names = promql_metric_names(grafana_to_promql(expr))

    assert names, f"{title}: selects no metric"
    assert names <= exported, f"{title}: not exported: {sorted(names - exported)}"


def test_dashboard_variables_query_exported_metrics(exported: set[str]) -> None:
    for variable in DASHBOARD_DATA["templating"]["list"]:
        if variable["type"] != "query":
            continue
        (metric,) = re.findall(r"label_values\((\w+)", variable["definition"])
        assert metric in exported, variable["name"]


def test_dashboard_shows_every_exported_worker_metric(exported: set[str]) -> None:
    used = set().union(*(promql_metric_names(grafana_to_promql(e)) for _, e in QUERIES))
    families = {
        re.sub(r"_(total|bucket|sum|count|created)$", "", n)
        for n in exported
        if n.startswith("bstream_")
    }
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}

    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"


def test_dashboard_has_the_panels_operators_need() -> None:
    queries = "\n".join(expr for _, expr in QUERIES)
    titles = {panel["title"] for panel in DASHBOARD_DATA["panels"]}

    assert {
        "Events/s by type",
        "Predictions/s",
        "Batch size",
        "Latency p50 / p99",
        "DLQ rate by reason",
        "Consumer lag by partition",
        "Active windows",
    } <= titles
    latency = "sum by (le) (rate(bstream_event_to_prediction_seconds_bucket"
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, {latency}" in queries


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_alert_uses_only_exported_metrics(rule: dict[str, Any], exported: set[str]) -> None:
    names = promql_metric_names(rule["expr"])

    assert names <= exported | PROMETHEUS_SYNTHETIC, f"not exported: {sorted(names - exported)}"


def test_alerts_cover_lag_dlq_latency_and_worker_down() -> None:
    by_metric = {name for rule in RULES for name in promql_metric_names(rule["expr"])}

    assert {
        "bstream_consumer_lag",
        "bstream_dlq_total",
        "bstream_event_to_prediction_seconds_bucket",
        "up",
    } <= by_metric
    assert all(rule["labels"]["severity"] in {"warning", "critical"} for rule in RULES)


def test_alerts_match_the_prometheus_rules_schema() -> None:
    import jsonschema

    schema = load_json(DEPLOY / "schemas" / "prometheus-rules.schema.json")

    jsonschema.Draft202012Validator(schema).validate(load_yaml(ALERTS))


def test_prometheus_loads_the_alerts_and_scrapes_the_worker_job() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert config["rule_files"] == [ALERTS.name]
    assert (ALERTS.parent / config["rule_files"][0]).is_file()
    assert jobs["behavior-stream"]["dns_sd_configs"][0] == {
        "names": ["worker"],
        "type": "A",
        "port": 9464,
        "refresh_interval": "10s",
    }


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "behavior-stream.yml").read_text())[
        "providers"
    ]

    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
