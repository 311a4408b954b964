"""The one worker launcher: readiness means *our* worker's /health, and deaths say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stream.kafka.broker import EmbeddedBroker
from stream.launcher import WorkerLauncher, WorkerStartError, last_error_line


class _Impostor(BaseHTTPRequestHandler):
    """Answers every GET with a ready /health that carries someone else's instance id."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"status": "ready", "instance_id": "someone-else"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """Another process's /health on a port; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _env(bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BSTREAM_")}
    return {**env, "HF_HUB_OFFLINE": "1", "BSTREAM_BOOTSTRAP": bootstrap}


def test_the_last_error_line_wins_over_later_noise() -> None:
    log = "starting\nError: cannot serve metrics on port 9464: Address already in use\nbye\n"

    assert last_error_line(log) == (
        "Error: cannot serve metrics on port 9464: Address already in use"
    )
    assert last_error_line("a\n\nb\n") == "b"
    assert last_error_line("") == "(empty log)"


def test_a_health_body_is_ours_only_with_our_instance_id(tmp_path: Path) -> None:
    launcher = WorkerLauncher([], {}, tmp_path / "w.log", port=1)

    assert launcher.is_ours(json.dumps({"instance_id": launcher.instance_id}))
    assert not launcher.is_ours(json.dumps({"status": "ready", "instance_id": "other"}))
    assert not launcher.is_ours(json.dumps({"status": "ready"}))
    assert not launcher.is_ours("OK")


@pytest.mark.integration
def test_another_health_on_the_port_is_never_taken_for_our_worker(
    broker: EmbeddedBroker, tiny_bundle: Path, impostor: int, tmp_path: Path
) -> None:
    args = ["--model", str(tiny_bundle), "--allow-raw-ids"]
    worker = WorkerLauncher(args, _env(broker.bootstrap), tmp_path / "w.log", port=impostor)

    with worker, pytest.raises(WorkerStartError) as failed:
        worker.wait_ready(timeout=120)

    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("worker exited with 1: Error: cannot serve metrics on port")
    assert "Address already in use" in message
    assert f"another process answers /health on port {impostor}" in message


def test_worker_argument_errors_come_before_heavy_imports(tiny_bundle: Path) -> None:
    """No broker, no key: the worker says so without importing faust or torch."""
    code = (
        "import sys; from stream.cli import main; sys.argv = ['bstream', 'worker', "
        f"'--model', {str(tiny_bundle)!r}, '--allow-raw-ids', '--bootstrap', '127.0.0.1:1']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    heavy = sorted(m for m in ('torch', 'faust', 'transformers') if m in sys.modules)\n"
        "    print(exc.code, heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env("127.0.0.1:1"),
    )

    assert done.stdout.strip() == "1 []", done.stdout + done.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in done.stderr


def test_a_busy_port_is_reported_by_the_demo_in_one_line(impostor: int, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from stream.cli import main; main()", "demo"]
        + ["--workdir", str(tmp_path), "--metrics-port", str(impostor)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env("127.0.0.1:1"),
    )

    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: Invalid value for --metrics-port: port {impostor} is not free")
