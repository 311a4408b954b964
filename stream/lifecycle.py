"""Promotion: validate a bundle for the running workers, then announce it on the registry topic.

A bundle is announced only after it passed, on this machine, every check a worker would make plus
the export parity check: bundle.json and the sha256 of its files, an optional expected sha256,
load and warm-up on the CPU, TorchScript-vs-eager parity, labels equal to the champion's (consumers
read the scores by label) and an encoder window no longer than the workers' windows.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from model.bundle import MODEL_FILE, BundleError, sha256_file, validate_bundle
from schemas.validation import decode_event
from stream.kafka import check_reachable
from stream.kafka.clients import TopicReader
from stream.kafka.topics import create_topics, default_topics
from stream.registry import (
    CHALLENGER,
    CHAMPION,
    Announcement,
    RegistryError,
    RegistryState,
    RegistryWriter,
    champion_after,
    decision_key,
    decision_record,
    encode,
    location_path,
    now_ms,
    read_state,
    rollback_of,
    who,
)
from stream.settings import Settings


class PromotionRefused(ValueError):
    """The bundle may not be announced (the message says why, in one line)."""


def check_compatible(
    labels: list[str], window: int, settings: Settings, champion: Announcement | None
) -> None:
    """Labels equal to the champion's and an encoder window the workers' windows can fill."""
    if champion is not None and sorted(labels) != sorted(champion.labels):
        raise PromotionRefused(
            f"incompatible labels: the bundle predicts {labels}, "
            f"the champion {champion.version} predicts {champion.labels}"
        )
    if window > settings.window_size:
        raise PromotionRefused(
            f"incompatible encoding: the bundle reads {window} events per window, "
            f"the workers keep {settings.window_size} (window_size)"
        )


def validate(
    location: str,
    settings: Settings,
    role: str,
    champion: Announcement | None,
    expect_sha256: str | None = None,
    share: float | None = None,
) -> Announcement:
    """Every check, then the announcement to publish (PromotionRefused says what failed)."""
    # torch loads here, on purpose: reading and rolling back the registry need no model
    from model.export import PARITY_TOL, max_parity_diff, parity_batches
    from model.model import ModelConfig
    from model.runtime import Runtime, eager_probabilities

    try:
        path = location_path(location)
        meta = validate_bundle(path)  # bundle.json, files present, sha256 of listed files
        digest = sha256_file(path / MODEL_FILE)
    except (BundleError, RegistryError) as exc:
        raise PromotionRefused(str(exc).splitlines()[0]) from None
    if expect_sha256 is not None and digest != expect_sha256.lower():
        raise PromotionRefused(
            f"sha256 mismatch: {path / MODEL_FILE} has {digest[:12]}..., "
            f"expected {expect_sha256[:12]}..."
        )
    window = int(meta.encoding.get("window", 50))
    check_compatible(list(meta.labels), window, settings, champion)
    try:
        runtime = Runtime.load(path, device="cpu")  # loads and warms up, like a worker
        vocab = int(meta.model["bert"]["vocab_size"])
        script: Any = runtime.module  # on the CPU: the TorchScript module itself
        fusion = None if "members" in meta.model else ModelConfig.from_dict(meta.model)
        batches = parity_batches(vocab, [16], fusion=fusion.fusion_config() if fusion else None)
        diff = max_parity_diff(script, eager_probabilities(script, meta), batches)
    except (BundleError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PromotionRefused(f"the bundle does not run: {reason}") from None
    if not diff < PARITY_TOL:
        raise PromotionRefused(f"parity check failed: max |dp| = {diff:.3g} >= {PARITY_TOL}")
    resolved = location if location.startswith("file:") else str(path.resolve())
    return Announcement(
        role=role,
        name=path.name,
        version=meta.version,
        location=resolved,
        sha256=digest,
        labels=list(meta.labels),
        window=window,
        promoted_by=who(),
        promoted_at=now_ms(),
        share=share if role == CHALLENGER else None,
    )


def promote(
    location: str,
    settings: Settings,
    role: str = CHAMPION,
    expect_sha256: str | None = None,
    share: float | None = None,
    note: str = "",
    state: RegistryState | None = None,
) -> Announcement:
    """Validate, then announce; returns what was announced."""
    state = state if state is not None else read_state(settings)
    made = validate(location, settings, role, state.champion, expect_sha256, share)
    made = replace(made, note=note)
    if role == CHAMPION:
        made = champion_after(state.champion, made)
    announce(settings, made)
    return made


def announce(settings: Settings, made: Announcement) -> None:
    """Write an announcement (the topic is created if missing)."""
    create_topics(settings, [s for s in default_topics(settings) if s.compact])
    RegistryWriter(settings).send(made.role.encode(), encode(made))


def rollback(settings: Settings, role: str = CHAMPION) -> Announcement | None:
    """Re-announce the previous champion (checked on disk first); retire the challenger."""
    state = read_state(settings)
    writer = RegistryWriter(settings)
    if role == CHALLENGER:
        if state.challenger is None:
            raise PromotionRefused("no challenger announced: nothing to retire")
        writer.send(CHALLENGER.encode(), None)
        return None
    try:
        previous = rollback_of(state.champion, who(), now_ms())
    except RegistryError as exc:
        raise PromotionRefused(str(exc)) from None
    model = previous.path / MODEL_FILE
    if not model.is_file() or sha256_file(model) != previous.sha256:
        raise PromotionRefused(f"previous champion {previous.version} changed or missing: {model}")
    writer.send(CHAMPION.encode(), encode(previous))
    return previous


def record_decision(settings: Settings, action: str, version: str, figures: dict[str, Any]) -> None:
    """Write one lifecycle decision (e.g. a retrain outcome) with its figures."""
    # a report-only retrain may be the first writer (no promotion created the topic yet)
    create_topics(settings, [s for s in default_topics(settings) if s.compact])
    at = now_ms()
    RegistryWriter(settings).send(
        decision_key(version, at), decision_record(action, version, figures, at)
    )


def describe(state: RegistryState) -> list[str]:
    """`bstream models` lines: announced models, then what each worker runs, then decisions."""
    lines = []
    for made in (state.champion, state.challenger):
        if made is None:
            continue
        share = f" share={made.share:g}" if made.share is not None else ""
        note = f" ({made.note})" if made.note else ""
        lines.append(
            f"{made.role:10} {made.version}  sha256={made.sha256[:12]}  {made.location}  "
            f"by {made.promoted_by} at {_iso(made.promoted_at)}{share}{note}"
        )
        if made.role == CHAMPION and made.history:
            lines.append(f"{'':10} earlier: {', '.join(h.version for h in made.earlier())}")
    if not lines:
        lines.append("no model announced (workers run their --model bundle)")
    for name, status in sorted(state.workers.items()):
        error = f"  last failed load: {status['error']}" if status.get("error") else ""
        challenger = status.get("challenger") or "-"
        lines.append(
            f"worker     {name.removeprefix('worker/')}  champion={status.get('champion')}  "
            f"challenger={challenger}  at {_iso(int(status.get('at', 0)))}{error}"
        )
    for decision in state.decisions[-10:]:
        lines.append(
            f"decision   {_iso(int(decision.get('at', 0)))} {decision.get('action')} "
            f"{decision.get('version')}  {decision.get('figures')}"
        )
    return lines


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def read_events_topic(
    settings: Settings, since_ms: int | None = None, until_ms: int | None = None
) -> list[dict[str, Any]]:
    """Valid events of the events topic with since <= ts < until, read up to its current end."""
    check_reachable(settings.bootstrap)
    # a busy broker can take a while to answer metadata: wait 30 s, then fail in one line
    reader = TopicReader(settings, settings.events_topic, f"{settings.app_id}-retrain", timeout=30)
    events: list[dict[str, Any]] = []
    try:
        while not reader.caught_up():
            for _key, value in reader.poll(1.0):
                event = decode_event(value or b"", settings.max_event_bytes).event
                if event is None:
                    continue
                if (since_ms is None or event["ts"] >= since_ms) and (
                    until_ms is None or event["ts"] < until_ms
                ):
                    events.append(event)
    finally:
        reader.close()
    return events
