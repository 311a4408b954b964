"""Ingress privacy: HMAC-SHA256 pseudonyms for user ids, key loading, and PII-field classification.

Pseudonym formula (any downstream service can compute it for its own ids):

    pseudonym = lowercase_hex( HMAC-SHA256( key_bytes, user_id.encode("utf-8") ) )

`key_bytes` is `BSTREAM_HMAC_KEY` as UTF-8, or the content of `BSTREAM_HMAC_KEY_FILE` with
surrounding whitespace stripped. Predictions carry `key_id` (`BSTREAM_HMAC_KEY_ID`) so consumers
know which key made the pseudonym when keys rotate. In Python:

>>> import hmac, hashlib
>>> hmac.new(b"secret-key-0123456789", "42".encode(), hashlib.sha256).hexdigest()[:16]
'9fd825ad6827d549'
>>> Pseudonymizer(b"secret-key-0123456789", "k1")("42")[:16]
'9fd825ad6827d549'
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from stream.settings import Settings

MIN_KEY_BYTES = 16
PII_KINDS: tuple[str, ...] = ("email", "phone", "ip", "name", "address", "other")

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_RE = re.compile(r"^\+?[\d\s().-]{7,20}$")
# Field-name hints, checked in this order ("ip_address" is an ip, not an address).
_NAME_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("email", ("email", "e_mail", "mail")),
    ("ip", ("ip", "ipv4", "ipv6", "ip_addr", "ip_address", "remote_addr", "client_ip")),
    ("phone", ("phone", "mobile", "tel", "telephone", "msisdn", "cell")),
    ("address", ("address", "addr", "street", "city", "zip", "zipcode", "postcode", "postal")),
    ("name", ("name", "first_name", "last_name", "full_name", "firstname", "lastname", "surname")),
)


class PrivacyError(ValueError):
    """The pseudonymisation key is missing, unreadable or too short."""


def _name_tokens(field_name: str) -> set[str]:
    lowered = re.sub(
        r"([a-z0-9])([A-Z])", r"\1_\2", field_name
    ).lower()  # phoneNumber -> phone_number
    return {lowered, *re.split(r"[^a-z0-9]+", lowered)}


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def classify_field(name: str, value: Any) -> str:
    """PII kind of a dropped field, by name then value: email|phone|ip|name|address|other."""
    tokens = _name_tokens(name)
    for kind, hints in _NAME_HINTS:
        if tokens.intersection(hints):
            return kind
    if isinstance(value, str):
        text = value.strip()
        if _EMAIL_RE.match(text):
            return "email"
        if _is_ip(text):
            return "ip"
        if _PHONE_RE.match(text) and sum(c.isdigit() for c in text) >= 7:
            return "phone"
    return "other"


def load_key(settings: Settings) -> bytes | None:
    """The HMAC key bytes from settings (inline key wins over key file); None when none is set."""
    if settings.hmac_key is not None:
        key = settings.hmac_key.get_secret_value().encode()
    elif settings.hmac_key_file is not None:
        try:
            key = settings.hmac_key_file.read_bytes().strip()
        except OSError as exc:
            raise PrivacyError(
                f"cannot read HMAC key file {settings.hmac_key_file}: {exc.strerror}"
            ) from exc
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise PrivacyError(f"HMAC key is too short: need at least {MIN_KEY_BYTES} bytes")
    return key


def generate_key_file(path: Path) -> Path:
    """Write a new random key (64 hex chars) readable only by the owner; keep an existing one."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path


def pseudonym(key: bytes, user_id: str) -> str:
    """HMAC-SHA256(key, user_id UTF-8) as lowercase hex."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


class Pseudonymizer:
    """Maps raw user ids to user keys: HMAC pseudonyms, or raw ids without a key (opt-in)."""

    def __init__(self, key: bytes | None, key_id: str | None) -> None:
        self.key_id = key_id if key is not None else None
        self._key = key
        self._map = lru_cache(maxsize=65536)(
            (lambda uid: pseudonym(key, uid)) if key is not None else (lambda uid: uid)
        )

    def record_key(self, raw: bytes | None) -> bytes | None:
        """A Kafka record key (a raw user id by contract) as its pseudonym; raw mode: unchanged.

        Works on bytes, so a key that is not UTF-8 still gets HMAC-SHA256 over its exact bytes.
        """
        if raw is None or self._key is None:
            return raw
        return hmac.new(self._key, raw, hashlib.sha256).hexdigest().encode()

    @property
    def raw(self) -> bool:
        """True when user ids pass through unchanged (--allow-raw-ids)."""
        return self.key_id is None

    def __call__(self, user_id: str) -> str:
        return self._map(user_id)  # type: ignore[no-any-return]


def pseudonymizer_from_settings(settings: Settings) -> Pseudonymizer:
    """Build the pseudonymizer, refusing raw ids unless `allow_raw_ids` is set explicitly."""
    key = load_key(settings)
    if key is None and not settings.allow_raw_ids:
        raise PrivacyError(
            "no HMAC key: set BSTREAM_HMAC_KEY or BSTREAM_HMAC_KEY_FILE (or pass --allow-raw-ids)"
        )
    return Pseudonymizer(key, settings.hmac_key_id)
