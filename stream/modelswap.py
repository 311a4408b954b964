"""Hot reload: follow the registry topic, load announced bundles off the event loop, swap them in.

A worker starts on the registry's champion (its --model bundle is the fallback), then polls the
models topic on a Faust timer. A new champion is loaded on a thread of its own (sha256 of model.ts
checked against the announcement, labels and window checked, then `Runtime.load`, which warms every
length bucket up) while the old model keeps serving. The swap itself is one assignment on the event
loop: `Inference.start` takes the model once per batch, so the batches whose calls have started
(one running, at most one queued) finish on the old model and the next is the first on the new
one. Nothing is re-consumed or skipped, and each partition's predictions change version once, in
batch order. A failed load or warm-up leaves
the old model serving: one log line, `bstream_model_swaps_total{outcome="failed"}` and the error in
/health (`lifecycle`). The old model is dropped and collected after the swap.

A challenger is loaded the same way and scores a share of the champion's batches in shadow
(`ShadowScorer`): its predictions go to the shadow topic only, after the champion's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from stream.intake import Target, model_inputs
from stream.kafka import KafkaUnavailable
from stream.metrics import Metrics
from stream.outputs import OutRecord, build_prediction, encode_prediction
from stream.registry import (
    CHALLENGER,
    CHAMPION,
    Announcement,
    RegistryReader,
    RegistryWriter,
    now_ms,
    read_state,
    worker_key,
    worker_status,
)
from stream.settings import Settings

log = logging.getLogger("bstream.modelswap")
FREE_TICKS = 3  # ticks after a swap before collecting: the batch in flight may hold the old model


class LoadFailed(RuntimeError):
    """An announced bundle that cannot serve here (sha256, labels, window, load or warm-up)."""


def load_announced(made: Announcement, settings: Settings, labels: list[str] | None) -> Any:
    """Check the announcement against the files, then load and warm the bundle up."""
    from model.bundle import MODEL_FILE, BundleError, sha256_file
    from model.runtime import Runtime

    path = made.path
    try:
        digest = sha256_file(path / MODEL_FILE)
    except OSError as exc:
        raise LoadFailed(f"cannot read {path / MODEL_FILE}: {exc.strerror}") from None
    if digest != made.sha256:
        raise LoadFailed(f"sha256 mismatch for {path / MODEL_FILE}: announced {made.sha256[:12]}")
    if labels is not None and sorted(made.labels) != sorted(labels):
        raise LoadFailed(f"labels {made.labels} differ from the running model's {labels}")
    if made.window > settings.window_size:
        raise LoadFailed(f"window {made.window} > window_size {settings.window_size}")
    try:
        runtime = Runtime.load(
            path, settings.device, settings.quantize, chunk_rows=settings.model_chunk
        )
    except (BundleError, ValueError, OSError) as exc:
        raise LoadFailed(str(exc).splitlines()[0]) from None
    if runtime.version != made.version:
        raise LoadFailed(f"bundle is {runtime.version}, announced as {made.version}")
    return runtime


@dataclass
class Startup:
    """Which bundle the worker started on, and why."""

    runtime: Any
    announcement: Announcement | None  # the registry champion it runs (None: the --model bundle)
    error: str | None = None  # why the registry champion was not used
    failed: Announcement | None = None  # the registry champion that did not load


def startup_model(settings: Settings) -> Startup:
    """The registry's champion if it loads, else the --model bundle (BundleError/ValueError)."""
    from model.runtime import Runtime

    champion, error, failed = None, None, None
    if settings.registry:
        try:
            champion = read_state(settings, timeout=10).champion
        except KafkaUnavailable as exc:
            error = f"registry not read: {exc}"
    if champion is not None:
        try:
            return Startup(load_announced(champion, settings, None), champion)
        except LoadFailed as exc:
            error, failed = f"champion {champion.version} not loaded: {exc}", champion
    if error:
        log.error("%s; starting on the --model bundle", error)
    if settings.model is None:
        raise ValueError(
            "no model bundle: pass --model DIR or set BSTREAM_MODEL (or promote a champion)"
        )
    runtime = Runtime.load(
        settings.model, settings.device, settings.quantize, chunk_rows=settings.model_chunk
    )
    return Startup(runtime, None, error, failed)


class ShadowScorer:
    """A challenger: scores a share of the champion's batches; publishes to the shadow topic."""

    def __init__(self, model: Any, share: float, counter: Any, failures: Any) -> None:
        self.model, self.share = model, share
        self.version: str = model.version
        self.rng = random.Random()
        self.counter, self.failures = counter, failures

    async def publish(self, worker: Any, job: Any) -> list[Awaitable[Any]]:
        """Score the batch (on the inference thread, after the champion) and hand it over.

        With outcomes on, the shadow predictions are remembered like the champion's (by their
        model_version), so they get outcomes and online metrics of their own; the drift monitor
        stays the champion's.
        """
        if self.share < 1.0 and self.rng.random() >= self.share:
            return []
        targets: list[Target] = job.targets
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(
                worker.executor, self.model.predict, model_inputs(targets)
            )
            stamp, mono = now_ms(), time.monotonic()
            records = [
                OutRecord(
                    target.key,
                    encode_prediction(
                        build_prediction(
                            target.key.decode(),
                            worker.pseudo.key_id,
                            score,
                            self.version,
                            target.window,
                            latency_ms=(mono - target.arrival) * 1000,
                            now_ms=stamp,
                        )
                    ),
                )
                for target, score in zip(targets, scores, strict=True)
            ]
        except Exception as exc:  # noqa: BLE001 - a failing challenger never costs the champion
            self.failures.inc()
            log.warning(
                "shadow %s failed on a batch: %s: %s", self.version, type(exc).__name__, exc
            )
            return []
        self.counter.labels(model_version=self.version).inc(len(records))
        acks: list[Awaitable[Any]] = await worker.publisher.enqueue(
            worker.settings.shadow_topic, records
        )
        quality = getattr(worker, "quality", None)
        if quality is not None:
            drift, quality.drift = quality.drift, None  # the score drift is the champion's
            try:
                acks += await quality.on_job(job, records)
            finally:
                if quality.drift is None:  # unless a swap installed the new champion's meanwhile
                    quality.drift = drift
        return acks


@dataclass
class Loading:
    role: str
    made: Announcement
    future: Future[Any]
    started: float = field(default_factory=time.monotonic)


class ModelSwapper:
    """Follows the registry; swaps the worker's champion and shadow challenger."""

    def __init__(
        self,
        settings: Settings,
        worker: Any,
        metrics: Metrics,
        startup: Startup,
        wrap: Callable[[Any], Any] = lambda model: model,
        explainer: Callable[[Any], Any] | None = None,
    ) -> None:
        self.settings, self.worker, self.metrics, self.wrap = settings, worker, metrics, wrap
        self.explainer = explainer
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.runtime: Any = startup.runtime  # the champion served (not the replaced one)
        self.quality_synced = startup.announcement is None  # --model: install_quality's facts
        self.champion: Announcement | None = startup.announcement
        self.champion_version: str = startup.runtime.version
        self.labels: list[str] = list(startup.runtime.labels)
        self.challenger: Announcement | None = None
        self.error: str | None = startup.error
        # the champion that failed at start is not retried until announced again
        self.tried = {_ident(startup.failed)} if startup.failed else set()
        self.loading: Loading | None = None
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bstream-load")
        self.free_in = 0
        r = metrics.registry
        self.swaps = Counter(
            "bstream_model_swaps_total",
            "Model hot swaps by role and outcome",
            ["role", "outcome"],
            registry=r,
        )
        for role in (CHAMPION, CHALLENGER):
            for outcome in ("ok", "failed"):
                self.swaps.labels(role=role, outcome=outcome)
        self.load_seconds = Gauge(
            "bstream_model_load_seconds", "Load + warm-up time of the last swap", registry=r
        )
        self.info = Gauge(
            "bstream_model_info", "1 for each model served", ["role", "model_version"], registry=r
        )
        self.info.labels(role=CHAMPION, model_version=self.champion_version).set(1)
        self.shadow_predictions = Counter(
            "bstream_shadow_predictions_total",
            "Challenger predictions published to the shadow topic",
            ["model_version"],
            registry=r,
        )
        self.shadow_failures = Counter(
            "bstream_shadow_failures_total", "Challenger batches that failed", registry=r
        )
        self.reader: RegistryReader | None = None
        self.writer: RegistryWriter | None = None
        self._health()

    # -- the timer -------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect to the registry (the models topic exists by now) and publish our status.

        Blocking (metadata and end offsets): called once before the worker runs.
        """
        self.reader = RegistryReader(self.settings)
        self.reader.catch_up(10)
        self.writer = RegistryWriter(self.settings)
        self.publish_status()

    def tick(self) -> None:
        """Poll the registry; finish or start a load; collect a replaced model."""
        if self.reader is None:
            self.open()
        assert self.reader is not None
        if not self.quality_synced:
            self._sync_quality()
        self.reader.poll(0)
        if self.free_in > 0:
            self.free_in -= 1
            if self.free_in == 0:
                _release_memory()
        if self.loading is not None:
            if self.loading.future.done():
                self._finish(self.loading)
                self.loading = None
            return
        self._start_next()

    def _start_next(self) -> None:
        assert self.reader is not None
        state = self.reader.state
        wanted = state.champion
        if wanted is not None and not self._runs(wanted) and _ident(wanted) not in self.tried:
            self._load(CHAMPION, wanted)
            return
        wanted = state.challenger
        if wanted is None and self.challenger is not None:
            self._retire()
        elif wanted is not None and wanted.role == CHALLENGER:
            current = self.challenger
            same = current is not None and _ident(current) == _ident(wanted)
            if not same and _ident(wanted) not in self.tried:
                if wanted.version == self.champion_version:
                    self.tried.add(_ident(wanted))  # the champion itself: nothing to shadow
                    return
                self._load(CHALLENGER, wanted)

    def _runs(self, made: Announcement) -> bool:
        running = self.champion
        if running is not None:
            return running.version == made.version and running.sha256 == made.sha256
        return made.version == self.champion_version

    def _load(self, role: str, made: Announcement) -> None:
        self.tried.add(_ident(made))
        log.info("loading %s %s from %s", role, made.version, made.location)
        future = self.loader.submit(load_announced, made, self.settings, self.labels)
        self.loading = Loading(role, made, future)

    def _finish(self, loading: Loading) -> None:
        made, role = loading.made, loading.role
        try:
            runtime = loading.future.result()
        except Exception as exc:  # noqa: BLE001 - whatever failed, the old model keeps serving
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.error = f"{role} {made.version}: {reason}"
            self.swaps.labels(role=role, outcome="failed").inc()
            log.error(
                "model swap failed, keeping %s: %s %s: %s",
                self.champion_version,
                role,
                made.version,
                reason,
            )
            self._health()
            self.publish_status()
            return
        seconds = time.monotonic() - loading.started
        self.load_seconds.set(seconds)
        if role == CHAMPION:
            self._swap_champion(made, runtime, seconds)
        else:
            self._swap_challenger(made, runtime, seconds)
        self.error = None
        self.swaps.labels(role=role, outcome="ok").inc()
        self.free_in = FREE_TICKS
        self._health()
        self.publish_status()

    def _swap_champion(self, made: Announcement, runtime: Any, seconds: float) -> None:
        old = self.champion_version
        worker = self.worker
        worker.inference.model = self.wrap(runtime)  # the next batch to start is the first on it
        if worker.inference.explainer is not None and self.explainer is not None:
            worker.inference.explainer = self.explainer(runtime)
        self.champion, self.champion_version = made, runtime.version
        self.runtime = runtime
        self._sync_quality()
        self.info.labels(role=CHAMPION, model_version=old).set(0)
        self.info.labels(role=CHAMPION, model_version=runtime.version).set(1)
        self.metrics.set_health(model_version=runtime.version)
        log.info(
            "model swapped: %s -> %s (loaded and warmed up in %.1f s)", old, made.version, seconds
        )
        if self.challenger is not None and self.challenger.version == made.version:
            self._retire()  # a promoted challenger stops shadowing itself

    def _sync_quality(self) -> None:
        """Point the outcomes/quality hook (issue 13) at the served champion's bundle facts."""
        quality = getattr(self.worker, "quality", None)
        if quality is None:
            return
        from model.drift import DriftMonitor, load_reference
        from stream.quality import bundle_facts

        quality.version = self.runtime.version
        quality.horizon_ms, offline = bundle_facts(self.runtime, self.settings)
        if offline is not None:
            quality.gauges.offline_pr_auc.labels(model_version=self.runtime.version).set(offline)
        path = self.champion.path if self.champion is not None else self.settings.model
        reference = load_reference(path) if path is not None else None
        window = self.settings.quality_window
        quality.drift = DriftMonitor(reference, window) if reference else None
        self.quality_synced = True

    def _swap_challenger(self, made: Announcement, runtime: Any, seconds: float) -> None:
        if self.challenger is not None:
            self.info.labels(role=CHALLENGER, model_version=self.challenger.version).set(0)
        share = made.share if made.share is not None else self.settings.shadow_share
        self.worker.shadow = ShadowScorer(
            runtime, share, self.shadow_predictions, self.shadow_failures
        )
        self.challenger = made
        self.info.labels(role=CHALLENGER, model_version=made.version).set(1)
        log.info(
            "challenger %s scoring %.0f%% of batches in shadow (loaded in %.1f s)",
            made.version,
            share * 100,
            seconds,
        )

    def _retire(self) -> None:
        if self.challenger is not None:
            self.info.labels(role=CHALLENGER, model_version=self.challenger.version).set(0)
            log.info("challenger %s retired", self.challenger.version)
        self.worker.shadow = None
        self.challenger = None
        self.free_in = FREE_TICKS
        self._health()
        self.publish_status()

    # -- reporting -------------------------------------------------------------------------------

    def details(self) -> dict[str, Any]:
        return {
            "champion": self.champion_version,
            "from_registry": self.champion is not None,
            "challenger": self.challenger.version if self.challenger else None,
            "loading": self.loading.made.version if self.loading else None,
            "last_error": self.error,
        }

    def _health(self) -> None:
        self.metrics.set_health(lifecycle=self.details())

    def publish_status(self) -> None:
        if self.writer is None:
            return
        challenger = self.challenger.version if self.challenger else None
        value = worker_status(
            self.settings.app_id,
            self.worker_id,
            self.champion_version,
            challenger,
            self.error,
            now_ms(),
        )
        try:
            self.writer.send_nowait(worker_key(self.settings.app_id, self.worker_id), value)
        except Exception as exc:  # noqa: BLE001 - a status record is best effort
            log.warning("worker status not published: %s", exc)

    def close(self) -> None:
        """Remove our status record, stop loading, close the clients."""
        self.loader.shutdown(wait=False, cancel_futures=True)
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.send_nowait(worker_key(self.settings.app_id, self.worker_id), None)
                self.writer.flush(5)
        if self.reader is not None:
            self.reader.close()


def _ident(made: Announcement) -> tuple[str, str, str, int]:
    return (made.role, made.version, made.sha256, made.promoted_at)


def _release_memory() -> None:
    """Collect the replaced model and hand freed heap pages back to the OS (glibc)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def install_swapper(sapp: Any, settings: Settings, swapper: ModelSwapper) -> None:
    """Run the swapper on a Faust timer (it never blocks the loop: loads run on a thread)."""

    @sapp.app.timer(settings.registry_poll_s, name="bstream.registry")
    async def registry() -> None:
        try:
            swapper.tick()
        except Exception as exc:  # noqa: BLE001 - e.g. a broker outage: retried on the next tick
            log.warning("registry step failed, will retry: %s: %s", type(exc).__name__, exc)
