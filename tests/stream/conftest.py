"""Fixtures for the stream tests: the 110k Taobao slice replayed through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.kafka.broker import free_port
from tests.conftest import TAOBAO_SLICE, need_shared

BSTREAM = str(Path(sys.executable).parent / "bstream")


@dataclass(frozen=True)
class Replayed:
    bootstrap: str
    topic: str
    summary: str  # the replay's stdout


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BSTREAM, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def taobao_replayed() -> Iterator[Replayed]:
    """`bstream broker`, `topics create` and `replay` of the 110k slice, as real processes."""
    data = need_shared(TAOBAO_SLICE)
    port = free_port()
    broker = subprocess.Popen(
        [BSTREAM, "broker", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert broker.stdout is not None
        assert "ready" in broker.stdout.readline()
        bootstrap = f"127.0.0.1:{port}"
        created = _run("topics", "create", "--bootstrap", bootstrap)
        assert created.returncode == 0, created.stderr
        replay = _run("replay", str(data), "--format", "taobao", "--bootstrap", bootstrap)
        assert replay.returncode == 0, replay.stderr
        yield Replayed(bootstrap, "behavior.events", replay.stdout)
    finally:
        broker.terminate()
        try:
            broker.wait(15)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
