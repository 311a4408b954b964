"""`bstream promote` and `bstream models`: the model registry on the models topic."""

from __future__ import annotations

from pathlib import Path

import click

from stream.commands import checks
from stream.commands.common import bootstrap_option, load_settings
from stream.kafka import KafkaUnavailable


@click.command(help="Validate a bundle, then announce it as champion or challenger.")
@click.argument("bundle", required=False)
@bootstrap_option
@click.option(
    "--role",
    type=click.Choice(["champion", "challenger"]),
    default="champion",
    show_default=True,
    help="champion: every worker swaps to it; challenger: scored in shadow only.",
)
@click.option(
    "--rollback",
    is_flag=True,
    help="Re-announce the previous champion (with --role challenger: retire the challenger).",
)
@click.option("--sha256", "expect_sha256", help="Refuse unless model.ts has this sha256.")
@click.option(
    "--share",
    type=click.FloatRange(0, 1),
    default=None,
    help="Challenger: share of batches scored in shadow  [default: $BSTREAM_SHADOW_SHARE or 1.0]",
)
@click.option(
    "--window-size",
    type=click.IntRange(min=1),
    help="The workers' window size the bundle must fit  [default: $BSTREAM_WINDOW_SIZE or 50]",
)
def promote(
    bundle: str | None,
    bootstrap: str | None,
    role: str,
    rollback: bool,
    expect_sha256: str | None,
    share: float | None,
    window_size: int | None,
) -> None:
    from stream import lifecycle

    settings = load_settings(bootstrap=bootstrap, window_size=window_size)
    if rollback == (bundle is not None):
        raise click.UsageError("give exactly one of BUNDLE (a path or file:// URL) and --rollback")
    if bundle is not None and not bundle.startswith("file://"):
        checks.bundle_dir(Path(bundle), "BUNDLE")  # before any broker call: a typo costs nothing
    try:
        if rollback:
            made = lifecycle.rollback(settings, role)
            if made is None:
                click.echo("retired the challenger")
            else:
                click.echo(f"champion {made.version} announced again ({made.note})")
            return
        assert bundle is not None
        made = lifecycle.promote(bundle, settings, role, expect_sha256, share)
    except (lifecycle.PromotionRefused, KafkaUnavailable) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    click.echo(f"{made.role} {made.version} announced (sha256 {made.sha256[:12]}...)")


@click.command(help="List the announced models and what each worker runs.")
@bootstrap_option
def models(bootstrap: str | None) -> None:
    from stream.lifecycle import describe
    from stream.registry import read_state

    settings = load_settings(bootstrap=bootstrap)
    try:
        state = read_state(settings)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    for line in describe(state):
        click.echo(line)
