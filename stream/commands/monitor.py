"""`bstream monitor`: live accuracy and calibration per model version, from the outcomes topic."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import orjson

from stream.commands.common import bootstrap_option, load_settings
from stream.kafka import KafkaUnavailable, require_topic
from stream.kafka.clients import assigned_reader

COLUMNS = ("n", "auc", "pr_auc", "logloss", "ece", "base_rate", "delay_p50_s", "delay_p95_s")


def read_topic(settings: Any, topic: str, idle_s: float = 3.0, limit_s: float = 600.0) -> list:
    """Every record of `topic` from the beginning, until none came for `idle_s` seconds."""
    require_topic(settings, topic)
    consumer = assigned_reader(settings, topic, "bstream-monitor")
    values: list[Any] = []
    quiet_since = started = time.monotonic()
    try:
        while time.monotonic() - quiet_since < idle_s and time.monotonic() - started < limit_s:
            batch = [m for m in consumer.consume(10_000, 0.5) if not m.error()]
            if batch:
                quiet_since = time.monotonic()
                values += [orjson.loads(m.value() or b"null") for m in batch]
    finally:
        consumer.close()
    return values


def quality_table(outcomes: list[dict[str, Any]], label: str, window: int) -> list[str]:
    """One row per model version and scope: the same figures the worker's gauges show."""
    from stream.online_metrics import OnlineQuality

    per_version: dict[str, OnlineQuality] = {}
    seen: set[str] = set()
    for o in outcomes:
        if o["outcome_id"] in seen or label not in o["labels"]:
            continue
        seen.add(o["outcome_id"])
        online = per_version.setdefault(o["model_version"], OnlineQuality(window))
        online.add(o["scores"][label], o["labels"][label], o["delay_ms"])
    header = f"{'model_version':<44} {'scope':<11} " + " ".join(f"{c:>11}" for c in COLUMNS)
    rows = [header]
    for version, online in sorted(per_version.items()):
        for scope, figures in online.summary().items():
            cells = " ".join(
                f"{figures[c]:>11.0f}" if c == "n" else f"{figures.get(c, float('nan')):>11.4f}"
                for c in COLUMNS
            )
            rows.append(f"{version[:44]:<44} {scope:<11} {cells}")
    return rows


@click.command(help="Print live accuracy and calibration per model version from the outcomes.")
@bootstrap_option
@click.option("--label", default="purchase", show_default=True, help="Label to score.")
@click.option("--window", type=click.IntRange(min=10), help="Recent outcomes  [5000]")
@click.option(
    "--check",
    "check_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also compare every outcome with the offline label function on this event file.",
)
@click.option("--format", "fmt", default="jsonl", show_default=True, help="Format of --check.")
@click.option("--labels", default="purchase", show_default=True, help="Labels to compare.")
@click.option("--horizon-min", default=30.0, show_default=True, help="Horizon for --check.")
@click.option("--idle", default=3.0, show_default=True, help="Stop after this long without data.")
def monitor(
    bootstrap: str | None,
    label: str,
    window: int | None,
    check_file: Path | None,
    fmt: str,
    labels: str,
    horizon_min: float,
    idle: float,
) -> None:
    settings = load_settings(bootstrap=bootstrap, quality_window=window)
    try:
        outcomes = read_topic(settings, settings.outcomes_topic, idle)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(quality_table(outcomes, label, settings.quality_window)))
    if check_file is None:
        return
    from schemas.formats import read_events
    from stream.outcome_check import check_outcomes, offline_examples
    from stream.privacy import PrivacyError, pseudonymizer_from_settings

    try:
        pseudo = pseudonymizer_from_settings(settings)
    except PrivacyError as exc:
        raise click.ClickException(str(exc)) from None
    names = [n.strip() for n in labels.split(",") if n.strip()]
    horizon_ms = int(horizon_min * 60_000)
    expected, times = offline_examples(read_events(check_file, fmt), pseudo, horizon_ms, names)
    try:
        predictions = read_topic(settings, settings.predictions_topic, idle)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    report = check_outcomes(outcomes, expected, names, predictions, times, horizon_ms)
    click.echo("\n".join(report.lines()))
