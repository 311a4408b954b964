"""`bstream worker`: load the model, make sure the topics exist, run the Faust stream worker."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import click

from stream.commands import checks
from stream.commands.common import bootstrap_option, env_default, load_settings
from stream.settings import Settings

log = logging.getLogger("bstream.worker")


def _ensure_topics(settings: Settings) -> int:
    """Create missing topics; return the events topic's partition count (windows follow it)."""
    from stream.kafka import topic_partitions
    from stream.kafka.topics import create_topics, default_topics

    found = topic_partitions(settings, [settings.events_topic], timeout=10)
    partitions = found.get(settings.events_topic, settings.partitions)
    create_topics(settings, default_topics(settings, partitions))
    return partitions


def _load_model(settings: Settings) -> Any:
    import torch

    from model.runtime import BundleError
    from stream.modelswap import startup_model

    # Warm up on every core; stream.threads then sets the count per batch on the inference thread.
    torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
    try:
        return startup_model(settings)
    except (BundleError, ValueError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None


STORE_SCHEMES = ("memory://", "rocksdb://")


def preflight(settings: Settings) -> Any:
    """Every check that needs no heavy import (faust, torch): key, bundle, store, broker.

    Returns the pseudonymizer; a wrong argument costs well under a second this way.
    """
    from stream.kafka import KafkaUnavailable, check_reachable
    from stream.privacy import PrivacyError, pseudonymizer_from_settings

    try:
        pseudonymizer = pseudonymizer_from_settings(settings)
    except PrivacyError as exc:
        raise click.ClickException(str(exc)) from None
    if settings.model is not None or not settings.registry:
        checks.bundle_dir(settings.model, "--model")  # else the registry's champion, if any
    if settings.model is not None:
        from model.bundle import BundleError, validate_bundle  # light: json and hashes only

        try:
            validate_bundle(settings.model)  # a truncated model.ts fails here, before Kafka
        except BundleError as exc:
            raise click.BadParameter(str(exc).splitlines()[0], param_hint="--model") from None
    if not settings.store.startswith(STORE_SCHEMES):
        raise click.BadParameter(
            f"{settings.store!r} is not a table store; give memory:// or rocksdb://",
            param_hint="--store / BSTREAM_STORE",
        )
    try:
        check_reachable(settings.bootstrap)
    except KafkaUnavailable as exc:
        if settings.model is None:  # nothing to serve: no bundle, and no registry to read one from
            raise click.UsageError(
                "no model bundle: pass --model DIR or set BSTREAM_MODEL "
                f"(the registry's champion cannot be read: {exc})"
            ) from None
        raise click.ClickException(f"{exc}; start a broker or pass --bootstrap HOST:PORT") from None
    return pseudonymizer


def startup_line(
    settings: Settings, runtime: Any, partitions: int, key_id: str | None, port: int
) -> str:
    """The one line the worker prints at start: what runs where (never a secret)."""
    mode = "naive (no batching)" if settings.naive else f"max_batch={settings.max_batch}"
    ids = "RAW user ids (--allow-raw-ids)" if key_id is None else f"pseudonyms key_id={key_id}"
    explain = "" if settings.explain == "off" else f", explain={settings.explain}"
    return (
        f"bstream worker: model {runtime.version} on {runtime.device}, {partitions} partitions, "
        f"{mode}, {ids}{explain}, metrics http://127.0.0.1:{port}/metrics"
    )


def _explainer(settings: Settings, runtime: Any) -> Any:
    """The batched explainer behind --explain (None when off)."""
    if settings.explain == "off":
        return None
    from model.explain import Explainer

    return Explainer(runtime)


def _swapper(settings: Settings, sapp: Any, worker: Any, metrics: Any, startup: Any) -> Any:
    """Hot reload from the registry topic (None with BSTREAM_REGISTRY=false)."""
    if not settings.registry:
        return None
    from stream.kafka import KafkaUnavailable
    from stream.modelswap import ModelSwapper, install_swapper
    from stream.threads import AdaptiveThreads

    swapper = ModelSwapper(
        settings,
        worker,
        metrics,
        startup,
        wrap=lambda model: AdaptiveThreads(
            model,
            fixed=settings.torch_threads,
            on_change=metrics.threads.set,
            on_call=metrics.model_busy.inc,
        ),
        explainer=lambda model: _explainer(settings, model),
    )
    try:
        swapper.open()
    except KafkaUnavailable as exc:
        log.warning("registry not followed yet (retried on the timer): %s", exc)
    install_swapper(sapp, settings, swapper)
    return swapper


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Build everything from settings and run until SIGTERM/SIGINT."""
    from stream.metrics import Metrics, serve
    from stream.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before anything loads torch (stream/threads.py says why)

    pseudonymizer = preflight(settings)
    metrics = Metrics(process=True)
    # Bound before the slow imports: a busy port is an argument error, reported in a second.
    metrics.set_health(instance_id=settings.instance_id or uuid.uuid4().hex, pid=os.getpid())
    try:
        server = serve(metrics, settings.metrics_port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on port {settings.metrics_port}: {exc.strerror} "
            "(pass --metrics-port, 0 for any free port)"
        ) from None
    try:
        _run(settings, loglevel, pseudonymizer, metrics, server)
    finally:
        server.shutdown()


def _run(settings: Settings, loglevel: str, pseudonymizer: Any, metrics: Any, server: Any) -> None:
    from stream import logthrottle
    from stream.erasure import install_erasure
    from stream.inference import Inference
    from stream.kafka import KafkaUnavailable, highwater, recovery, rejoin
    from stream.kafka.app import WINDOWS_TABLE, create_app, open_store, run_app
    from stream.kafka.publish import Publisher
    from stream.kafka.store import WindowStore
    from stream.online_metrics import import_in_background
    from stream.quality import install_quality
    from stream.threads import AdaptiveThreads
    from stream.upkeep import install_timers
    from stream.worker import StreamWorker

    startup = _load_model(settings)
    runtime = startup.runtime
    try:
        partitions = _ensure_topics(settings)
        changelog = f"{settings.app_id}-{WINDOWS_TABLE}-changelog"
        rejoin.reset_offsets_without_state(settings, changelog)  # a broker that lost our data
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    metrics.set_health(model_loaded=True, model_version=runtime.version, broker_up=True)
    sapp = create_app(settings, partitions)
    highwater.install(sapp.app.consumer, settings)
    model = AdaptiveThreads(
        runtime,
        fixed=settings.torch_threads,
        on_change=metrics.threads.set,
        on_call=metrics.model_busy.inc,
    )
    publisher = Publisher(sapp.app)
    store = open_store(WindowStore, sapp.windows, settings, publisher)
    inference = Inference(
        settings, metrics, model, pseudonymizer.key_id, _explainer(settings, runtime)
    )
    worker = StreamWorker(
        settings, store, publisher, inference, pseudonymizer, metrics, sapp.app.crash
    )

    async def consume(stream: Any) -> None:
        await worker.consume(stream)

    sapp.app.agent(sapp.events, name="bstream.consume")(consume)
    swapper = _swapper(settings, sapp, worker, metrics, startup)
    quality = install_quality(sapp, settings, metrics, publisher, runtime, pseudonymizer.key_id)
    worker.quality = quality
    state = rejoin.StateCheck(sapp.app, store.changelog_topic, rejoin.topic_checker(settings))
    worker.broker_checked = state.verified
    install_timers(sapp, settings, metrics, worker.next_offset, store, state)
    rejoin.install(sapp.app, worker.next_offset, sapp.events.get_topic_name(), state)
    recovery.install(
        sapp.app,
        store.changelog_topic,
        metrics,
        settings.recovery_stall_s,
        settings.recovery_stall_action,
    )
    try:
        eraser = install_erasure(sapp, settings, pseudonymizer, metrics, publisher, store)
        eraser.quality = quality  # erasure removes pending outcomes too
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    line = startup_line(settings, runtime, partitions, pseudonymizer.key_id, server.server_port)
    click.echo(line, err=True)
    logthrottle.install()  # a broker outage: a few clear lines, not ~60 client errors a second
    import_in_background()  # scikit-learn, for online quality, while the group join waits
    try:
        run_app(sapp, loglevel)
    finally:
        if swapper is not None:
            swapper.close()
        eraser.close()
        inference.executor.shutdown(wait=False, cancel_futures=True)


@click.command(
    help="Run the stream worker: events -> rolling windows -> batched model -> predictions."
)
@bootstrap_option
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    help=f"Model bundle directory  {env_default('model')}",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    help=f"Inference device  {env_default('device')}",
)
@click.option(
    "--quantize",
    is_flag=True,
    default=None,
    help=f"int8 dynamic quantization on the CPU  {env_default('quantize')}",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    help=f"Most events per micro-batch  {env_default('max_batch')}",
)
@click.option(
    "--max-delay-ms",
    type=click.IntRange(min=1),
    help=f"Longest wait to fill a batch  {env_default('max_delay_ms')}",
)
@click.option(
    "--window-size",
    type=click.IntRange(min=1),
    help=f"Events kept per user  {env_default('window_size')}",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help=f"/metrics and /health port, 0 for any free port  {env_default('metrics_port')}",
)
@click.option(
    "--store",
    help=f"Faust table store: memory:// or rocksdb://  {env_default('store')}",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help=f"Partitions for topics it creates  {env_default('partitions')}",
)
@click.option(
    "--hmac-key-file",
    type=click.Path(path_type=Path),
    help=f"File holding the pseudonymisation key  {env_default('hmac_key_file')}",
)
@click.option(
    "--allow-raw-ids",
    is_flag=True,
    default=None,
    help=f"Run without a key: users stay raw ids  {env_default('allow_raw_ids')}",
)
@click.option(
    "--naive",
    is_flag=True,
    default=None,
    help=f"Baseline: one table write + inference per event  {env_default('naive')}",
)
@click.option(
    "--outcomes/--no-outcomes",
    default=None,
    help="Label predictions from later events, publish outcomes, live metrics  [on]",
)
@click.option(
    "--explain",
    type=click.Choice(["off", "all", "top-scores", "sample-rate"]),
    help="Attach reasons to predictions: for all, scores >= explain_min_score, or a sample  "
    + env_default("explain"),
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Faust worker log level.",
)
def worker(
    bootstrap: str | None,
    model_dir: Path | None,
    device: str | None,
    quantize: bool | None,
    max_batch: int | None,
    max_delay_ms: int | None,
    window_size: int | None,
    metrics_port: int | None,
    store: str | None,
    partitions: int | None,
    hmac_key_file: Path | None,
    allow_raw_ids: bool | None,
    naive: bool | None,
    outcomes: bool | None,
    explain: str | None,
    log_level: str,
) -> None:
    settings = load_settings(
        bootstrap=bootstrap,
        model=model_dir,
        device=device,
        quantize=quantize,
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        window_size=window_size,
        metrics_port=metrics_port,
        store=store,
        partitions=partitions,
        hmac_key_file=hmac_key_file,
        allow_raw_ids=allow_raw_ids,
        naive=naive,
        outcomes=outcomes,
        explain=explain,
    )
    run_worker(settings, loglevel=log_level)
