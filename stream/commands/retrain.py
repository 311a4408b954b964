"""`bstream retrain`: re-fine-tune the champion on recent behaviour; promote only a winner."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from schemas.formats import FORMAT_NAMES
from stream.commands.common import bootstrap_option, load_settings
from stream.kafka import KafkaUnavailable


@click.command(help="Fine-tune the champion on recent events; announce the candidate if it wins.")
@bootstrap_option
@click.option(
    "--source",
    type=click.Choice(["events", "outcomes"]),
    default="events",
    show_default=True,
    help="events: every event between the times, labelled by the training rule; outcomes: the "
    "windows the workers scored (outcomes topic), with their live labels.",
)
@click.option(
    "--events-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read events from this file instead of the events topic.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_NAMES),
    default="jsonl",
    show_default=True,
    help="Format of --events-file.",
)
@click.option("--since-ms", type=int, help="Oldest event time to use (ms since the epoch).")
@click.option("--until-ms", type=int, help="Event times before this (ms since the epoch).")
@click.option(
    "--last-hours",
    type=click.FloatRange(min=0.01),
    help="Only events of the last H hours (event time; for schedules).",
)
@click.option(
    "--champion",
    "champion_dir",
    type=click.Path(path_type=Path),
    help="Champion: the registry's one  [default: $BSTREAM_MODEL if the registry has none]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Candidate bundle directory  [OUT_ROOT/<UTC time>]",
)
@click.option(
    "--out-root",
    type=click.Path(path_type=Path),
    default=Path(".bstream/retrain"),
    show_default=True,
    help="Without --out: the candidate goes to OUT_ROOT/<UTC time> (never over a bundle).",
)
@click.option(
    "--budget-min",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Fine-tuning budget in minutes.",
)
@click.option(
    "--margin",
    type=float,
    default=0.01,
    show_default=True,
    help="PR-AUC gain needed: challenger on the point, champion on the 95% CI's lower end.",
)
@click.option(
    "--horizon-min",
    type=click.FloatRange(min=0.1),
    help="Label horizon in minutes  [default: the champion's horizon]",
)
@click.option(
    "--max-train",
    type=click.IntRange(min=10),
    default=15000,
    show_default=True,
    help="Most training windows per epoch.",
)
@click.option(
    "--epochs",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Most passes over the training windows (early stopping and the budget may end sooner).",
)
@click.option(
    "--linear",
    type=click.Choice(["refit", "keep"]),
    default="refit",
    show_default=True,
    help="A fused champion's linear parts: re-fitted on the new data first, or kept.",
)
@click.option(
    "--on-drift",
    is_flag=True,
    help="First wait until a worker's PSI alarm fires for the champion it serves (--metrics-url).",
)
@click.option(
    "--metrics-url",
    "metrics_urls",
    multiple=True,
    help="A worker's /metrics URL to watch with --on-drift (repeatable).",
)
@click.option(
    "--drift-poll-s",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between two reads of the metrics with --on-drift.",
)
@click.option(
    "--drift-wait-min",
    type=click.FloatRange(min=0),
    help="With --on-drift, give up after this long (exit 0, nothing retrained)  [default: wait]",
)
@click.option(
    "--announce/--report-only",
    default=True,
    show_default=True,
    help="Announce a winning candidate, or only report the decision.",
)
def retrain(
    bootstrap: str | None,
    source: str,
    events_file: Path | None,
    fmt: str,
    since_ms: int | None,
    until_ms: int | None,
    last_hours: float | None,
    champion_dir: Path | None,
    out: Path | None,
    out_root: Path,
    budget_min: float,
    margin: float,
    horizon_min: float | None,
    max_train: int,
    epochs: float,
    linear: str,
    on_drift: bool,
    metrics_urls: tuple[str, ...],
    drift_poll_s: float,
    drift_wait_min: float | None,
    announce: bool,
) -> None:
    from model.bundle import BundleError
    from model.retrain import REPORT, retrain_data
    from schemas.formats import FormatError
    from stream import lifecycle
    from stream.privacy import PrivacyError
    from stream.registry import read_state

    if on_drift and not metrics_urls:
        raise click.UsageError("--on-drift needs --metrics-url (a worker's /metrics)")
    settings = load_settings(bootstrap=bootstrap)
    trigger: dict[str, object] = {}
    if on_drift:
        from stream.drift_trigger import wait_for_alarm

        wait_s = drift_wait_min * 60 if drift_wait_min is not None else None
        alarm = wait_for_alarm(metrics_urls, drift_poll_s, wait_s)
        if alarm is None:
            click.echo(json.dumps({"decision": "none", "reason": "no drift alarm"}))
            return
        click.echo(
            f"drift alarm at {alarm.url}: champion {alarm.model_version}, PSI over the alarm "
            f"threshold for {', '.join(alarm.features)}",
            err=True,
        )
        trigger = {"drift_alarm": alarm.model_version, "features": list(alarm.features)}
    if last_hours is not None:  # after any wait: the newest hours at the time of the retrain
        since_ms = int(time.time() * 1000 - last_hours * 3_600_000)
    try:
        state = read_state(settings)
        if champion_dir is None:
            if state.champion is not None:
                champion_dir = state.champion.path
            elif settings.model is not None:
                champion_dir = settings.model
            else:
                raise click.ClickException("no champion: promote one or pass --champion")
        out = out or out_root / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        if source == "outcomes":
            data = outcomes_data(
                settings, champion_dir, since_ms, until_ms, horizon_min, events_file, fmt
            )
        else:
            events = read_source_events(settings, events_file, fmt, since_ms, until_ms)
            data = label_for(champion_dir, events, horizon_min)
        result = retrain_data(
            data,
            champion_dir,
            out,
            budget_min,
            margin,
            max_train=max_train,
            epochs=epochs,
            linear=linear,
        )
        decision = result.decision if announce else REPORT
        version = json.loads((result.candidate / "bundle.json").read_text())["version"]
        figures = {
            **result.figures,
            "suggested": result.decision,
            "candidate": str(result.candidate),
            **({"trigger": trigger} if trigger else {}),
        }
        if decision != REPORT:
            lifecycle.promote(str(result.candidate), settings, decision, state=state)
        lifecycle.record_decision(settings, f"retrain:{decision}", version, figures)
    except (BundleError, FormatError, ValueError, KafkaUnavailable, PrivacyError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    click.echo(json.dumps({"decision": decision, "version": version, **figures}))


def read_source_events(
    settings: Any, events_file: Path | None, fmt: str, since_ms: int | None, until_ms: int | None
) -> list[dict[str, Any]]:
    """Events of the file or of the events topic with since <= ts < until."""
    from schemas.formats import read_events
    from stream import lifecycle

    if events_file is None:
        events = lifecycle.read_events_topic(settings, since_ms, until_ms)
    else:
        events = [
            e
            for e in read_events(events_file, fmt)
            if (since_ms is None or e["ts"] >= since_ms)
            and (until_ms is None or e["ts"] < until_ms)
        ]
    if not events:
        raise click.ClickException("no events to retrain on")
    return events


def outcomes_data(
    settings: Any,
    champion_dir: Path,
    since_ms: int | None,
    until_ms: int | None,
    horizon_min: float | None,
    events_file: Path | None = None,
    fmt: str = "jsonl",
) -> Any:
    """The outcomes with since <= last_event_ts < until, and their windows from the events topic
    (or the file)."""
    from model.bundle import validate_bundle
    from model.retrain import champion_horizon
    from stream.commands.monitor import read_topic
    from stream.privacy import pseudonymizer_from_settings
    from stream.retrain_data import outcome_data

    pseudo = pseudonymizer_from_settings(settings)  # the workers' key: outcomes name pseudonyms
    meta = validate_bundle(champion_dir)
    outcomes = [
        o
        for o in read_topic(settings, settings.outcomes_topic)
        if isinstance(o, dict)
        and (since_ms is None or o.get("last_event_ts", -1) >= since_ms)
        and (until_ms is None or o.get("last_event_ts", -1) < until_ms)
    ]
    if not outcomes:
        raise click.ClickException("no outcomes to retrain on")
    newest = max(int(o["last_event_ts"]) for o in outcomes)
    oldest = min(int(o["last_event_ts"]) for o in outcomes)
    # the windows reach back at most window_max_age before the oldest prediction point
    history_ms = int(settings.window_max_age_s * 1000)
    events = read_source_events(settings, events_file, fmt, oldest - history_ms, newest + 1)
    horizon = horizon_min if horizon_min is not None else champion_horizon(meta)
    return outcome_data(outcomes, events, pseudo, list(meta.labels), horizon)


def label_for(champion_dir: Path, events: list[dict[str, Any]], horizon_min: float | None) -> Any:
    """Events labelled by the training rule with the champion's labels and horizon."""
    from model.bundle import validate_bundle
    from model.data import label_events
    from model.retrain import champion_horizon

    meta = validate_bundle(champion_dir)
    horizon = horizon_min if horizon_min is not None else champion_horizon(meta)
    return label_events(events, horizon, tuple(meta.labels))
