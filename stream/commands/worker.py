"""`bstream worker`: load the model, make sure the topics exist, run the Faust stream worker."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from stream.commands.common import bootstrap_option, load_settings
from stream.settings import Settings

log = logging.getLogger("bstream.worker")


def _ensure_topics(settings: Settings) -> int:
    """Create missing topics; return the events topic's partition count (windows follow it)."""
    from stream.kafka import topic_partitions
    from stream.topics import create_topics, default_topics

    found = topic_partitions(settings, [settings.events_topic], timeout=10)
    partitions = found.get(settings.events_topic, settings.partitions)
    create_topics(settings, default_topics(settings, partitions))
    return partitions


def _load_model(settings: Settings) -> Any:
    """The registry's champion, else the --model bundle (stream/modelswap.py)."""
    if settings.model is None and not settings.registry:
        raise click.ClickException("no model bundle: pass --model DIR or set BSTREAM_MODEL")
    import torch

    from model.runtime import BundleError
    from stream.modelswap import startup_model

    # The event loop needs a core of its own: intra-op threads that take every core stall it.
    torch.set_num_threads(settings.torch_threads or max(1, (os.cpu_count() or 2) - 1))
    try:
        return startup_model(settings)
    except (BundleError, ValueError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None


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
    from stream.faultinject import maybe_inject
    from stream.kafka import KafkaUnavailable
    from stream.modelswap import ModelSwapper, install_swapper

    swapper = ModelSwapper(
        settings,
        worker,
        metrics,
        startup,
        wrap=lambda model: maybe_inject(model, settings.fault_inject_item),
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
    import faust

    from stream import highwater, logthrottle, rejoin
    from stream.app import create_app
    from stream.erasure import install_erasure
    from stream.faultinject import maybe_inject
    from stream.kafka import KafkaUnavailable
    from stream.metrics import Metrics, serve
    from stream.privacy import PrivacyError, pseudonymizer_from_settings
    from stream.quality import install_quality
    from stream.upkeep import install_timers
    from stream.worker import StreamWorker

    try:
        pseudonymizer = pseudonymizer_from_settings(settings)
    except PrivacyError as exc:
        raise click.ClickException(str(exc)) from None
    startup = _load_model(settings)
    runtime = startup.runtime
    try:
        partitions = _ensure_topics(settings)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    metrics = Metrics(process=True)
    metrics.set_health(model_loaded=True, model_version=runtime.version, broker_up=True)
    try:
        server = serve(metrics, settings.metrics_port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on port {settings.metrics_port}: {exc.strerror}"
        ) from None
    sapp = create_app(settings, partitions)
    highwater.install(sapp.app.consumer, settings)
    model = maybe_inject(runtime, settings.fault_inject_item)  # test-only hook; off by default
    worker = StreamWorker(
        settings, sapp, model, pseudonymizer, metrics, _explainer(settings, runtime)
    )

    async def consume(stream: Any) -> None:
        await worker.consume(stream)

    sapp.app.agent(sapp.events, name="bstream.consume")(consume)
    swapper = _swapper(settings, sapp, worker, metrics, startup)
    assert worker.publisher is not None
    quality = install_quality(
        sapp, settings, metrics, worker.publisher, runtime, pseudonymizer.key_id
    )
    worker.quality = quality
    install_timers(sapp, settings, metrics, worker.next_offset, worker.publisher)
    rejoin.install(
        sapp.app,
        worker.next_offset,
        sapp.events.get_topic_name(),
        sapp.windows.changelog_topic.get_topic_name(),
        rejoin.topic_checker(settings),
    )
    try:
        eraser = install_erasure(sapp, settings, pseudonymizer, metrics, worker.publisher)
        eraser.quality = quality  # erasure removes pending outcomes too
    except KafkaUnavailable as exc:
        server.shutdown()
        raise click.ClickException(str(exc)) from None
    line = startup_line(settings, runtime, partitions, pseudonymizer.key_id, server.server_port)
    click.echo(line, err=True)
    logthrottle.install()  # a broker outage: a few clear lines, not ~60 client errors a second
    try:
        faust.Worker(sapp.app, loglevel=loglevel, quiet=True).execute_from_commandline()
    finally:
        if swapper is not None:
            swapper.close()
        eraser.close()
        server.shutdown()
        worker.executor.shutdown(wait=False, cancel_futures=True)


@click.command(
    help="Run the stream worker: events -> rolling windows -> batched model -> predictions."
)
@bootstrap_option
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    help="Model bundle directory  [$BSTREAM_MODEL]",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Inference device  [auto]"
)
@click.option(
    "--quantize", is_flag=True, default=None, help="int8 dynamic quantization on the CPU."
)
@click.option("--max-batch", type=click.IntRange(min=1), help="Most events per micro-batch  [256]")
@click.option(
    "--max-delay-ms", type=click.IntRange(min=1), help="Longest wait to fill a batch  [200]"
)
@click.option("--window-size", type=click.IntRange(min=1), help="Events kept per user  [50]")
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), help="/metrics and /health port  [9464]"
)
@click.option("--store", help="Faust table store: memory:// or rocksdb://  [memory://]")
@click.option(
    "--partitions", type=click.IntRange(min=1), help="Partitions for topics it creates  [4]"
)
@click.option(
    "--hmac-key-file",
    type=click.Path(path_type=Path),
    help="File holding the pseudonymisation key.",
)
@click.option(
    "--allow-raw-ids", is_flag=True, default=None, help="Run without a key: users stay raw ids."
)
@click.option(
    "--naive", is_flag=True, default=None, help="Baseline: one table write + inference per event."
)
@click.option(
    "--outcomes/--no-outcomes",
    default=None,
    help="Label predictions from later events, publish outcomes, live metrics  [on]",
)
@click.option(
    "--explain",
    type=click.Choice(["off", "all", "top-scores", "sample-rate"]),
    help="Attach reasons to predictions: for all, scores >= explain_min_score, or a sample  [off]",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info"
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
