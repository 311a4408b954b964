"""Prediction v1 records: build them (pure), then publish and wait for the broker's acknowledgement.

>>> from stream.windows import Window
>>> p = build_prediction("u1", "k1", {"purchase": 0.2}, "v1",
...                      Window(0, 0, ((5, 0, "i", None, None, "e"),)), latency_ms=3.0, now_ms=9)
>>> p["last_event_ts"], p["window_size"], p["key_id"]
(5, 1, 'k1')
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from stream.validation import validate_prediction
from stream.windows import Window


class InvalidPrediction(ValueError):
    """The model produced something that is not a valid Prediction v1 (e.g. NaN scores)."""


def _probability(label: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidPrediction(f"score {label!r} is not finite")
    return min(1.0, max(0.0, float(value)))


def build_prediction(
    user: str,
    key_id: str | None,
    scores: Mapping[str, float],
    model_version: str,
    window: Window,
    *,
    latency_ms: float,
    now_ms: int,
    reasons: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One Prediction v1 for a user's window; raises InvalidPrediction if it would not validate."""
    prediction: dict[str, Any] = {"user": user}
    if key_id is not None:
        prediction["key_id"] = key_id
    prediction.update(
        scores={label: _probability(label, v) for label, v in scores.items()},
        model_version=model_version,
        window_size=len(window.entries),
        last_event_ts=window.last_ts,
        predicted_at=now_ms,
        latency_ms=round(max(0.0, latency_ms), 3),
    )
    if reasons:
        prediction["reasons"] = [dict(r) for r in reasons]
    invalid = validate_prediction(prediction)
    if invalid is not None:
        raise InvalidPrediction(f"{invalid.code}: {invalid.message}")
    return prediction


def encode_prediction(prediction: Mapping[str, Any]) -> bytes:
    """Prediction JSON bytes for the predictions topic."""
    return orjson.dumps(prediction)


class Sender(Protocol):
    """The part of a Faust topic that publishing needs (`faust.Topic.send`)."""

    async def send(
        self, *, key: Any = ..., value: Any = ..., headers: Any = ..., force: bool = ...
    ) -> Any: ...


async def send_all(
    topic: Sender,
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]],
) -> None:
    """Send (key, value, headers) records; return once the broker acknowledged them all."""
    pending: list[Awaitable[Any]] = []
    for key, value, headers in records:
        # force=True: publish now, never as a Faust "attachment" deferred to the next commit
        pending.append(await topic.send(key=key, value=value, headers=headers, force=True))
    if pending:
        await asyncio.gather(*pending)
