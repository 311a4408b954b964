"""`bstream simulate --users N --out PATH`: synthetic behaviour as UserEvent JSONL, sorted by ts."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click
import orjson

from stream.commands import checks
from stream.simulate import SimConfig, simulate_events


@click.command(help="Write synthetic behaviour events as JSONL (sorted by time; '-' for stdout).")
@click.option("--users", type=click.IntRange(min=1), required=True, help="Number of users.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, allow_dash=True),
    required=True,
    help="JSONL file to write, or - for stdout.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same file.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar  [default: on a terminal]"
)
@click.option(
    "--drift-at",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Change behaviour (category mix, funnel) after this share of the days (docs: drift).",
)
def simulate(
    users: int, out: str, seed: int, progress: bool | None, drift_at: float | None
) -> None:
    if out != "-":
        checks.out_file(Path(out), "--out")
    events = simulate_events(
        users,
        seed,
        SimConfig(drift_at=drift_at),
        progress=progress if progress is not None else sys.stderr.isatty(),
    )
    payload = b"".join(orjson.dumps(event) + b"\n" for event in events)
    if out == "-":
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    counts = Counter(event["event_type"] for event in events)
    mix = " ".join(
        f"{name}={counts[name]}" for name in ("view", "click", "fav", "cart", "purchase")
    )
    click.echo(f"wrote {len(events)} events for {users} users to {path} ({mix})")
