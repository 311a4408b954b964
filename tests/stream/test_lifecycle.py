"""The model registry and `bstream promote` / `bstream models` against a real broker."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import orjson
import pytest

from model.bundle import MODEL_FILE, sha256_file
from stream.kafka.broker import EmbeddedBroker
from stream.registry import (
    Announcement,
    RegistryError,
    champion_after,
    encode,
    fold,
    location_path,
    read_state,
    rollback_of,
    worker_key,
    worker_status,
)
from stream.settings import Settings
from tests.stream.kafka_helpers import run_cli


def made(version: str, role: str = "champion", at: int = 1) -> Announcement:
    return Announcement(role, "b", version, f"/b/{version}", "ab" * 32, ["purchase"], 20, "t", at)


def test_fold_keeps_the_newest_record_per_key_and_tombstones_retire() -> None:
    worker = worker_status("app", "h:1", "v1", None, None, 5)
    records = [
        (b"champion", encode(made("v1"))),
        (b"challenger", encode(made("v2", "challenger"))),
        (worker_key("app", "h:1"), worker),
        (b"champion", encode(made("v3"))),
        (b"challenger", None),
        (b"champion", b"not json"),
    ]

    state = fold(records)

    assert state.champion is not None and state.champion.version == "v3"
    assert state.challenger is None
    assert state.workers["worker/app/h:1"]["champion"] == "v1"
    assert state.skipped == 1


def test_history_and_rollback_walk_back_one_champion_at_a_time() -> None:
    first = champion_after(None, made("v1"))
    second = champion_after(first, made("v2"))
    third = champion_after(second, made("v3"))

    back = rollback_of(third, "me", 10)
    back_again = rollback_of(back, "me", 11)

    assert [h.version for h in third.earlier()] == ["v1", "v2"]
    assert (back.version, back.promoted_at) == ("v2", 10)
    assert back_again.version == "v1"
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback_of(back_again, "me", 12)


def test_locations_are_paths_or_file_urls() -> None:
    assert location_path("file:///srv/b%20x") == Path("/srv/b x")
    assert location_path("/srv/b") == Path("/srv/b")
    with pytest.raises(RegistryError, match="unsupported"):
        location_path("s3://bucket/b")


def env_for(broker: EmbeddedBroker) -> dict[str, str]:
    return {
        "BSTREAM_BOOTSTRAP": broker.bootstrap,
        "BSTREAM_MODELS_TOPIC": f"models-{uuid.uuid4().hex[:8]}",
    }


def settings_for(env: dict[str, str]) -> Settings:
    return Settings(bootstrap=env["BSTREAM_BOOTSTRAP"], models_topic=env["BSTREAM_MODELS_TOPIC"])


def test_promote_announces_lists_and_rolls_back(
    broker: EmbeddedBroker, tiny_bundle: Path, second_bundle: Path
) -> None:
    env = env_for(broker)

    first = run_cli("promote", str(tiny_bundle), env=env)
    second = run_cli("promote", f"file://{second_bundle}", env=env)
    challenger = run_cli(
        "promote", str(tiny_bundle), "--role", "challenger", "--share", "0.5", env=env
    )
    listing = run_cli("models", env=env)
    back = run_cli("promote", "--rollback", env=env)
    state = read_state(settings_for(env))

    assert first.exit_code == second.exit_code == challenger.exit_code == 0, first.output
    v1 = json.loads((tiny_bundle / "bundle.json").read_text())["version"]
    v2 = json.loads((second_bundle / "bundle.json").read_text())["version"]
    listed = " ".join(listing.output.split())
    assert f"champion {v2}" in listed and f"challenger {v1}" in listed
    assert "share=0.5" in listed and f"earlier: {v1}" in listed
    assert back.exit_code == 0 and f"champion {v1} announced again" in back.output
    assert state.champion is not None and state.champion.version == v1
    assert state.champion.sha256 == sha256_file(tiny_bundle / MODEL_FILE)
    assert state.champion.note == f"rollback from {v2}"


@pytest.fixture
def bad_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bad"
    shutil.copytree(tiny_bundle, copy)
    return copy


def _refused(env: dict[str, str], *args: str) -> str:
    result = run_cli("promote", *args, env=env)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_a_corrupt_model_file_is_refused(broker: EmbeddedBroker, bad_copy: Path) -> None:
    env = env_for(broker)
    (bad_copy / MODEL_FILE).write_bytes(b"not a torchscript archive")

    line = _refused(env, str(bad_copy))

    assert "does not match its sha256" in line
    assert read_state(settings_for(env)).champion is None


def test_a_corrupt_model_file_with_a_matching_hash_is_refused(
    broker: EmbeddedBroker, bad_copy: Path
) -> None:
    env = env_for(broker)
    (bad_copy / MODEL_FILE).write_bytes(b"not a torchscript archive")
    meta = json.loads((bad_copy / "bundle.json").read_text())
    meta["files"][MODEL_FILE] = sha256_file(bad_copy / MODEL_FILE)
    (bad_copy / "bundle.json").write_text(json.dumps(meta))

    assert "corrupt bundle" in _refused(env, str(bad_copy))
    assert read_state(settings_for(env)).champion is None


def test_a_wrong_sha256_is_refused(broker: EmbeddedBroker, tiny_bundle: Path) -> None:
    env = env_for(broker)

    assert "sha256 mismatch" in _refused(env, str(tiny_bundle), "--sha256", "0" * 64)


def test_labels_other_than_the_champions_are_refused(
    broker: EmbeddedBroker, tiny_bundle: Path, bad_copy: Path
) -> None:
    env = env_for(broker)
    meta = json.loads((bad_copy / "bundle.json").read_text())
    meta["labels"] = ["cart"]
    (bad_copy / "bundle.json").write_text(json.dumps(meta))
    assert run_cli("promote", str(tiny_bundle), env=env).exit_code == 0

    line = _refused(env, str(bad_copy))

    assert "incompatible labels" in line
    champion = read_state(settings_for(env)).champion
    assert champion is not None and champion.labels == ["purchase"]


def test_a_window_longer_than_the_workers_is_refused(
    broker: EmbeddedBroker, tiny_bundle: Path
) -> None:
    env = {**env_for(broker), "BSTREAM_WINDOW_SIZE": "5"}

    assert "incompatible encoding" in _refused(env, str(tiny_bundle))


def test_rollback_without_history_and_both_arguments_are_one_line_errors(
    broker: EmbeddedBroker, tiny_bundle: Path
) -> None:
    env = env_for(broker)
    assert "nothing to roll back" in _refused(env, "--rollback")
    both = run_cli("promote", str(tiny_bundle), "--rollback", env=env)  # a usage error: exit 2
    assert both.exit_code == 2 and both.stderr.strip().count("\n") == 0
    assert "give exactly one of BUNDLE" in both.stderr


def test_models_lists_worker_status_records(broker: EmbeddedBroker) -> None:
    env = env_for(broker)
    from stream.kafka.topics import create_topics, default_topics
    from stream.registry import RegistryWriter

    settings = settings_for(env)
    create_topics(settings, [s for s in default_topics(settings) if s.compact])
    RegistryWriter(settings).send(
        worker_key("app", "host:7"), worker_status("app", "host:7", "v9", None, "boom", 0)
    )

    out = " ".join(run_cli("models", env=env).output.split())

    assert "no model announced" in out
    assert "app/host:7 champion=v9 challenger=-" in out and "last failed load: boom" in out
    assert orjson.loads(worker_status("a", "w", "v", None, None, 1))["type"] == "worker"
