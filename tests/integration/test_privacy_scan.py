"""Privacy acceptance: replay real Taobao events with a key; no raw user id, PII value or secret
appears on any topic the worker writes, in its log or in /metrics; pseudonyms match the formula.

Scans are exact: record keys and JSON string values are compared whole, and free text (log,
metrics) is searched for whole tokens, because numeric ids also occur inside other numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from schemas.formats import read_rows
from stream.kafka.broker import EmbeddedBroker
from tests.conftest import TAOBAO_SLICE, need_shared
from tests.integration.worker_support import (
    TEST_KEY,
    Msg,
    WorkerProcess,
    collect,
    new_env,
    produce,
)

pytestmark = pytest.mark.integration
N_EVENTS = 3000
N_PII = 40
SASL_PASSWORD = "sasl-pw-must-never-show-7f3a9c"
LOG_PREFIX = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[\d+\] ", re.MULTILINE)
# Bytes that are not an event and carry no id: the DLQ keeps a bad record's bytes unchanged.
INVALID_VALUES = [b"\xff\xfe\x00 not utf-8", b"{not json", b'["a list"]', b'{"event_type": "view"}']


def pii(i: int) -> dict[str, str]:
    """Distinctive PII-looking extras (none is an allow-listed field)."""
    return {
        "email": f"jane.doe.{i}@example.com",
        "phone": f"+1 555 01{i:02d} 9876",
        "ip": f"203.0.113.{i}",
        "name": f"Jane Quincy Public {i}",
        "address": f"{i} Privacy Lane, Springfield",
    }


def documented_pseudonym(user_id: str) -> str:
    """docs/privacy.md: lowercase hex HMAC-SHA256 of the UTF-8 id under the key."""
    return hmac.new(TEST_KEY.encode(), user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def strings(value: Any) -> Iterator[str]:
    """Every JSON string (object keys included) inside a decoded value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings(inner)


def window_strings(value: bytes) -> Iterator[str]:
    """Strings of a window record, except each entry's item and category (their own ids)."""
    partition, seen_ms, entries = orjson.loads(value)
    for ts, kind, _item, _category, price, eid in entries:
        yield from strings([partition, seen_ms, ts, kind, price, eid])


def settled() -> Callable[[list[Msg]], bool]:
    """Condition for `collect`: no new record for three polls in a row (a stopped writer)."""
    seen: list[int] = []

    def done(got: list[Msg]) -> bool:
        seen.append(len(got))
        return len(seen) >= 4 and len(set(seen[-4:])) == 1

    return done


def token_hits(text: str, needles: set[str]) -> set[str]:
    """Needles found in free text as whole tokens (not inside a longer number or word)."""
    tokens = set(re.findall(r"(?<![\w.:,\-/@])[\w]+(?![\w.:\-/@])", text))
    return tokens & needles


@pytest.fixture(scope="module")
def scanned(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One worker run over real events, PII extras and bad records; everything it produced."""
    rows = itertools.islice(read_rows(need_shared(TAOBAO_SLICE), "taobao"), N_EVENTS)
    events = [row.event for row in rows if row.event is not None]
    with_pii = [{**e, **pii(i)} if i < N_PII else e for i, e in enumerate(events)]
    invalid = [(events[i]["user_id"].encode(), v) for i, v in enumerate(INVALID_VALUES)]
    wenv = new_env(broker.bootstrap)
    settings = wenv.settings
    newest: dict[str, int] = {}
    for event in events:
        user = documented_pseudonym(event["user_id"])
        newest[user] = max(newest.get(user, 0), event["ts"])
    mp = pytest.MonkeyPatch()
    mp.setenv("BSTREAM_SASL_USERNAME", "svc-user")
    mp.setenv("BSTREAM_SASL_PASSWORD", SASL_PASSWORD)  # PLAINTEXT here: set, unused, never shown
    try:
        with WorkerProcess(wenv, tiny_bundle, tmp_path_factory.mktemp("privacy")) as worker:
            worker.wait_ready()
            produce(
                broker.bootstrap,
                settings.events_topic,
                [(e["user_id"].encode(), orjson.dumps(e)) for e in with_pii] + invalid,
            )

            def all_predicted(got: list[Msg]) -> bool:
                latest = {orjson.loads(m.value or b"")["user"]: m for m in got}
                return all(
                    u in latest and orjson.loads(latest[u].value or b"")["last_event_ts"] == ts
                    for u, ts in newest.items()
                )

            predictions = collect(broker.bootstrap, settings.predictions_topic, all_predicted)
            dlq = collect(broker.bootstrap, settings.dlq_topic, lambda g: len(g) >= len(invalid))
            metrics = worker.metrics_text()
            worker.stop()
            log = worker.log()
    finally:
        mp.undo()
    topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    internal = sorted(t for t in topics if t.startswith(settings.app_id + "-"))
    changelogs = {t: collect(broker.bootstrap, t, settled(), timeout=30) for t in internal}
    yield {
        "events": events,
        "raw_ids": {e["user_id"] for e in events} | {k.decode() for k, _ in invalid},
        "invalid": invalid,
        "predictions": predictions,
        "dlq": dlq,
        "changelogs": changelogs,
        "window_topic": wenv.changelog_topic,
        "log": log,
        "metrics": metrics,
    }


def test_predictions_carry_only_pseudonyms_that_match_the_documented_formula(
    scanned: dict[str, Any],
) -> None:
    raw_ids, predictions = scanned["raw_ids"], scanned["predictions"]
    decoded = [orjson.loads(m.value) for m in predictions]
    expected = {documented_pseudonym(e["user_id"]) for e in scanned["events"]}

    assert {m.key for m in predictions} & {r.encode() for r in raw_ids} == set()
    assert {s for p in decoded for s in strings(p)} & raw_ids == set()
    assert {p["user"] for p in decoded} == expected
    assert all(m.key == p["user"].encode() for m, p in zip(predictions, decoded, strict=True))
    assert {p["key_id"] for p in decoded} == {"k1"}


def test_changelog_topics_hold_no_raw_id(scanned: dict[str, Any]) -> None:
    raw_ids, changelogs = scanned["raw_ids"], scanned["changelogs"]
    windows = changelogs[scanned["window_topic"]]
    sent_items = {e["item_id"] for e in scanned["events"]}
    sent_categories = {e.get("category") for e in scanned["events"]}

    assert windows, "the windows changelog was not found"
    for records in changelogs.values():
        assert {m.key for m in records} & {r.encode() for r in raw_ids} == set()
    assert {s for m in windows if m.value for s in window_strings(m.value)} & raw_ids == set()
    entries = [e for m in windows if m.value for e in orjson.loads(m.value)[2]]
    assert {e[2] for e in entries} <= sent_items and {e[3] for e in entries} <= sent_categories
    others = [m for t, ms in changelogs.items() if t != scanned["window_topic"] for m in ms]
    assert [
        m for m in others if token_hits((m.value or b"").decode(errors="replace"), raw_ids)
    ] == []


def test_dlq_keys_are_pseudonymised_and_values_kept(scanned: dict[str, Any]) -> None:
    raw_ids, dlq, invalid = scanned["raw_ids"], scanned["dlq"], scanned["invalid"]
    header_text = " ".join(v for m in dlq for v in m.headers.values())

    assert sorted((m.key, m.value) for m in dlq) == sorted(
        (documented_pseudonym(k.decode()).encode(), v) for k, v in invalid
    )
    assert token_hits(header_text, raw_ids) == set()
    assert [m for m in dlq if token_hits((m.value or b"").decode(errors="replace"), raw_ids)] == []


def test_log_and_metrics_hold_no_raw_id_pii_or_secret(scanned: dict[str, Any]) -> None:
    raw_ids, log, metrics = scanned["raw_ids"], scanned["log"], scanned["metrics"]
    series = "\n".join(line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line)
    secrets = [TEST_KEY, SASL_PASSWORD]

    assert "pseudonyms key_id=k1" in log  # the startup line was captured
    assert token_hits(LOG_PREFIX.sub("", log), raw_ids) == set()
    assert token_hits(series, raw_ids) == set()
    assert [s for s in secrets if s in log or s in metrics] == []
    assert 'bstream_dropped_fields_total{kind="email"} 40.0' in metrics


def test_pii_values_and_secrets_appear_nowhere(scanned: dict[str, Any]) -> None:
    needles = [v for i in range(N_PII) for v in pii(i).values()] + [TEST_KEY, SASL_PASSWORD]
    blobs = [scanned["log"], scanned["metrics"]]
    for records in [scanned["predictions"], scanned["dlq"], *scanned["changelogs"].values()]:
        blobs += [(m.key or b"").decode(errors="replace") for m in records]
        blobs += [(m.value or b"").decode(errors="replace") for m in records]
        blobs += [v for m in records for v in m.headers.values()]
    text = "\n".join(blobs)

    assert [n for n in needles if n in text] == []
