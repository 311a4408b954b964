"""Loading the deploy/ files, and pure helpers shared by the deploy tests (PromQL, exposition)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "behavior-stream.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# Series that Prometheus itself adds to every scrape target.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml with anchors and merge keys resolved."""
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def with_defaults(value: str) -> str:
    """Compose interpolation with no variables set: `${VAR:-default}` becomes its default.

    >>> with_defaults("${MODELS_DIR:-models}:/models:ro")
    'models:/models:ro'
    """
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """(file, resource) for every manifest under deploy/k8s, kustomizations included."""
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path, doc))
    return found


def k8s_kind(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Every manifest of one kind (and name, when given)."""
    return [
        doc
        for _, doc in k8s_documents()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def load_json(path: Path) -> Any:
    """One JSON file."""
    return json.loads(path.read_text())


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's template variables so the query parses as plain PromQL.

    >>> grafana_to_promql('rate(x{instance=~"$instance"}[$__rate_interval])')
    'rate(x{instance=~".*"}[5m])'
    """
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names that a PromQL expression selects.

    Raises ValueError when the expression does not parse, or selects names by regex (uncheckable).

    >>> sorted(promql_metric_names('sum(rate(a_total[5m])) / on() (b + {__name__="c"})'))
    ['a_total', 'b', 'c']
    """
    names: set[str] = set()

    def visit(node: Any) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        if node.name:
            names.add(node.name)
        for matcher in node.matchers.matchers:
            if matcher.name != "__name__":
                continue
            if matcher.op != promql_parser.MatchOp.Equal:
                raise ValueError(f"metric name matched by {matcher.op}: {expr}")
            names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exposition_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition can produce, even of families without samples.

    A labelled family with no children still declares its TYPE, so its series names follow from the
    type: counters end in _total, histograms in _bucket/_sum/_count.
    """
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel, rows included."""
    for panel in dashboard["panels"]:
        for child in [panel, *panel.get("panels", [])]:
            for target in child.get("targets", []):
                yield child["title"], target["expr"]


def alert_rules(groups_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule of a rule-file document ({"groups": [...]})."""
    return [rule for group in groups_doc["groups"] for rule in group["rules"]]
