"""Two workers in one group: B joins, then A leaves (SIGTERM or kill -9), both mid-stream.

Events flow in rounds (one event per user per round) the whole time. At the end every user's
latest prediction reflects their newest event and a window holding *every* round, so the windows
that moved A -> B at the join and at the leave kept the events from before the move. Run once
with a murmur2 producer and once with librdkafka's default (CRC32) partitioner; each changelog
record must sit in the partition its user's events are consumed from.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from stream.kafka import PARTITIONERS
from stream.kafka.broker import EmbeddedBroker
from stream.windows import decode_window
from tests.faults.support import (
    Expected,
    PredictionWatcher,
    ProcessSampler,
    kill9,
    mib,
    record_result,
    wait_for,
)
from tests.integration.worker_support import WorkerEnv, WorkerProcess, collect, new_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
T0 = 1_700_000_000_000
USERS = 120
ROUND_GAP_S = 0.5
MAX_ROUNDS = 400  # windows are sized to hold them all (--window-size)


class RoundProducer(threading.Thread):
    """Produces one event per user per round until told to stop; remembers each user's partition."""

    def __init__(self, wenv: WorkerEnv, users: list[str], partitioner: str) -> None:
        super().__init__(daemon=True)
        self.wenv, self.users = wenv, users
        self.producer = Producer(
            {"bootstrap.servers": wenv.bootstrap, "partitioner": partitioner, "linger.ms": 5}
        )
        self.rounds = 0
        self.partition_of: dict[str, int] = {}
        self.errors: list[Any] = []
        self.stop_after: int | None = None

    def event(self, user: str, r: int) -> bytes:
        kinds = ("view", "view", "click", "cart")
        item = f"{user}-{r % 7}"
        return orjson.dumps(
            {"user_id": user, "event_type": kinds[r % 4], "ts": T0 + r * 1000, "item_id": item}
        )

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.partition_of[self.wenv.user(msg.key().decode())] = msg.partition()

    def run(self) -> None:
        topic = self.wenv.settings.events_topic
        while self.rounds < MAX_ROUNDS and (
            self.stop_after is None or self.rounds < self.stop_after
        ):
            for user in self.users:
                self.producer.produce(
                    topic,
                    self.event(user, self.rounds),
                    user.encode(),
                    on_delivery=self.on_delivery,
                )
            self.producer.flush(60)
            self.rounds += 1
            time.sleep(ROUND_GAP_S)

    def after(self, more: int) -> int:
        """Wait until `more` further rounds are out; returns the round count then."""
        target = self.rounds + more
        wait_for(lambda: self.rounds >= target or not self.is_alive(), 120, f"round {target}")
        return self.rounds


def partitions_assigned(worker: WorkerProcess) -> int:
    status, body = worker._get("/health")
    return int(orjson.loads(body)["partitions_assigned"]) if body else 0


@pytest.mark.parametrize(
    ("partitioner", "leave"), [("murmur2", "sigterm"), ("default", "sigterm"), ("murmur2", "kill9")]
)
def test_join_and_leave_mid_stream_keep_every_window(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path, partitioner: str, leave: str
) -> None:
    wenv = new_env(broker.bootstrap)
    users = [f"{partitioner[0]}{i}" for i in range(USERS)]
    args = ("--window-size", str(MAX_ROUNDS))
    watcher = PredictionWatcher(broker.bootstrap, wenv.settings.predictions_topic)
    a = WorkerProcess(wenv, tiny_bundle, tmp_path, *args, name="a").start().wait_ready()
    b = WorkerProcess(wenv, tiny_bundle, tmp_path, *args, name="b")
    rounds = RoundProducer(wenv, users, PARTITIONERS[partitioner])
    try:
        rounds.start()
        rounds.after(3)
        joined_at = rounds.rounds
        started = time.monotonic()
        b.start().wait_ready(timeout=180)  # B owns partitions now: some windows moved A -> B
        join_s = time.monotonic() - started
        sampler = ProcessSampler(b.proc.pid)  # type: ignore[union-attr]
        rounds.after(3)
        left_at = rounds.rounds
        if leave == "kill9":
            kill9(a)  # A dies mid-batch; B takes over once A's session times out
        else:
            assert a.stop() == 0  # A leaves cleanly; its remaining partitions move to B
        leave_s = wait_for(lambda: partitions_assigned(b) == wenv.partitions, 180, "B owns all")
        rounds.stop_after = rounds.after(3)
        rounds.join(120)
        total = rounds.rounds
        expected = Expected(window_size=MAX_ROUNDS)
        for user in users:
            for r in range(total):
                expected.add(wenv.user(user), orjson.loads(rounds.event(user, r)))
        watcher.wait_reflects(expected, timeout=300)
        sampler.stop()
        assert b.stop() == 0
    finally:
        rounds.stop_after = 0
        watcher.close()
        for worker in (a, b):
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()

    assert rounds.errors == [] and total > left_at > joined_at
    changelog = collect(broker.bootstrap, wenv.changelog_topic, lambda got: len(got) > 0, 30)
    assert {m.key.decode() for m in changelog if m.key} == set(expected.newest)
    misplaced = [
        m.key for m in changelog if m.key and m.partition != rounds.partition_of[m.key.decode()]
    ]
    assert misplaced == []
    assert all(decode_window(m.value).partition == m.partition for m in changelog if m.value)
    record_result(
        {
            "scenario": f"rebalance ({partitioner} producer, A leaves by {leave})",
            "runs": 1,
            "events": total * USERS,
            "users": USERS,
            "users_lost": len(watcher.missing(expected)),
            "predictions": watcher.total,
            "duplicates": watcher.duplicates,
            "dlq": 0,
            "peak_rss_mib": mib(sampler.peak_rss),
            "join_s": round(join_s, 1),
            "leave_s": round(leave_s, 1),
            "time_to_recover_s": round(leave_s, 1),
            "rounds_join_leave_end": [joined_at, left_at, total],
        }
    )
