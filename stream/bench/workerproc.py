"""`bstream worker` as a bench subprocess: isolated topics, readiness, sampled RSS and metrics."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families

from stream.kafka.topics import create_topics, default_topics
from stream.launcher import WorkerLauncher, WorkerStartError
from stream.settings import Settings

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
    model_busy_s: float = 0.0  # seconds the inference thread spent in model calls
    loop_cpu_s: float = 0.0  # CPU seconds of the main thread (the event loop)


SAMPLED = {
    "bstream_events": "events",
    "bstream_predictions": "predictions",
    "bstream_inference_seconds": "model_calls",
    "bstream_active_windows": "active_windows",
    "bstream_inference_threads": "inference_threads",
    "bstream_model_busy_seconds": "model_busy_s",
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


class WorkerProc(WorkerLauncher):
    """A real `bstream worker` subprocess with a background sampler (RSS via psutil, /metrics)."""

    def __init__(
        self,
        dep: Deployment,
        bundle: Path,
        workdir: Path,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.dep, self.bundle = dep, bundle
        self.data_dir = workdir / f"{name}-data"
        super().__init__(
            ["--model", str(bundle), *args],
            {**dep.env(self.data_dir), **(env or {})},
            workdir / f"{name}.log",
        )
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._sampler: threading.Thread | None = None

    def last_log_line(self) -> str:
        return self.last_error_line()

    def _get(self, path: str) -> tuple[int, str]:
        return self.get(path)

    def wait_ready(self, timeout: float = 180.0, poll: float = 0.2) -> WorkerProc:
        """Block until /health is 200; BenchError with the worker's error if it dies or stalls."""
        try:
            super().wait_ready(timeout, poll)
        except WorkerStartError as exc:
            raise BenchError(str(exc)) from None
        return self

    def partitions_assigned(self) -> int:
        """Events partitions this worker owns now (its /health)."""
        return int(orjson.loads(self._get("/health")[1]).get("partitions_assigned", 0))

    def sample(self) -> Sample:
        """Look at the worker now."""
        assert self.proc is not None
        proc = psutil.Process(self.proc.pid)
        rss, cpu = proc.memory_info().rss, proc.cpu_times()
        loop = next((t for t in proc.threads() if t.id == proc.pid), None)
        values = parse_metrics(self._get("/metrics")[1])
        loop_cpu = loop.user_time + loop.system_time if loop is not None else 0.0
        return Sample(time.monotonic(), rss, cpu.user + cpu.system, **values, loop_cpu_s=loop_cpu)

    def start_sampling(self, interval: float = 1.0) -> None:
        # Once a second: a sample renders the worker's /metrics (1-2 ms of its CPU, py-spy showed
        # ~1% of a core at 4 a second) and lists its threads, which the model's cores would pay.
        # Parts and phases take their own samples at their ends; these give RSS and threads.
        def loop() -> None:
            while not self._stop.wait(interval):
                if self._paused.is_set():
                    continue
                with contextlib.suppress(OSError, psutil.Error):
                    self.samples.append(self.sample())

        self.samples.append(self.sample())
        self._sampler = threading.Thread(target=loop, name="bench-sampler", daemon=True)
        self._sampler.start()

    def pause_sampling(self) -> None:
        """No samples (and no load from taking them) until resume_sampling."""
        self._paused.set()

    def resume_sampling(self) -> None:
        self._paused.clear()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop sampling, then SIGTERM the worker (SIGKILL if it does not stop in time)."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        return super().stop(timeout)

    def __enter__(self) -> WorkerProc:
        self.start()
        return self


def combined(samples: Sequence[Sample]) -> Sample:
    """Several workers seen as one: counts, RSS and CPU summed, the latest time, mean threads."""
    if len(samples) == 1:
        return samples[0]
    total = {name: sum(getattr(s, name) for s in samples) for name in SAMPLED.values()}
    total["inference_threads"] = total["inference_threads"] / len(samples)
    return Sample(
        max(s.t for s in samples),
        sum(s.rss for s in samples),
        sum(s.cpu_s for s in samples),
        **total,
        loop_cpu_s=sum(s.loop_cpu_s for s in samples),
    )


def settled(owned: Sequence[int], partitions: int) -> bool:
    """Every worker owns some partitions and together they own all of them.

    >>> settled([2, 2], 4), settled([4, 0], 4), settled([2, 1], 4)
    (True, False, False)
    """
    return all(n > 0 for n in owned) and sum(owned) == partitions


def wait_settled(procs: Sequence[WorkerProc], partitions: int, timeout: float = 180.0) -> None:
    """Block until the group's partitions are spread over every worker (two looks in a row)."""
    deadline, in_a_row = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            in_a_row = (
                in_a_row + 1 if settled([w.partitions_assigned() for w in procs], partitions) else 0
            )
        if in_a_row >= 2:
            return
        time.sleep(0.5)
    raise BenchError(
        f"{len(procs)} workers did not share the {partitions} partitions in {timeout:.0f} s"
    )


@contextlib.contextmanager
def workers(
    dep: Deployment,
    bundle: Path,
    workdir: Path,
    name: str,
    args: list[str],
    count: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[list[WorkerProc]]:
    """`count` ready workers of one deployment (one consumer group), stopped on exit."""
    names = [name] if count == 1 else [f"{name}-{i}" for i in range(count)]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(WorkerProc(dep, bundle, workdir, n, args, env)) for n in names]
        for proc in procs:
            proc.wait_ready()
        if count > 1:
            wait_settled(procs, dep.partitions)
        yield procs
