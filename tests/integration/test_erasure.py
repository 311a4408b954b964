"""`bstream erase` against a real worker: the window goes, a tombstone is its last changelog record,
and after a restart (state recovered from the changelog) the user is still gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from stream.commands.erase import erase
from stream.kafka.broker import EmbeddedBroker
from tests.integration.worker_support import (
    Msg,
    WorkerEnv,
    WorkerProcess,
    collect,
    new_env,
    produce,
    reflects,
)

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def events(user: str, start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            user.encode(),
            orjson.dumps({"user_id": user, "event_type": "view", "ts": T0 + i, "item_id": f"i{i}"}),
        )
        for i in range(start, start + n)
    ]


def run_erase(wenv: WorkerEnv, user_id: str) -> Result:
    env = {k: v for k, v in wenv.env(Path(".")).items() if k.startswith("BSTREAM_")}
    env.pop("BSTREAM_HMAC_KEY")  # the erase client needs no key
    return CliRunner().invoke(erase, [user_id, "--timeout", "30"], env=env)


def last_per_key(changelog: list[Msg]) -> dict[bytes, bytes | None]:
    """Compaction semantics: the value a compacted changelog keeps for each key."""
    return {
        m.key: m.value for m in sorted(changelog, key=lambda m: (m.partition, m.offset)) if m.key
    }


def confirmations(wenv: WorkerEnv, request_line: str) -> list[dict[str, Any]]:
    """The erase_done records on the control topic for the request named in the CLI's stderr."""
    request_id = request_line.split("erase request ", 1)[1].split()[0]

    def answers(got: list[Msg]) -> list[dict[str, Any]]:
        values = [orjson.loads(m.value or b"") for m in got]
        return [v for v in values if v["type"] == "erase_done" and v["request_id"] == request_id]

    def complete(got: list[Msg]) -> bool:
        return {p for a in answers(got) for p in a["partitions"]} == {0, 1, 2, 3}

    return answers(collect(wenv.bootstrap, wenv.settings.control_topic, complete, timeout=30))


def test_erased_window_is_tombstoned_and_stays_gone_after_restart(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    wenv = new_env(broker.bootstrap)
    gone, kept, crc = wenv.user("erase-me"), wenv.user("keep-me"), wenv.user("crc-me")
    topic, predictions_topic = wenv.settings.events_topic, wenv.settings.predictions_topic

    with WorkerProcess(wenv, tiny_bundle, tmp_path, name="first") as first:
        first.wait_ready()
        produce(broker.bootstrap, topic, events("erase-me", 0, 3) + events("keep-me", 0, 2))
        [(crc_partition, _), _] = produce(
            broker.bootstrap, topic, events("crc-me", 0, 2), partitioner="consistent_random"
        )
        newest = {gone: T0 + 2, kept: T0 + 1, crc: T0 + 1}
        collect(broker.bootstrap, predictions_topic, reflects(newest, {gone: 3, kept: 2, crc: 2}))

        erased = run_erase(wenv, "erase-me")
        erasures = first.metric("bstream_erasures_total")
        first_log = first.log()
        assert first.stop() == 0

    changelog = collect(
        broker.bootstrap, wenv.changelog_topic, lambda got: any(m.value is None for m in got)
    )
    outcomes_changelog = collect(  # erasure removes the user's pending outcomes too
        broker.bootstrap,
        f"app-{wenv.suffix}-outcomes-changelog",
        lambda got: any(m.value is None for m in got),
    )

    # Restart as two workers (state recovered from the changelog; partitions split between them).
    with (
        WorkerProcess(wenv, tiny_bundle, tmp_path, name="second-a") as a,
        WorkerProcess(wenv, tiny_bundle, tmp_path, name="second-b") as b,
    ):
        a.wait_ready(), b.wait_ready()
        again = run_erase(wenv, "erase-me")
        crc_erased = run_erase(wenv, "crc-me")
        produce(
            broker.bootstrap,
            topic,
            events("erase-me", 10, 1) + events("keep-me", 10, 1) + events("crc-me", 10, 1),
        )
        newest = {gone: T0 + 10, kept: T0 + 10, crc: T0 + 10}
        after = collect(
            broker.bootstrap, predictions_topic, reflects(newest, {gone: 1, kept: 3, crc: 1})
        )
        erasures_after_restart = a.metric("bstream_erasures_total") + b.metric(
            "bstream_erasures_total"
        )
        logs = first_log + a.log() + b.log()

    changelog_after = collect(
        broker.bootstrap, wenv.changelog_topic, lambda got: len(got) > len(changelog)
    )
    again_answers = confirmations(wenv, again.stderr)
    crc_answers = confirmations(wenv, crc_erased.stderr)
    crc_tombstones = [m for m in changelog_after if m.key == crc.encode() and m.value is None]

    assert erased.exit_code == 0, erased.output
    assert erased.stdout.startswith(f"erased: window of user {gone} (key_id k1)")
    assert erasures == 1
    assert last_per_key(changelog)[gone.encode()] is None
    assert last_per_key(changelog)[kept.encode()] is not None
    assert last_per_key(outcomes_changelog)[gone.encode()] is None
    assert last_per_key(outcomes_changelog)[kept.encode()] is not None
    assert again.exit_code == 0
    assert again.stdout.startswith(f"nothing to erase: no window held for user {gone}")
    assert len({c["worker"] for c in again_answers}) == 2  # each worker answered for its share
    assert sorted(p for c in again_answers for p in c["partitions"]) == [0, 1, 2, 3]
    assert crc_erased.exit_code == 0 and crc_erased.stdout.startswith("erased:")
    assert [c["erased"] for c in crc_answers].count(True) == 1  # by the worker that owned it
    assert [m.partition for m in crc_tombstones] == [crc_partition]  # the events' own partition
    assert erasures_after_restart == 1  # crc-me only: erase-me was not in the recovered state
    assert after  # the erased users' new events started fresh windows; keep-me's grew to 3
    assert [u for u in ("erase-me", "keep-me", "crc-me") if u in logs] == []
