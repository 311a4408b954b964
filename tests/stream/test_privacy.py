"""Pseudonyms (documented formula), key loading, raw-id opt-in, PII field classification."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from stream.privacy import (
    PrivacyError,
    Pseudonymizer,
    classify_field,
    generate_key_file,
    load_key,
    pseudonym,
    pseudonymizer_from_settings,
)
from stream.settings import Settings

KEY = "a-sufficiently-long-test-key"


def test_pseudonym_is_hmac_sha256_hex_of_the_utf8_id() -> None:
    expected = hmac.new(KEY.encode(), "üser-1".encode(), hashlib.sha256).hexdigest()

    assert pseudonym(KEY.encode(), "üser-1") == expected
    assert Pseudonymizer(KEY.encode(), "k9")("üser-1") == expected


def test_key_comes_from_settings_or_a_stripped_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")

    assert load_key(Settings(hmac_key=KEY)) == KEY.encode()
    assert load_key(Settings(hmac_key_file=key_file)) == KEY.encode()
    assert load_key(Settings()) is None


def test_bad_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PrivacyError, match="too short"):
        load_key(Settings(hmac_key="short"))
    with pytest.raises(PrivacyError, match="cannot read"):
        load_key(Settings(hmac_key_file=tmp_path / "missing"))


def test_without_a_key_raw_ids_need_explicit_opt_in() -> None:
    with pytest.raises(PrivacyError, match="allow-raw-ids"):
        pseudonymizer_from_settings(Settings())

    raw = pseudonymizer_from_settings(Settings(allow_raw_ids=True))

    assert raw.raw and raw.key_id is None and raw("u1") == "u1"


def test_key_id_travels_with_the_pseudonymizer() -> None:
    p = pseudonymizer_from_settings(Settings(hmac_key=KEY, hmac_key_id="2026-11"))

    assert (p.raw, p.key_id) == (False, "2026-11")


def test_generated_key_file_is_private_and_kept(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "keys" / "hmac.key")
    first = path.read_text()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.strip()) == 64
    assert generate_key_file(path).read_text() == first


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("email", "x", "email"),
        ("contact", "jo@example.com", "email"),
        ("ip_address", "x", "ip"),
        ("origin", "10.0.0.1", "ip"),
        ("phoneNumber", "x", "phone"),
        ("mobile", "x", "phone"),
        ("note", "+44 20 7946 0958", "phone"),
        ("last_name", "Doe", "name"),
        ("street", "1 Main St", "address"),
        ("zip", "12345", "address"),
        ("colour", "blue", "other"),
        ("count", 3, "other"),
    ],
)
def test_dropped_fields_are_classified_by_name_then_value(
    name: str, value: object, kind: str
) -> None:
    assert classify_field(name, value) == kind
