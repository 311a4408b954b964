"""Record keys (raw user ids by contract) become pseudonyms, e.g. for the DLQ."""

from __future__ import annotations

import hashlib
import hmac

from stream.privacy import Pseudonymizer

KEY = b"a-sufficiently-long-test-key"


def test_a_record_key_becomes_the_same_pseudonym_as_its_user_id() -> None:
    p = Pseudonymizer(KEY, "k1")

    assert p.record_key(b"42") == p("42").encode()
    assert p.record_key("üser".encode()) == p("üser").encode()


def test_non_utf8_keys_are_hashed_as_bytes_and_missing_keys_stay_missing() -> None:
    p = Pseudonymizer(KEY, "k1")

    assert (
        p.record_key(b"\xff\xfe") == hmac.new(KEY, b"\xff\xfe", hashlib.sha256).hexdigest().encode()
    )
    assert p.record_key(None) is None


def test_raw_mode_leaves_keys_unchanged() -> None:
    assert Pseudonymizer(None, None).record_key(b"42") == b"42"
