"""Every BSTREAM_* variable that deploy/ and docker-compose.yml set or mention is a real setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream.settings import Settings
from tests.deploy.manifests import COMPOSE_FILE, DEPLOY, REPO

# Config, docs and scripts only: deploy/bundle and deploy/replay may hold large user data files.
FILES = [
    COMPOSE_FILE,
    DEPLOY / "Dockerfile",
    *sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml", ".md", ".py", ".json"}),
]
FIELDS = {f"BSTREAM_{name.upper()}" for name in Settings.model_fields}
# Operator-level settings the deploy files must pass through.
REQUIRED = {
    "BSTREAM_BOOTSTRAP",
    "BSTREAM_MODEL",
    "BSTREAM_DEVICE",
    "BSTREAM_METRICS_PORT",
    "BSTREAM_HMAC_KEY",
    "BSTREAM_HMAC_KEY_ID",
    "BSTREAM_MAX_BATCH",
    "BSTREAM_MAX_DELAY_MS",
    "BSTREAM_STORE",
    "BSTREAM_SASL_USERNAME",
    "BSTREAM_SASL_PASSWORD",
    "BSTREAM_SECURITY_PROTOCOL",
}


def variables(path: Path) -> set[str]:
    return set(re.findall(r"\bBSTREAM_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_only_real_settings_are_used(path: Path) -> None:
    unknown = variables(path) - FIELDS

    assert not unknown, f"not in stream/settings.py: {sorted(unknown)}"


def test_the_main_settings_are_all_wired_somewhere() -> None:
    used = set().union(*(variables(p) for p in FILES))

    assert used >= REQUIRED, f"never set or documented: {sorted(REQUIRED - used)}"
