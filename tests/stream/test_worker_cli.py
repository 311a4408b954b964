"""`bstream worker` refuses bad setups with one line and a non-zero exit, before touching Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from stream.cli import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "BSTREAM_HMAC_KEY",
        "BSTREAM_HMAC_KEY_FILE",
        "BSTREAM_MODEL",
        "BSTREAM_ALLOW_RAW_IDS",
    ):
        monkeypatch.delenv(name, raising=False)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["worker", *args])
    return result.exit_code, result.output


def test_no_pseudonymisation_key_is_refused_unless_raw_ids_are_allowed() -> None:
    code, out = run("--model", "anything")

    assert code == 1
    assert len(out.strip().splitlines()) == 1
    assert out.startswith("Error: no HMAC key") and "--allow-raw-ids" in out


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("short")

    code, out = run("--model", "anything", "--hmac-key-file", str(key))

    assert code == 1 and "too short" in out and "short\n" not in out.split(":", 1)[1]


def test_a_missing_model_option_is_a_one_line_error() -> None:
    code, out = run("--allow-raw-ids")

    assert code == 2 and len(out.strip().splitlines()) == 1
    assert out.startswith("Error: no model bundle: pass --model DIR or set BSTREAM_MODEL")


def test_a_missing_bundle_is_a_one_line_error(tmp_path: Path) -> None:
    code, out = run("--allow-raw-ids", "--model", str(tmp_path / "nope"))

    assert code == 2
    assert len(out.strip().splitlines()) == 1 and out.startswith("Error: Invalid value for --model")


def test_bad_option_values_are_usage_errors() -> None:
    code, out = run("--max-batch", "0")

    assert code == 2 and "--max-batch" in out
