"""`bstream worker` as a bench subprocess: isolated topics, readiness, sampled RSS and metrics."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil
from prometheus_client.parser import text_string_to_metric_families

from stream.broker import free_port
from stream.settings import Settings
from stream.topics import create_topics, default_topics

BSTREAM = Path(sys.executable).parent / "bstream"
BENCH_KEY = "bstream-bench-hmac-key-0123456789"  # pseudonyms on, as in production (hashing costs)


class BenchError(RuntimeError):
    """A bench phase could not run (worker died, never got ready, ...)."""


@dataclass(frozen=True)
class Deployment:
    """One isolated worker deployment on a shared broker: its own topics and app id."""

    bootstrap: str
    partitions: int
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def settings(self) -> Settings:
        s = self.suffix
        return Settings(
            bootstrap=self.bootstrap,
            events_topic=f"bench-events-{s}",
            predictions_topic=f"bench-predictions-{s}",
            dlq_topic=f"bench-dlq-{s}",
            control_topic=f"bench-control-{s}",
            app_id=f"bench-{s}",
            partitions=self.partitions,
        )

    def create(self) -> Deployment:
        create_topics(self.settings, default_topics(self.settings, self.partitions))
        return self

    def env(self, data_dir: Path) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "BSTREAM_BOOTSTRAP": self.bootstrap,
            "BSTREAM_EVENTS_TOPIC": s.events_topic,
            "BSTREAM_PREDICTIONS_TOPIC": s.predictions_topic,
            "BSTREAM_DLQ_TOPIC": s.dlq_topic,
            "BSTREAM_CONTROL_TOPIC": s.control_topic,
            "BSTREAM_APP_ID": s.app_id,
            "BSTREAM_PARTITIONS": str(self.partitions),
            "BSTREAM_HMAC_KEY": BENCH_KEY,
            "BSTREAM_DATA_DIR": str(data_dir),
        }


@dataclass(frozen=True)
class Sample:
    """One look at the worker: time (monotonic s), RSS bytes, CPU seconds, /metrics counters."""

    t: float
    rss: int
    cpu_s: float
    events: float
    predictions: float
    model_calls: float
    active_windows: float
    inference_threads: float = 0.0  # torch threads of the worker's latest model call


SAMPLED = {
    "bstream_events": "events",
    "bstream_predictions": "predictions",
    "bstream_inference_seconds": "model_calls",
    "bstream_active_windows": "active_windows",
    "bstream_inference_threads": "inference_threads",
}


def parse_metrics(text: str) -> dict[str, float]:
    """The sampled series from Prometheus text: counters summed over labels, histogram counts."""
    found = dict.fromkeys(SAMPLED.values(), 0.0)
    for family in text_string_to_metric_families(text):
        name = SAMPLED.get(family.name)
        if name is None:
            continue
        for sample in family.samples:
            if sample.name in (family.name, f"{family.name}_total", f"{family.name}_count"):
                found[name] += sample.value
    return found


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class WorkerProc:
    """A real `bstream worker` subprocess with a background sampler (RSS via psutil, /metrics)."""

    def __init__(
        self, dep: Deployment, bundle: Path, workdir: Path, name: str, args: list[str]
    ) -> None:
        self.dep, self.bundle, self.args = dep, bundle, args
        self.log_path = workdir / f"{name}.log"
        self.data_dir = workdir / f"{name}-data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> WorkerProc:
        cmd = [
            str(BSTREAM),
            "worker",
            "--model",
            str(self.bundle),
            "--metrics-port",
            str(self.port),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, *self.args],
                env=self.dep.env(self.data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        return self

    def last_log_line(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(empty log)"

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 180.0) -> WorkerProc:
        """Block until /health is 200; BenchError with the log tail if the worker dies or stalls."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                assert self.proc is not None
                raise BenchError(
                    f"worker exited with code {self.proc.returncode} during start: "
                    f"{self.last_log_line()} (log: {self.log_path})"
                )
            with contextlib.suppress(OSError):
                if self._get("/health")[0] == 200:
                    return self
            time.sleep(0.2)
        raise BenchError(
            f"worker not ready after {timeout:.0f}s: {self.last_log_line()} (log: {self.log_path})"
        )

    def sample(self) -> Sample:
        """Look at the worker now."""
        assert self.proc is not None
        proc = psutil.Process(self.proc.pid)
        rss, cpu = proc.memory_info().rss, proc.cpu_times()
        values = parse_metrics(self._get("/metrics")[1])
        return Sample(time.monotonic(), rss, cpu.user + cpu.system, **values)

    def start_sampling(self, interval: float = 0.25) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                with contextlib.suppress(OSError, psutil.Error):
                    self.samples.append(self.sample())

        self.samples.append(self.sample())
        self._sampler = threading.Thread(target=loop, name="bench-sampler", daemon=True)
        self._sampler.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop sampling, then SIGTERM the worker (SIGKILL if it does not stop in time)."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> WorkerProc:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
