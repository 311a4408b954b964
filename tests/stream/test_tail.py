"""`bstream tail`: predictions printed as they arrive, as lines or raw JSON; bad records skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from stream.commands.tail import format_prediction
from stream.kafka.broker import EmbeddedBroker
from tests.stream.kafka_helpers import make_topic, produce, run_cli

BSTREAM = str(Path(sys.executable).parent / "bstream")


def _prediction(user: str, score: float, **extra: object) -> dict[str, object]:
    return {
        "user": user,
        "scores": {"purchase": score},
        "model_version": "m1",
        "window_size": 12,
        "last_event_ts": 1_511_658_000_000,
        "predicted_at": 1_511_658_000_150,
        **extra,
    }


def test_human_line_shows_user_score_window_and_latency() -> None:
    line = format_prediction(
        _prediction("u42", 0.3126, latency_ms=41.6, scores={"purchase": 0.3126, "cart": 0.5})
    )

    assert line == (
        "user=u42 purchase=0.313 cart=0.500 window=12 latency=42ms "
        "last_event=2017-11-26T01:00:00Z model=m1"
    )


def test_json_mode_prints_valid_predictions_and_warns_about_the_rest(
    broker: EmbeddedBroker,
) -> None:
    topic = make_topic(broker.bootstrap, partitions=1)
    good = [orjson.dumps(_prediction(f"u{i}", i / 10)) for i in range(3)]
    bad = [(b"x", b"{not json"), (b"y", b'{"user": "u9"}')]
    produce(
        broker.bootstrap,
        topic,
        [(b"u0", good[0]), bad[0], (b"u1", good[1]), bad[1], (b"u2", good[2])],
    )

    result = run_cli("tail", "--bootstrap", broker.bootstrap, "--topic", topic,
                     "--from-beginning", "--limit", "3", "--json", "--timeout", "20")  # fmt: skip

    assert result.exit_code == 0
    assert result.stdout.encode().splitlines() == good
    assert "skipped a record that is not JSON" in result.stderr
    assert "skipped an invalid prediction (missing_field" in result.stderr


def test_default_output_is_one_line_per_prediction(broker: EmbeddedBroker) -> None:
    topic = make_topic(broker.bootstrap)
    produce(
        broker.bootstrap,
        topic,
        [(f"u{i}".encode(), orjson.dumps(_prediction(f"u{i}", 0.5))) for i in range(4)],
    )

    result = run_cli("tail", "--bootstrap", broker.bootstrap, "--topic", topic,
                     "--from-beginning", "--limit", "4", "--timeout", "20")  # fmt: skip

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == ["user=u0", "user=u1", "user=u2", "user=u3"]
    assert all("purchase=0.500 window=12" in line for line in lines)


def test_latest_shows_only_predictions_that_arrive_after_start(broker: EmbeddedBroker) -> None:
    topic = make_topic(broker.bootstrap)
    produce(broker.bootstrap, topic, [(b"old", orjson.dumps(_prediction("old", 0.1)))])
    proc = subprocess.Popen(
        [BSTREAM, "tail", "--bootstrap", broker.bootstrap, "--topic", topic,
         "--latest", "--limit", "1", "--json", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert "from new predictions" in proc.stderr.readline()  # positions are fixed by now
        produce(broker.bootstrap, topic, [(b"new", orjson.dumps(_prediction("new", 0.9)))])
        out, _err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0
    assert [orjson.loads(line)["user"] for line in out.splitlines()] == ["new"]


def test_timeout_before_the_limit_is_an_error(broker: EmbeddedBroker) -> None:
    topic = make_topic(broker.bootstrap)

    result = run_cli("tail", "--bootstrap", broker.bootstrap, "--topic", topic,
                     "--limit", "2", "--timeout", "0.5")  # fmt: skip

    assert result.exit_code == 1
    assert result.stderr.strip().endswith("Error: timed out: 0 of 2 predictions after 0.5s idle")


def test_missing_topic_is_a_one_line_error(broker: EmbeddedBroker) -> None:
    result = run_cli("tail", "--bootstrap", broker.bootstrap, "--topic", "nope", "--limit", "1")

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: topic 'nope' does not exist on {broker.bootstrap}; run `bstream topics create`"
    )
