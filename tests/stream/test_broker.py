"""The embedded broker: library context manager and `bstream broker`, with no orphaned processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka.admin import AdminClient

from stream.kafka.broker import BrokerError, EmbeddedBroker, free_port

BSTREAM = Path(sys.executable).parent / "bstream"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _gone(pid: int, timeout: float = 10.0) -> bool:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


def test_context_manager_serves_metadata_then_stops() -> None:
    with EmbeddedBroker() as running:
        pid = running.process.pid if running.process else -1
        metadata = AdminClient({"bootstrap.servers": running.bootstrap}).list_topics(timeout=5)
        assert metadata.brokers

    assert _gone(pid)
    assert not _port_open(running.port)


def test_broker_stops_when_the_body_raises() -> None:
    running = EmbeddedBroker()
    with pytest.raises(RuntimeError, match="boom"), running:
        pid = running.process.pid if running.process else -1
        raise RuntimeError("boom")

    assert _gone(pid)
    running.stop()  # a second stop is harmless


def test_port_in_use_is_a_clear_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(port=broker.port).start()


@pytest.fixture
def cli_broker() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`bstream broker` as a real child process, waited for until it says ready."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BSTREAM), "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready" in line and f"127.0.0.1:{port}" in line, line
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _tansu_child(proc: subprocess.Popen[str]) -> psutil.Process:
    [child] = psutil.Process(proc.pid).children()
    return child


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_broker_stops_cleanly_on_signal(
    cli_broker: tuple[subprocess.Popen[str], int], signum: int
) -> None:
    proc, port = cli_broker
    child = _tansu_child(proc)
    assert AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=5).brokers

    proc.send_signal(signum)
    code = proc.wait(15)

    assert code == 0
    assert _gone(child.pid)
    assert not _port_open(port)


def test_killed_cli_leaves_no_orphan_broker(cli_broker: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = cli_broker
    child = _tansu_child(proc)

    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: the kernel must stop the child
    proc.wait(10)

    assert _gone(child.pid)
    deadline = time.monotonic() + 5
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _port_open(port)


def test_cli_broker_on_a_busy_port_fails_with_one_line(broker: EmbeddedBroker) -> None:
    result = subprocess.run(
        [str(BSTREAM), "broker", "--port", str(broker.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: port {broker.port} on 127.0.0.1 is already in use"
    ]
