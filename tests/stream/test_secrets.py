"""Secrets (SASL password, HMAC key) never show in the worker's startup line or printed settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream.commands.worker import startup_line
from stream.settings import Settings

HMAC_KEY = "hmac-key-that-must-stay-hidden-42"
PASSWORD = "sasl-password-that-must-stay-hidden"


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Any:
    from model.runtime import Runtime

    return Runtime.load(tiny_bundle, device="cpu")


@pytest.fixture
def settings() -> Settings:
    return Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
        hmac_key=HMAC_KEY,  # type: ignore[arg-type]
        explain="top-scores",
    )


def test_startup_line_names_the_setup_but_no_secret(settings: Settings, runtime: Any) -> None:
    line = startup_line(settings, runtime, partitions=4, key_id="k7", port=9464)

    assert "pseudonyms key_id=k7" in line and "explain=top-scores" in line
    assert runtime.version in line
    assert HMAC_KEY not in line and PASSWORD not in line


def test_raw_id_mode_is_spelled_out(runtime: Any) -> None:
    line = startup_line(Settings(allow_raw_ids=True), runtime, partitions=1, key_id=None, port=1)

    assert "RAW user ids (--allow-raw-ids)" in line


def test_printed_settings_mask_every_secret(settings: Settings) -> None:
    printed = [json.dumps(settings.redacted()), repr(settings), str(settings)]

    for text in printed:
        assert HMAC_KEY not in text and PASSWORD not in text
    assert settings.redacted()["sasl_password"] == "**********"
    assert settings.redacted()["hmac_key"] == "**********"
    assert settings.kafka_client_config()["sasl.password"] == PASSWORD  # still reaches the client
