"""`bstream demo` end to end: its own broker, bundle, key and worker; every user predicted."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream.commands.demo import DEMO_MARKER, DEMO_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_predicts_every_user_and_exits_cleanly(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "from stream.cli import main; main()", "demo"]
    cmd += ["--users", "30", "--rate", "5000", "--workdir", str(tmp_path), "--timeout", "400"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BSTREAM_")}

    done = subprocess.run(
        cmd, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "users predicted    30 / 30" in done.stdout
    assert (tmp_path / "hmac.key").is_file()
    assert (tmp_path / "bundles" / "demo" / "bundle.json").is_file()


def _hold(port: int) -> socket.socket | None:
    """Listen on `port` like another program would (None if someone already does)."""
    sock = socket.socket()
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


@pytest.mark.timeout(1800)  # scores the demo data's val windows once, beyond the demo itself
def test_demo_runs_while_other_programs_hold_the_default_ports(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    """9464 and 9092 taken (the first fresh-clone failure): the demo picks free ports."""
    bundle = tmp_path / "bundles" / "demo"
    shutil.copytree(tiny_bundle, bundle)  # a real bundle, so the test trains nothing
    (bundle / DEMO_MARKER).write_text(DEMO_VERSION)
    held = [sock for sock in (_hold(9464), _hold(9092)) if sock is not None]
    cmd = [sys.executable, "-c", "from stream.cli import main; main()", "demo"]
    cmd += ["--users", "10", "--rate", "5000", "--workdir", str(tmp_path), "--timeout", "1500"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BSTREAM_")}
    try:
        done = subprocess.run(
            cmd, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1700
        )
    finally:
        for sock in held:
            sock.close()

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "users predicted    10 / 10" in done.stdout
    assert "demo model           val AUC" in done.stdout
    assert "logistic regression  val AUC" in done.stdout
