"""The worker's inference step with the real tiny model: predictions, and retry-then-give-up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from schemas.validation import validate_prediction
from stream import worker as worker_module
from stream.app import StreamApp
from stream.batching import Target
from stream.metrics import Metrics
from stream.privacy import Pseudonymizer
from stream.settings import Settings
from stream.windows import Window
from stream.worker import StreamWorker


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Any:
    from model.runtime import Runtime

    return Runtime.load(tiny_bundle, device="cpu")


def make_worker(runtime: Any) -> StreamWorker:
    pseudo = Pseudonymizer(b"a-test-key-0123456789", "k1")
    return StreamWorker(Settings(), cast(StreamApp, None), runtime, pseudo, Metrics())


def target(user: bytes, *timestamps: Any) -> Target:
    entries = tuple((ts, 0, f"i{i}", None, None, f"e{i}") for i, ts in enumerate(timestamps))
    return Target(user, Window(0, 0, entries), arrival=0.0)  # type: ignore[arg-type]


def test_predict_builds_one_valid_prediction_per_target(runtime: Any) -> None:
    w = make_worker(runtime)

    records = asyncio.run(w.predict([target(b"aa", 1, 2), target(b"bb", 5)]))

    assert records is not None and [r.key for r in records] == [b"aa", b"bb"]
    predictions = [orjson.loads(r.value or b"") for r in records]
    assert all(validate_prediction(p) is None for p in predictions)
    assert [(p["window_size"], p["last_event_ts"]) for p in predictions] == [(2, 2), (1, 5)]
    assert w.metrics.inference_seconds._sum.get() > 0


def test_failed_inference_is_retried_then_given_up(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "RETRY_BACKOFF_S", 0.01)
    w = make_worker(runtime)

    records = asyncio.run(
        w.predict([target(b"aa", "not-a-timestamp")])
    )  # the model raises TypeError

    assert records is None
    assert w.metrics.inference_failures._value.get() == worker_module.INFERENCE_RETRIES + 1
