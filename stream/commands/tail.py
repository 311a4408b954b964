"""`bstream tail`: print predictions as they arrive (one line each, or raw JSON)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click
import orjson

from schemas.validation import validate_prediction
from stream.commands.common import bootstrap_option, env_default, load_settings
from stream.kafka import KafkaUnavailable, require_topic
from stream.kafka.clients import Start, assigned_reader


def format_prediction(prediction: dict[str, Any]) -> str:
    """One human-readable line: user, purchase score, window size, latency, newest event time."""
    scores = prediction.get("scores", {})
    others = " ".join(f"{k}={v:.3f}" for k, v in sorted(scores.items()) if k != "purchase")
    latency = prediction.get("latency_ms")
    last = datetime.fromtimestamp(prediction["last_event_ts"] / 1000, UTC)
    parts = [
        f"user={prediction['user']}",
        f"purchase={scores['purchase']:.3f}",
        others,
        f"window={prediction['window_size']}",
        f"latency={latency:.0f}ms" if latency is not None else "",
        f"last_event={last:%Y-%m-%dT%H:%M:%S}Z",
        f"model={prediction['model_version']}",
    ]
    return " ".join(part for part in parts if part)


@click.command(help="Print predictions as they arrive.")
@bootstrap_option
@click.option(
    "--topic", default=None, help=f"Predictions topic  {env_default('predictions_topic')}"
)
@click.option("--limit", type=click.IntRange(min=1), help="Exit after N predictions.")
@click.option("--json", "as_json", is_flag=True, help="Print each prediction as raw JSON.")
@click.option(
    "--from-beginning/--latest",
    default=False,
    show_default=True,
    help="Start at the oldest prediction, or only show new ones.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Exit after S seconds without a new prediction (non-zero if --limit was not reached).",
)
def tail(
    bootstrap: str | None,
    topic: str | None,
    limit: int | None,
    as_json: bool,
    from_beginning: bool,
    timeout: float | None,
) -> None:
    settings = load_settings(bootstrap=bootstrap)
    topic = topic or settings.predictions_topic
    try:
        partitions = require_topic(settings, topic)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        # no group to join (fast start), nothing committed; "latest" is fixed before we report ready
        position: Start = "beginning" if from_beginning else "end"
        consumer = assigned_reader(settings, topic, "bstream-tail", position)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    start = "the beginning" if from_beginning else "new predictions"
    click.echo(f"tailing {topic} ({partitions} partitions) from {start}", err=True)
    shown, idle_since = 0, time.monotonic()
    try:
        while limit is None or shown < limit:
            if timeout is not None and time.monotonic() - idle_since > timeout:
                if limit is not None:
                    raise click.ClickException(
                        f"timed out: {shown} of {limit} predictions after {timeout:g}s idle"
                    )
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                click.echo(f"warning: {message.error().str()}", err=True)
                continue
            idle_since = time.monotonic()
            shown += _show(message.value(), as_json)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _show(value: bytes | None, as_json: bool) -> int:
    """Print one record; returns 1 when it was a valid prediction, else warns and returns 0."""
    try:
        prediction = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        click.echo("warning: skipped a record that is not JSON", err=True)
        return 0
    invalid = validate_prediction(prediction)
    if invalid is not None:
        click.echo(
            f"warning: skipped an invalid prediction ({invalid.code}: {invalid.message})", err=True
        )
        return 0
    click.echo(value.decode() if as_json and value else format_prediction(prediction))
    return 1
