"""`bstream erase USER_ID`: ask the workers to delete a user's window, and wait for their answer.

The request carries the raw user id on the control topic (this client holds no HMAC key); each
worker pseudonymises it, deletes the window if it owns it, and confirms for its partitions.
"""

from __future__ import annotations

import time
from typing import Any

import click

from stream.commands.common import bootstrap_option, load_settings
from stream.control import (
    HORIZON_S,
    BadControlRecord,
    EraseDone,
    EraseRequest,
    covered,
    encode_record,
    erase_request,
    parse_record,
    record_key,
)
from stream.kafka import KafkaUnavailable, require_topic
from stream.kafka.clients import Sender, assigned_reader
from stream.settings import Settings


def span(partitions: set[int]) -> str:
    """Compact partition list: {0, 1, 2, 5} -> '0-2,5'."""
    parts: list[list[int]] = []
    run: list[int] = []
    for p in sorted(partitions):
        if run and p != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(p)
    if run:
        parts.append(run)
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in parts)


def summary(request_id: str, answers: list[EraseDone], partitions: int) -> str:
    """One line saying what the workers did for a fully confirmed request."""
    user, key_id = answers[0].user, answers[0].key_id
    who = f"user {user}" + (f" (key_id {key_id})" if key_id else "")
    erasers = sorted({a.worker for a in answers if a.erased})
    done = f"partitions {span(covered(answers))} of {partitions} confirmed (request {request_id})"
    if erasers:
        return f"erased: window of {who} deleted by {', '.join(erasers)}; {done}"
    return f"nothing to erase: no window held for {who}; {done}"


def _send(settings: Settings, request: EraseRequest) -> Any:
    """Send the request; returns a consumer positioned before it on every control partition."""
    topic = settings.control_topic
    try:
        # Tansu under-reports high watermarks by up to one batch: start a little early, filter.
        reader = assigned_reader(settings, topic, "bstream-erase", "end", back=1)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    failures: list[str] = []
    sender = Sender(settings, lambda err: failures.append(err) if err else None)
    refused = sender.send(topic, record_key(request), encode_record(request))
    if refused or sender.flush(15) or failures:
        reader.close()
        reason = refused or (failures or ["timed out"])[0]
        raise click.ClickException(f"cannot send the erase request to {topic!r}: {reason}")
    return reader


def _await_answers(
    reader: Any, request_id: str, partitions: int, timeout: float
) -> list[EraseDone]:
    """Confirmations for the request until they cover every events partition or time runs out."""
    answers: list[EraseDone] = []
    deadline = time.monotonic() + timeout
    while covered(answers) < set(range(partitions)) and time.monotonic() < deadline:
        for message in reader.consume(100, 0.2):
            if message.error():
                continue
            try:
                record = parse_record(message.value())
            except BadControlRecord:
                continue
            if isinstance(record, EraseDone) and record.request_id == request_id:
                answers.append(record)
    return answers


@click.command(help="Erase a user's window (right to erasure) via the control topic.")
@click.argument("user_id")
@bootstrap_option
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the workers confirm for every events partition.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the confirmations.",
)
def erase(user_id: str, bootstrap: str | None, wait: bool, timeout: float) -> None:
    settings = load_settings(bootstrap=bootstrap)
    if not user_id.strip():
        raise click.UsageError("USER_ID must not be empty")
    try:
        partitions = require_topic(settings, settings.events_topic)
        require_topic(settings, settings.control_topic)
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    request = erase_request(user_id, now_ms=int(time.time() * 1000))
    reader = _send(settings, request)
    try:
        click.echo(f"erase request {request.request_id} sent to {settings.control_topic}", err=True)
        if not wait:
            return
        answers = _await_answers(reader, request.request_id, partitions, timeout)
    finally:
        reader.close()
    missing = set(range(partitions)) - covered(answers)
    if missing:
        raise click.ClickException(
            f"not confirmed within {timeout:g}s: no worker answered for partitions {span(missing)}"
            f" (request {request.request_id}); running workers apply it for up to "
            f"{HORIZON_S // 60} minutes, including ones that start later"
        )
    click.echo(summary(request.request_id, answers, partitions))
