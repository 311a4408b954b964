"""`bstream topics create|list`: the events, predictions, DLQ and control topics."""

from __future__ import annotations

import click

from stream.commands.common import bootstrap_option, env_default, load_settings
from stream.kafka import KafkaUnavailable, topic_partitions
from stream.kafka.topics import create_topics, default_topics


@click.group(help="Manage the events, predictions, DLQ and control topics.")
def topics() -> None:
    pass


@topics.command(help="Create the topics; topics that already exist are left as they are.")
@bootstrap_option
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help=f"Partitions per topic  {env_default('partitions')}",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the broker.",
)
def create(bootstrap: str | None, partitions: int | None, timeout: float) -> None:
    settings = load_settings(bootstrap=bootstrap, partitions=partitions)
    specs = default_topics(settings)
    try:
        outcome = create_topics(settings, specs, timeout)
        counts = topic_partitions(settings, [s.name for s in specs], timeout)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    for spec in specs:
        found = counts.get(spec.name, spec.partitions)
        note = "" if found == spec.partitions else f" (asked for {spec.partitions}; not changed)"
        click.echo(f"{outcome[spec.name]:8} {spec.name}  partitions={found}{note}")


@topics.command(name="list", help="Show the project's topics and their partition counts.")
@bootstrap_option
def list_topics(bootstrap: str | None) -> None:
    settings = load_settings(bootstrap=bootstrap)
    names = [spec.name for spec in default_topics(settings)]
    try:
        counts = topic_partitions(settings, names)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    for name in names:
        click.echo(f"{name}  " + (f"partitions={counts[name]}" if name in counts else "missing"))
