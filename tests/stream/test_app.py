"""The Faust app factory: broker URLs, SASL/TLS pass-through, the pinned windows table."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from stream.kafka.app import (
    PartitionNotPinned,
    PinnedTable,
    broker_credentials,
    broker_urls,
    create_app,
    open_store,
)
from stream.kafka.store import WindowStore
from stream.settings import Settings
from stream.windows import Window, decode_window


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


def store(tmp_path: Path) -> WindowStore:
    settings = Settings(data_dir=tmp_path / "data", app_id="t-app")
    return open_store(WindowStore, create_app(settings, partitions=4).windows, settings, sink=None)


def window(partition: int) -> Window:
    return Window(partition, 0, ((1, 0, "i", None, None, "e"),))


def test_store_put_and_remove_change_the_table_and_return_changelog_records(
    tmp_path: Path,
) -> None:
    windows = store(tmp_path)

    written = windows.put(b"user-1", window(3))
    standby = windows.remove(b"user-1", owned={0, 1})
    tombstone = windows.remove(b"user-1", owned={3})
    missing = windows.remove(b"user-1", owned={3})

    assert windows.changelog_topic == "t-app-windows-changelog"
    assert (written.key, written.partition) == (b"user-1", 3)
    assert decode_window(written.value or b"") == window(3)
    assert standby is None  # another worker's partition: its owner removes it
    assert tombstone is not None and (tombstone.value, tombstone.partition) == (None, 3)
    assert missing is None and windows.get(b"user-1") is None


def test_records_of_keys_removed_since_they_were_put_are_dropped(tmp_path: Path) -> None:
    windows = store(tmp_path)
    since = windows.tick
    records = [windows.put(b"kept", window(0)), windows.put(b"erased", window(1))]

    windows.remove(b"erased", owned={1})  # an erasure while the records wait for predictions
    current = windows.still_current(records, since)
    put_after = windows.still_current(records, windows.tick)
    windows.forget_removals(since)
    later = windows.still_current(records, since)
    windows.forget_removals(windows.tick)  # no record put before the removal is pending any more

    assert [r.key for r in current] == [b"kept"] and [r.key for r in later] == [b"kept"]
    assert put_after == records
    assert windows.still_current(records, since) == records
