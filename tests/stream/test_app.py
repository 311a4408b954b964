"""The Faust app factory: broker URLs, SASL/TLS pass-through, the pinned windows table."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from stream.app import PartitionNotPinned, PinnedTable, broker_credentials, broker_urls, create_app
from stream.settings import Settings


def test_bootstrap_lists_become_faust_broker_urls() -> None:
    assert broker_urls("a:9092, b:9093") == ["kafka://a:9092", "kafka://b:9093"]


def test_plaintext_needs_no_credentials() -> None:
    assert broker_credentials(Settings()) is None


def test_sasl_over_tls_passes_user_password_mechanism_and_tls() -> None:
    settings = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret-password",
    )

    creds = broker_credentials(settings)

    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("svc", "s3cret-password")
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.ssl_context is not None
    assert "s3cret" not in repr(creds) and "s3cret" not in str(settings.redacted())


def test_tls_only_gives_ssl_credentials() -> None:
    assert isinstance(broker_credentials(Settings(security_protocol="SSL")), faust.SSLCredentials)


def test_app_has_a_bytes_keyed_table_pinned_to_event_partitions(tmp_path: Path) -> None:
    sapp = create_app(Settings(data_dir=tmp_path / "data", app_id="t-app"), partitions=6)

    assert isinstance(sapp.windows, PinnedTable)
    assert (sapp.partitions, sapp.windows.partitions) == (6, 6)
    assert sapp.windows.key_serializer == "raw" and sapp.windows.use_partitioner
    assert sapp.events.get_topic_name() == "behavior.events"
    sapp.windows.pin(b"k", 5)
    assert sapp.windows.partition_for_key(b"k") == 5
    with pytest.raises(PartitionNotPinned):
        sapp.windows.partition_for_key(b"k")  # a pin is used once


def test_table_put_and_remove_change_the_store_and_return_changelog_records(
    tmp_path: Path,
) -> None:
    table = create_app(Settings(data_dir=tmp_path / "data", app_id="t-app"), partitions=4).windows

    written = table.put(b"user-1", b"window", 3)
    tombstone = table.remove(b"user-1", 3)
    missing = table.remove(b"user-1", 3)

    assert (written.key, written.value, written.partition) == (b"user-1", b"window", 3)
    assert tombstone is not None and (tombstone.value, tombstone.partition) == (None, 3)
    assert missing is None and table.data.get(b"user-1") is None


def test_records_of_keys_removed_since_they_were_put_are_dropped(tmp_path: Path) -> None:
    table = create_app(Settings(data_dir=tmp_path / "data", app_id="t-app"), partitions=4).windows
    since = table.tick
    records = [table.put(b"kept", b"w1", 0), table.put(b"erased", b"w2", 1)]

    table.remove(b"erased", 1)  # an erasure while the records wait for their predictions
    current = table.still_current(records, since)
    put_after = table.still_current(records, table.tick)
    table.forget_removals(since)
    later = table.still_current(records, since)
    table.forget_removals(table.tick)  # no record put before the removal is pending any more

    assert [r.key for r in current] == [b"kept"] and [r.key for r in later] == [b"kept"]
    assert put_after == records
    assert table.still_current(records, since) == records
