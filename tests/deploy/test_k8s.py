"""deploy/k8s: Kubernetes schemas (offline), CRD spec schemas, and how the parts fit together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kubernetes_validate.utils import latest_version, validate

from tests.deploy.manifests import (
    ALERTS,
    K8S,
    SCHEMAS,
    k8s_documents,
    k8s_kind,
    load_json,
    load_yaml,
)

# The oldest Kubernetes minor still commonly run, and the newest the package knows.
K8S_VERSIONS = ("1.29", latest_version())
CORE_KINDS = {
    "Namespace",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "CronJob",
    "PersistentVolumeClaim",
}
CRD_SPEC_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-rules.schema.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json",
}
KUSTOMIZATION = ("kustomize.config.k8s.io/v1beta1", "Kustomization")
DEPLOYMENTS = ("bstream-worker", "bstream-worker-gpu")


def resource_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata'].get('name', '')}"


CORE = [item for item in k8s_documents() if item[1]["kind"] in CORE_KINDS]
CUSTOM = [
    item for item in k8s_documents() if (item[1]["apiVersion"], item[1]["kind"]) in CRD_SPEC_SCHEMAS
]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The worker container of a Deployment."""
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config_value(key: str) -> str:
    (config_map,) = k8s_kind("ConfigMap", "bstream-config")
    value: str = config_map["data"][key]
    return value


def test_every_manifest_is_a_checked_kind() -> None:
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in k8s_documents()}
    checked = (
        {(api, kind) for api, kind in kinds if kind in CORE_KINDS}
        | set(CRD_SPEC_SCHEMAS)
        | {KUSTOMIZATION}
    )

    assert kinds <= checked, f"no validation for {kinds - checked}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", CORE, ids=[resource_id(i) for i in CORE])
def test_core_resources_match_the_kubernetes_schema(
    item: tuple[Path, dict[str, Any]], version: str
) -> None:
    _, doc = item

    validate(doc, version, strict=True)  # strict: unknown fields (typos) fail too


def test_strict_schema_catches_a_misspelled_probe() -> None:
    (deployment,) = k8s_kind("Deployment", "bstream-worker")
    spec = container(deployment)
    spec["readinesProbe"] = spec.pop("readinessProbe")

    with pytest.raises(jsonschema.ValidationError):
        validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("item", CUSTOM, ids=[resource_id(i) for i in CUSTOM])
def test_custom_resources_match_their_spec_schema(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    schema = load_json(SCHEMAS / CRD_SPEC_SCHEMAS[(doc["apiVersion"], doc["kind"])])
    # Metadata is a standard ObjectMeta: check it with the real schema through a carrier kind.
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}

    validate(carrier, K8S_VERSIONS[-1], strict=True)
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    jsonschema.Draft202012Validator(schema).validate(doc["spec"])


def test_crd_schema_rejects_an_unquoted_kafka_lag_threshold() -> None:
    (scaled,) = k8s_kind("ScaledObject", "bstream-worker")
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5000  # KEDA wants strings
    schema = load_json(SCHEMAS / "keda-scaledobject.schema.json")

    assert not jsonschema.Draft202012Validator(schema).is_valid(scaled["spec"])


@pytest.mark.parametrize(
    "path", sorted(K8S.rglob("kustomization.yaml")), ids=lambda p: str(p.relative_to(K8S))
)
def test_kustomizations_list_files_that_exist(path: Path) -> None:
    kustomization = load_yaml(path)

    assert (kustomization["apiVersion"], kustomization["kind"]) == KUSTOMIZATION
    for entry in kustomization["resources"]:
        target = path.parent / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), entry


def test_all_resources_share_one_namespace() -> None:
    namespaces = {
        doc["metadata"].get("namespace", doc["metadata"]["name"])
        for _, doc in k8s_documents()
        if doc["kind"] != "Kustomization"
    }
    kustomized = {load_yaml(p)["namespace"] for p in K8S.rglob("kustomization.yaml")}

    assert namespaces == kustomized == {"behavior-stream"}


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_worker_probes_resources_and_secrets(name: str) -> None:
    (deployment,) = k8s_kind("Deployment", name)
    worker = container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e for e in worker["env"]}

    assert worker["ports"] == [
        {
            "name": "metrics",
            "containerPort": int(config_value("BSTREAM_METRICS_PORT")),
            "protocol": "TCP",
        }
    ]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert (
        {"cpu", "memory"}
        <= set(worker["resources"]["requests"])
        <= set(worker["resources"]["limits"])
    )
    assert env["BSTREAM_HMAC_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "bstream-hmac",
        "key": "hmac-key",
    }
    assert env["BSTREAM_HMAC_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "bstream-hmac"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_gpu_worker_requests_a_gpu_on_gpu_nodes() -> None:
    (deployment,) = k8s_kind("Deployment", "bstream-worker-gpu")
    worker = container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in worker["env"]}

    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"]
    assert env["BSTREAM_DEVICE"] == "cuda"
    assert worker["image"].endswith(":cuda")


def test_secret_example_has_the_keys_the_deployments_read() -> None:
    wanted = {
        (ref["name"], ref["key"])
        for name in DEPLOYMENTS
        for e in container(k8s_kind("Deployment", name)[0])["env"]
        if (ref := e.get("valueFrom", {}).get("secretKeyRef"))
    }
    provided = {(s["metadata"]["name"], key) for s in k8s_kind("Secret") for key in s["stringData"]}

    assert wanted <= provided


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_scaled_object_scales_its_deployment_up_to_the_partition_count(name: str) -> None:
    (scaled,) = k8s_kind("ScaledObject", name)
    spec = scaled["spec"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]

    assert spec["scaleTargetRef"]["name"] == name
    assert k8s_kind("Deployment", name)
    assert (
        1
        <= spec["minReplicaCount"]
        <= spec["maxReplicaCount"]
        <= int(config_value("BSTREAM_PARTITIONS"))
    )
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == config_value("BSTREAM_APP_ID")
    assert meta["topic"] == config_value("BSTREAM_EVENTS_TOPIC")
    assert meta["bootstrapServers"] == config_value("BSTREAM_BOOTSTRAP")


def test_metrics_service_and_monitor_select_the_worker_pods() -> None:
    (service,) = k8s_kind("Service", "behavior-stream")
    (monitor,) = k8s_kind("ServiceMonitor", "behavior-stream")
    port_names = {p["name"] for p in service["spec"]["ports"]}

    for name in DEPLOYMENTS:
        pod_labels = k8s_kind("Deployment", name)[0]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    # The Operator names the scrape job after the Service; the alerts match job="behavior-stream".
    assert service["metadata"]["name"] == "behavior-stream"


def test_prometheus_rule_carries_the_plain_rule_file() -> None:
    (rule,) = k8s_kind("PrometheusRule", "behavior-stream")

    assert rule["spec"] == load_yaml(ALERTS)


def test_retrain_cronjob_writes_where_the_workers_read_announced_bundles() -> None:
    (cronjob,) = k8s_kind("CronJob", "bstream-retrain")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (job,) = pod["containers"]
    args = job["args"]
    out_root = args[args.index("--out-root") + 1]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }

    assert args[0] == "retrain" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert {"configMapRef": {"name": "bstream-config"}} in job["envFrom"]
    assert config_value("BSTREAM_REGISTRY") == "true"
    assert config_value("BSTREAM_MODELS_TOPIC") == "behavior.models"
    assert k8s_kind("PersistentVolumeClaim", "bstream-models")
    for name in DEPLOYMENTS:
        worker = container(k8s_kind("Deployment", name)[0])
        volumes = k8s_kind("Deployment", name)[0]["spec"]["template"]["spec"]["volumes"]
        mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
        assert mounts[out_root]["readOnly"] is True
        assert {"configMapRef": {"name": "bstream-config"}} in worker["envFrom"]
        worker_claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in volumes
            if "persistentVolumeClaim" in v
        }
        assert worker_claims[mounts[out_root]["name"]] == "bstream-models"
    (mount,) = [m for m in job["volumeMounts"] if m["mountPath"] == out_root]
    assert claims[mount["name"]] == "bstream-models"
