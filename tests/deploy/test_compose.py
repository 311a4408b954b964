"""docker-compose.yml: the Compose Specification schema, the real Compose loader, start-up order."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from typing import Any

import jsonschema
import pytest

from tests.deploy.manifests import COMPOSE_FILE, REPO, SCHEMAS, compose, load_json, with_defaults


@cache
def compose_cli() -> tuple[str, ...] | None:
    """A Docker Compose v2 command on this machine (`docker compose` or `docker-compose`), if any.

    Its `config` subcommand loads and checks a compose file without a Docker daemon.
    """
    candidates = [("docker", "compose"), ("docker-compose",)]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """`docker compose -f docker-compose.yml ARGS`, with none of the file's variables set."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI installed (the schema tests cover the file)")
    names = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def depends(service: str) -> dict[str, str]:
    """A service's depends_on as {dependency: condition}."""
    raw = compose()["services"][service].get("depends_on", {})
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def test_compose_file_matches_the_compose_specification_schema() -> None:
    schema = load_json(SCHEMAS / "compose-spec.json")

    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)

    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_schema_rejects_a_misspelled_healthcheck_key() -> None:
    schema = load_json(SCHEMAS / "compose-spec.json")
    broken: dict[str, Any] = {
        "services": {"worker": {"image": "x", "healthcheck": {"tset": ["CMD", "true"]}}}
    }

    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_docker_compose_config_accepts_the_file(profile: str | None) -> None:
    args = ["--profile", profile] if profile else []

    result = run_compose(*args, "config", "--quiet")

    assert result.returncode == 0, result.stderr


def test_only_the_gpu_profile_starts_the_gpu_worker() -> None:
    default = run_compose("config", "--services").stdout.split()
    with_gpu = run_compose("--profile", "gpu", "config", "--services").stdout.split()

    assert "worker" in default
    assert set(with_gpu) - set(default) == {"worker-gpu"}


def test_gpu_worker_builds_the_cuda_target_and_reserves_an_nvidia_gpu() -> None:
    gpu = compose()["services"]["worker-gpu"]

    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "cuda"
    assert gpu["environment"]["BSTREAM_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_services_start_in_order() -> None:
    assert depends("topic-init") == {"kafka": "service_healthy"}
    for worker in ("worker", "worker-gpu"):
        assert depends(worker) == {
            "kafka": "service_healthy",
            "topic-init": "service_completed_successfully",
            "model-init": "service_completed_successfully",
        }
    assert depends("producer") == {
        "topic-init": "service_completed_successfully",
        "worker": "service_healthy",
    }
    assert depends("tail") == {"topic-init": "service_completed_successfully"}
    assert depends("grafana") == {"prometheus": "service_healthy"}


def test_every_awaited_condition_can_be_met() -> None:
    services = compose()["services"]
    for name in services:
        for dependency, condition in depends(name).items():
            target = services[dependency]
            if condition == "service_healthy":
                check = target.get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits on {dependency}"
                )
            if condition == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dependency} must run once"


def test_one_shot_and_client_services_do_not_inherit_the_worker_healthcheck() -> None:
    # The image's HEALTHCHECK probes the worker's /health; other commands never serve it.
    services = compose()["services"]
    for name in ("topic-init", "model-init", "producer", "tail"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_topic_init_creates_the_topics_on_the_compose_kafka() -> None:
    command = compose()["services"]["topic-init"]["command"]

    assert command[:2] == ["topics", "create"]
    assert command[command.index("--bootstrap") + 1] == "kafka:9092"


def test_kafka_runs_kraft_single_node_from_the_official_image() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]

    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_worker_reads_the_hmac_key_from_a_compose_secret() -> None:
    data = compose()
    worker = data["services"]["worker"]
    default_path = with_defaults(data["secrets"]["bstream_hmac_key"]["file"])

    assert worker["secrets"] == ["bstream_hmac_key"]
    assert worker["environment"]["BSTREAM_HMAC_KEY_FILE"] == "/run/secrets/bstream_hmac_key"
    assert "BSTREAM_HMAC_KEY" not in worker["environment"]
    assert len((REPO / default_path).read_text().strip()) >= 16


def test_bind_mounted_paths_exist_in_the_repository() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = with_defaults(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
