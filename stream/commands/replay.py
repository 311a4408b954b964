"""`bstream replay PATH --format ...`: send a file's events to the events topic, keyed by user id.

Exit status: 0 when every row read was handled (valid rows acknowledged; invalid rows are
reported, and sent too with --send-invalid); 1 when a delivery failed, the file is missing or
has no rows (an empty file is almost always a mistake in a pipeline), or the broker or topic is
missing; 130 when interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

import click

from schemas.formats import FORMAT_NAMES, FormatError
from stream.commands import checks
from stream.commands.common import bootstrap_option, env_default, load_settings
from stream.kafka import PARTITIONERS, KafkaUnavailable, Partitioner, require_topic
from stream.replay import ReplayOptions, exit_problem, format_summary, replay_file


@click.command(
    help="Replay an event file (jsonl, taobao, rees46) onto the events topic, keyed by user id.",
    epilog="Exit status: 0 when every valid row was delivered (invalid rows are listed); "
    "1 on delivery failures, a missing or empty file, or a missing broker or topic; "
    "130 when interrupted.",
)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_NAMES),
    default="jsonl",
    show_default=True,
    help="Format of PATH.",
)
@bootstrap_option
@click.option("--topic", default=None, help=f"Target topic  {env_default('events_topic')}")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second.")
@click.option(
    "--speedup",
    type=click.FloatRange(min=0, min_open=True),
    help="Event-time replay, X times faster than recorded.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N records.")
@click.option(
    "--partitioner",
    type=click.Choice(list(PARTITIONERS)),
    default="murmur2",
    show_default=True,
    help="murmur2 (Java/aiokafka/Faust) or librdkafka's default (CRC32).",
)
@click.option(
    "--idempotence/--no-idempotence",
    default=False,
    show_default=True,
    help="Idempotent producer (no retry duplicates); default keeps order with 1 request in flight.",
)
@click.option(
    "--send-invalid", is_flag=True, help="Send rows that fail validation too (raw bytes)."
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar  [default: on a terminal]"
)
def replay(
    path: Path,
    fmt: str,
    bootstrap: str | None,
    topic: str | None,
    rate: float | None,
    speedup: float | None,
    limit: int | None,
    partitioner: str,
    idempotence: bool,
    send_invalid: bool,
    progress: bool | None,
) -> None:
    if rate and speedup:
        raise click.UsageError("give either --rate or --speedup, not both")
    if not path.is_file():
        raise click.ClickException(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise click.ClickException(f"nothing to replay: {path} is empty")
    if not send_invalid:
        checks.format_matches(path, fmt, strict=False)
    settings = load_settings(bootstrap=bootstrap)
    options = ReplayOptions(
        topic=topic or settings.events_topic,
        rate=rate,
        speedup=speedup,
        limit=limit,
        partitioner=cast(Partitioner, partitioner),
        idempotent=idempotence,
        send_invalid=send_invalid,
        progress=progress,
    )
    try:
        require_topic(settings, options.topic)
        summary = replay_file(path, fmt, settings, options)
    except (FormatError, KafkaUnavailable, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in format_summary(summary, send_invalid):
        click.echo(line)
    problem = exit_problem(summary, path)
    everything_invalid = summary.invalid and summary.invalid == summary.rows - summary.skipped
    if not problem and everything_invalid and not send_invalid:
        # Every row was invalid: almost always the wrong --format, not bad data.
        problem = checks.wrong_format_message(path, fmt, summary.invalid).replace(
            "none of the first", "none of the"
        )
    if summary.interrupted:
        click.echo("interrupted", err=True)
        sys.exit(130)
    if problem:
        raise click.ClickException(problem)
