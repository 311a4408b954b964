"""`bstream explain --bundle B --events FILE`: explain one user window, readably (debugging).

Prints the score, then every event of the window (oldest first) with its signed weight and a bar,
then the top-k reasons exactly as a prediction would carry them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from schemas.formats import FORMAT_NAMES

BAR_WIDTH = 24
METHOD_NOTE = {
    "occlusion": "weight = score(full window) - score(window without the event)",
    "ig": "weight = integrated gradients over the event's tokens ([PAD] baseline)",
}


def user_window(
    events: Sequence[Mapping[str, Any]], user: str | None, size: int
) -> tuple[str, list[Mapping[str, Any]]]:
    """The newest `size` events of one user, time-sorted; the only user when `user` is None."""
    by_user: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for event in events:
        by_user[str(event["user_id"])].append(event)
    if not by_user:
        raise click.ClickException("no valid events in the file")
    if user is None:
        if len(by_user) > 1:
            some = ", ".join(sorted(by_user)[:3])
            raise click.UsageError(
                f"the file holds {len(by_user)} users; pick one with --user ({some}, ...)"
            )
        user = next(iter(by_user))
    if user not in by_user:
        raise click.ClickException(f"user {user!r} has no valid events in the file")
    window = sorted(by_user[user], key=lambda e: e["ts"])[-size:]
    return user, window


def bar(weight: float, scale: float) -> str:
    """'+++' for a push up, '---' for a push down, length proportional to |weight| / scale."""
    n = 0 if scale <= 0 else round(BAR_WIDTH * abs(weight) / scale)
    return ("+" if weight >= 0 else "-") * n


def age(ms: float) -> str:
    seconds = max(0.0, ms / 1000)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def render_lines(window: Sequence[Mapping[str, Any]], weights: Mapping[int, float]) -> list[str]:
    """One line per event: index, age, type, item, category, weight, bar ('not encoded' if cut)."""
    newest = window[-1]["ts"]
    scale = max((abs(w) for w in weights.values()), default=0.0)
    lines = [f"{'#':>3}  {'age':>8}  {'type':8}  {'item':14}  {'category':10}  {'weight':>8}"]
    for i, event in enumerate(window):
        head = (
            f"{i:>3}  {age(newest - event['ts']):>8}  {str(event['event_type']):8}  "
            f"{str(event['item_id'])[:14]:14}  {str(event.get('category') or '-')[:10]:10}  "
        )
        if i in weights:
            lines.append(head + f"{weights[i]:>+8.4f}  {bar(weights[i], scale)}")
        else:
            lines.append(head + f"{'':>8}  (not encoded: beyond max_len)")
    return lines


@click.command(help="Explain one user window: the score and which events moved it.")
@click.option(
    "--bundle",
    envvar="BSTREAM_MODEL",
    type=click.Path(path_type=Path),
    help="Model bundle directory  [default: $BSTREAM_MODEL]",
)
@click.option(
    "--events",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Event file holding the user's events.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_NAMES),
    default="jsonl",
    show_default=True,
    help="Format of --events.",
)
@click.option("--user", default=None, help="User id to explain (needed when the file has several).")
@click.option(
    "--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Reasons to list."
)
@click.option(
    "--method",
    type=click.Choice(["occlusion", "ig"]),
    default="occlusion",
    show_default=True,
    help="occlusion (drop each event) or ig (integrated gradients).",
)
@click.option("--label", default=None, help="Label to explain  [default: the bundle's first]")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Device (cpu: one window needs no GPU).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reasons as JSON only.")
def explain(
    bundle: Path | None,
    events: Path,
    fmt: str,
    user: str | None,
    top_k: int,
    method: str,
    label: str | None,
    device: str,
    as_json: bool,
) -> None:
    from stream.commands import checks

    bundle = checks.bundle_dir(bundle, "--bundle")
    checks.format_matches(events, fmt, "--format")
    from model.explain import Explainer, top_reasons
    from model.runtime import BundleError, Runtime
    from schemas.formats import FormatError, read_events

    try:
        runtime = Runtime.load(bundle, device=device)
        explainer = Explainer(runtime, method, label=label)
        size = runtime.encoder.cfg.window
        user, window = user_window(list(read_events(events, fmt)), user, size)
    except (BundleError, FormatError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    started = time.perf_counter()
    score = runtime.predict([window])[0][explainer.label]
    weights = explainer.weights([window], [score])[0]
    took_ms = 1000 * (time.perf_counter() - started)
    reasons = top_reasons(window, weights, top_k)
    if as_json:
        click.echo(json.dumps({"user": user, "score": score, "reasons": reasons}))
        return
    click.echo(
        f"bundle {runtime.version}  user {user}  window {len(window)} events "
        f"({len(weights)} encoded)"
    )
    click.echo(f"score {explainer.label} = {score:.4f}   method {method}   {took_ms:.0f} ms")
    click.echo(METHOD_NOTE[method])
    for line in render_lines(window, weights):
        click.echo(line)
    click.echo(f"top {len(reasons)} reasons:")
    for reason in reasons:
        click.echo(
            f"  #{reason['event_index']} {reason['event_type']} item {reason['item_id']} "
            f"{reason['weight']:+.4f}"
        )
