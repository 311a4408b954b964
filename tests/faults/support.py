"""Fault-test helpers: watch predictions, sample a worker's RSS and CPU, record result rows.

Workers, topics and producers come from tests/integration/worker_support.py; this adds only what
fault scenarios need on top.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.formats import read_rows
from tests.integration.worker_support import BSTREAM, TEST_KEY, WorkerEnv, WorkerProcess

RESULTS_ENV = "BSTREAM_FAULTS_REPORT"  # JSONL file the scenarios append their result rows to
RESULTS: list[dict[str, Any]] = []  # this session's rows; conftest prints them as a table


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.3) -> float:
    """Poll until `condition()` holds; returns the seconds it took (AssertionError on timeout)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


def dlq_key(raw: bytes | None) -> bytes | None:
    """A DLQ record's key: the HMAC pseudonym of the original key's bytes (docs/privacy.md)."""
    if raw is None:
        return None
    return hmac.new(TEST_KEY.encode(), raw, hashlib.sha256).hexdigest().encode()


def kill9(worker: WorkerProcess) -> None:
    """SIGKILL the worker process (no shutdown code runs) and reap it."""
    assert worker.proc is not None and worker.proc.poll() is None, "worker is not running"
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(30)


class Supervisor:
    """Restarts the worker when it exits non-zero on its own, as a deployment's supervisor does.

    The worker's contract for what it cannot fix in place (a stalled recovery, a lost changelog)
    is to log one ERROR line and exit non-zero (docs/DESIGN.md); Kubernetes and compose restart
    it. A SIGKILL from the test (`kill9`) and a clean stop are left to the test.
    """

    def __init__(self, worker: WorkerProcess, every: float = 0.5) -> None:
        self.worker, self.every = worker, every
        self.exits: list[str] = []  # "exit code: the worker's last ERROR line", per restart
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            proc = self.worker.proc
            code = proc.poll() if proc is not None else None
            if code is not None and code > 0:
                self.exits.append(f"{code}: {self.worker.last_error_line()}")
                self.worker.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def taobao_events(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first `limit` Taobao rows as UserEvents (the rows `replay --limit` sends)."""
    rows = itertools.islice(read_rows(path, "taobao"), limit)
    return [row.event for row in rows if row.event is not None]


def content_key(event: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two events the same event when they carry no event_id (the dedupe contract)."""
    if event.get("event_id"):
        return ("id", event["event_id"])
    fields = ("ts", "event_type", "item_id", "category", "price", "session_id")
    return tuple(event.get(name) for name in fields)


@dataclass
class Expected:
    """Per pseudonymised user: newest event time and how many distinct events the window holds."""

    newest: dict[str, int] = field(default_factory=dict)
    distinct: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    window_size: int = 50  # the worker's --window-size: windows keep at most this many

    def add(self, user: str, event: dict[str, Any]) -> None:
        self.newest[user] = max(self.newest.get(user, event["ts"]), event["ts"])
        self.distinct.setdefault(user, set()).add(content_key(event))

    def sizes(self) -> dict[str, int]:
        return {user: min(self.window_size, len(keys)) for user, keys in self.distinct.items()}


def expected_for(wenv: WorkerEnv, events: Iterable[dict[str, Any]]) -> Expected:
    """Expectations for valid events, users mapped with the documented pseudonym formula."""
    expected = Expected()
    for event in events:
        expected.add(wenv.user(event["user_id"]), event)
    return expected


class PredictionWatcher:
    """Reads a predictions topic from the beginning on a thread, keeping each user's latest."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.latest: dict[str, dict[str, Any]] = {}
        self.total = 0
        self.duplicates = 0  # same user, same last_event_ts and window_size as an earlier one
        self._seen: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "faults-watch",
                "enable.auto.commit": False,
            }
        )
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(10_000, 0.2):
                if message.error():
                    continue
                prediction = orjson.loads(message.value() or b"")
                ident = (prediction["user"], prediction["last_event_ts"], prediction["window_size"])
                with self._lock:
                    self.total += 1
                    self.duplicates += ident in self._seen
                    self._seen.add(ident)
                    self.latest[prediction["user"]] = prediction

    def missing(self, expected: Expected, check_sizes: bool = True) -> list[str]:
        """Users whose latest prediction does not (yet) reflect their newest event (and window)."""
        sizes = expected.sizes() if check_sizes else {}
        with self._lock:
            return [
                user
                for user, ts in expected.newest.items()
                if (last := self.latest.get(user)) is None
                or last["last_event_ts"] != ts
                or (check_sizes and last["window_size"] != sizes[user])
            ]

    def wait_reflects(self, expected: Expected, timeout: float, check_sizes: bool = True) -> float:
        """Block until every expected user is reflected; the error names a few that are not."""
        started = time.monotonic()
        while missing := self.missing(expected, check_sizes):
            if time.monotonic() - started > timeout:
                examples = [(u[:12], self.latest.get(u)) for u in missing[:3]]
                raise AssertionError(
                    f"{len(missing)} of {len(expected.newest)} users not reflected after "
                    f"{timeout:.0f}s, e.g. {examples}"
                )
            time.sleep(0.5)
        return time.monotonic() - started

    def close(self) -> None:
        """Stop reading; safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


class ProcessSampler:
    """Samples a process's RSS (peak) and CPU time on a thread; survives the process dying."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.samples: list[tuple[float, int]] = []  # (monotonic, rss)
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak_rss = max(self.peak_rss, rss)
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self._every)

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def start_replay(wenv: WorkerEnv, path: Path, fmt: str, *args: str) -> subprocess.Popen[str]:
    """`bstream replay` onto the deployment's events topic, in the background."""
    cmd = [
        str(BSTREAM),
        "replay",
        str(path),
        "--format",
        fmt,
        "--bootstrap",
        wenv.bootstrap,
        "--topic",
        wenv.settings.events_topic,
        "--no-progress",
        *args,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_replay(replay: subprocess.Popen[str], timeout: float = 600) -> str:
    """Wait for a background replay; it must exit 0. Returns its output (the summary line)."""
    out, _ = replay.communicate(timeout=timeout)
    assert replay.returncode == 0, f"replay exited {replay.returncode}: {out[-2000:]}"
    return out


def record_result(row: dict[str, Any]) -> None:
    """Print one scenario's result row and append it to $BSTREAM_FAULTS_REPORT when set."""
    RESULTS.append(row)
    line = orjson.dumps(row).decode()
    print(f"\nFAULTS-RESULT {line}")
    target = os.environ.get(RESULTS_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def mib(n_bytes: int) -> float:
    return round(n_bytes / 2**20, 1)
