"""`bstream demo` end to end: its own broker, bundle, key and worker; every user predicted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
