"""Worker integration test helpers: unique topics, a real worker subprocess, reading topics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from stream.kafka.topics import create_topics, default_topics
from stream.launcher import BSTREAM as BSTREAM  # re-exported: tests/faults start bstream too
from stream.launcher import WorkerLauncher, WorkerStartError
from stream.privacy import pseudonym
from stream.settings import Settings

TEST_KEY = "integration-test-hmac-key-0123456789"


@dataclass(frozen=True)
class Msg:
    """One consumed record."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerEnv:
    """Topic names, app id and key of one isolated worker deployment on a shared broker."""

    bootstrap: str
    suffix: str
    partitions: int = 4

    @property
    def settings(self) -> Settings:
        s = self.suffix
        return Settings(
            bootstrap=self.bootstrap,
            events_topic=f"events-{s}",
            predictions_topic=f"predictions-{s}",
            dlq_topic=f"dlq-{s}",
            control_topic=f"control-{s}",
            outcomes_topic=f"outcomes-{s}",
            models_topic=f"models-{s}",
            shadow_topic=f"shadow-{s}",
            app_id=f"app-{s}",
            partitions=self.partitions,
        )

    @property
    def changelog_topic(self) -> str:
        return f"app-{self.suffix}-windows-changelog"

    def env(self, data_dir: Path) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "BSTREAM_BOOTSTRAP": self.bootstrap,
            "BSTREAM_EVENTS_TOPIC": s.events_topic,
            "BSTREAM_PREDICTIONS_TOPIC": s.predictions_topic,
            "BSTREAM_DLQ_TOPIC": s.dlq_topic,
            "BSTREAM_CONTROL_TOPIC": s.control_topic,
            "BSTREAM_OUTCOMES_TOPIC": s.outcomes_topic,
            "BSTREAM_MODELS_TOPIC": s.models_topic,
            "BSTREAM_SHADOW_TOPIC": s.shadow_topic,
            "BSTREAM_APP_ID": s.app_id,
            "BSTREAM_PARTITIONS": str(self.partitions),
            "BSTREAM_HMAC_KEY": TEST_KEY,
            "BSTREAM_DATA_DIR": str(data_dir),
        }

    def user(self, raw_id: str) -> str:
        """The documented pseudonym formula, computed independently of the worker."""
        return pseudonym(TEST_KEY.encode(), raw_id)


def new_env(bootstrap: str, partitions: int = 4) -> WorkerEnv:
    """A fresh deployment with its topics created."""
    wenv = WorkerEnv(bootstrap, uuid.uuid4().hex[:8], partitions)
    create_topics(wenv.settings, default_topics(wenv.settings, partitions))
    return wenv


class WorkerProcess(WorkerLauncher):
    """`bstream worker` as a real subprocess, with its log in a file and metrics on a free port."""

    def __init__(
        self, wenv: WorkerEnv, bundle: Path, workdir: Path, *args: str, name: str = "worker"
    ) -> None:
        self.wenv, self.bundle = wenv, bundle
        self.data_dir = workdir / f"{name}-data"
        super().__init__(
            ["--model", str(bundle), *args], wenv.env(self.data_dir), workdir / f"{name}.log"
        )

    def _get(self, path: str) -> tuple[int, str]:
        return self.get(path, timeout=2)

    def wait_ready(self, timeout: float = 120.0, poll: float = 0.3) -> WorkerProcess:
        """Block until /health says ready; fail with the log tail if the worker dies first."""
        try:
            super().wait_ready(timeout, poll)
        except WorkerStartError as exc:
            raise AssertionError(f"{exc}\n{self.log()[-3000:]}") from None
        return self

    def metrics_text(self) -> str:
        return self._get("/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if not match:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (fails the test if SIGTERM is ignored)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"worker ignored SIGTERM for {timeout}s:\n{self.log()[-3000:]}"
                ) from None
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None]],
    partitioner: str = "murmur2_random",
) -> list[tuple[int, int]]:
    """Send (key, value) records in order and wait for the acks; returns (partition, offset)s."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": partitioner, "linger.ms": 5}
    )
    placed: list[tuple[int, int]] = [(-1, -1)] * len(records)
    errors: list[Any] = []

    def report(index: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err:
                errors.append(err)
            else:
                placed[index] = (msg.partition(), msg.offset())

        return on_delivery

    for i, (key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert not errors, errors[:3]
    return placed


def collect(
    bootstrap: str, topic: str, done: Callable[[list[Msg]], bool], timeout: float = 90.0
) -> list[Msg]:
    """Read `topic` from the beginning until `done(records)` holds (or fail after `timeout`)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    records: list[Msg] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            for m in consumer.consume(10_000, 0.3):
                if m.error():
                    continue
                pairs: list[Any] = list(m.headers() or [])
                headers = {str(k): (v or b"").decode() for k, v in pairs}
                key, value = m.key(), m.value()
                assert not isinstance(key, str) and not isinstance(value, str)
                records.append(
                    Msg(int(m.partition() or 0), int(m.offset() or 0), key, value, headers)
                )
            if done(records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: condition not met after {timeout}s ({len(records)} records)"
                )
    finally:
        consumer.close()


def latest_by_user(records: list[Msg]) -> dict[str, dict[str, Any]]:
    """Each user's last prediction (a user's predictions share a partition, read in order)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        prediction = orjson.loads(record.value or b"")
        latest[prediction["user"]] = prediction
    return latest


def reflects(
    newest: dict[str, int], sizes: dict[str, int] | None = None
) -> Callable[[list[Msg]], bool]:
    """Condition: each user's last prediction has their newest event (and window size, if given)."""

    def done(records: list[Msg]) -> bool:
        latest = latest_by_user(records)
        for user, ts in newest.items():
            last = latest.get(user)
            if last is None or last["last_event_ts"] != ts:
                return False
            if sizes is not None and last["window_size"] != sizes[user]:
                return False
        return True

    return done
