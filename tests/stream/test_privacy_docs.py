"""docs/privacy.md's recipes (Python and openssl) give the worker's pseudonym."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from pathlib import Path

import pytest

from stream.privacy import load_key, pseudonymizer_from_settings
from stream.settings import Settings
from tests.conftest import REPO

DOC = REPO / "docs" / "privacy.md"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "hmac.key"
    path.write_text("3f6c0a9d1e2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5\n")
    return path


def test_documented_python_formula_matches_the_worker(key_file: Path) -> None:
    worker = pseudonymizer_from_settings(Settings(hmac_key_file=key_file))
    key, user_id = key_file.read_bytes().strip(), "543462"

    documented = hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    assert documented == worker(user_id)
    assert 'hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()' in DOC.read_text()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_documented_openssl_one_liner_matches_the_worker(key_file: Path) -> None:
    line = next(
        ln for ln in DOC.read_text().splitlines() if ln.startswith("printf '%s' \"543462\"")
    )
    command = line.replace("/run/secrets/bstream-hmac.key", str(key_file))

    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)

    key = load_key(Settings(hmac_key_file=key_file))
    assert key is not None
    assert out.stdout.strip() == hmac.new(key, b"543462", hashlib.sha256).hexdigest()
