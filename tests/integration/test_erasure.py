"""`bstream erase` against a real worker: the window goes, a tombstone is its last changelog record,
and after a restart (state recovered from the changelog) the user is still gone."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from stream.broker import EmbeddedBroker
from stream.commands.erase import erase
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


def test_erased_window_is_tombstoned_and_stays_gone_after_restart(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    wenv = new_env(broker.bootstrap)
    gone, kept = wenv.user("erase-me"), wenv.user("keep-me")
    predictions_topic = wenv.settings.predictions_topic

    with WorkerProcess(wenv, tiny_bundle, tmp_path, name="first") as first:
        first.wait_ready()
        produce(
            broker.bootstrap,
            wenv.settings.events_topic,
            events("erase-me", 0, 3) + events("keep-me", 0, 2),
        )
        collect(
            broker.bootstrap,
            predictions_topic,
            reflects({gone: T0 + 2, kept: T0 + 1}, {gone: 3, kept: 2}),
        )

        erased = run_erase(wenv, "erase-me")
        erasures = first.metric("bstream_erasures_total")
        first_log = first.log()
        assert first.stop() == 0

    changelog = collect(
        broker.bootstrap, wenv.changelog_topic, lambda got: any(m.value is None for m in got)
    )

    with WorkerProcess(wenv, tiny_bundle, tmp_path, name="second") as second:
        second.wait_ready()
        again = run_erase(wenv, "erase-me")
        produce(
            broker.bootstrap,
            wenv.settings.events_topic,
            events("erase-me", 10, 1) + events("keep-me", 10, 1),
        )
        after = collect(
            broker.bootstrap,
            predictions_topic,
            reflects({gone: T0 + 10, kept: T0 + 10}, {gone: 1, kept: 3}),
        )
        erasures_after_restart = second.metric("bstream_erasures_total")

    assert erased.exit_code == 0, erased.output
    assert erased.stdout.startswith(f"erased: window of user {gone} (key_id k1)")
    assert erasures == 1
    assert last_per_key(changelog)[gone.encode()] is None
    assert last_per_key(changelog)[kept.encode()] is not None
    assert again.exit_code == 0 and again.stdout.startswith(
        f"nothing to erase: no window held for user {gone}"
    )
    assert erasures_after_restart == 0
    assert after  # the new event started a fresh window (size 1); the kept user recovered (size 3)
    assert "erase-me" not in first_log and "erase-me" not in second.log()
