"""The explanation step (stream.inference) with the real tiny model and explainer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from model.explain import Explainer
from schemas.validation import validate_prediction
from stream.inference import Inference
from stream.intake import Target
from stream.metrics import Metrics
from stream.settings import Settings
from stream.windows import Window


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Any:
    from model.runtime import Runtime

    return Runtime.load(tiny_bundle, device="cpu")


def make_worker(runtime: Any, explainer: Any, **settings: Any) -> Inference:
    return Inference(Settings(**settings), Metrics(), runtime, "k1", explainer)


def target(user: bytes, n: int) -> Target:
    types = (0, 2, 1, 4)
    entries = tuple((100 + i, types[i % 4], f"it{i}", None, None, f"e{i}") for i in range(n))
    return Target(user, Window(0, 0, entries), arrival=0.0)  # type: ignore[arg-type]


def predictions(worker: Inference, targets: list[Target]) -> list[dict[str, Any]]:
    records = asyncio.run(worker.predict(targets))
    assert records is not None
    return [orjson.loads(r.value or b"") for r in records]


def test_explain_all_attaches_reasons_that_point_at_window_events(runtime: Any) -> None:
    worker = make_worker(runtime, Explainer(runtime), explain="all", explain_top_k=2)
    targets = [target(b"aa", 3), target(b"bb", 1)]

    out = predictions(worker, targets)

    assert [validate_prediction(p) for p in out] == [None, None]
    assert [len(p["reasons"]) for p in out] == [2, 1]
    for p, t in zip(out, targets, strict=True):
        events = t.window.model_events()
        for r in p["reasons"]:
            event = events[r["event_index"]]
            assert (r["event_type"], r["item_id"]) == (event["event_type"], event["item_id"])


@pytest.mark.parametrize(
    "policy", [{"explain": "off"}, {"explain": "top-scores", "explain_min_score": 1.0}]
)
def test_policies_that_select_nobody_leave_predictions_without_reasons(
    runtime: Any, policy: dict[str, Any]
) -> None:
    worker = make_worker(runtime, Explainer(runtime), **policy)

    out = predictions(worker, [target(b"aa", 3)])

    assert "reasons" not in out[0]


def test_a_failing_explainer_costs_only_the_reasons(tiny_bundle: Path) -> None:
    from model.runtime import Runtime

    int8 = Runtime.load(tiny_bundle, device="cpu", quantize=True)
    worker = make_worker(int8, Explainer(int8, method="ig"), explain="all")  # ig needs TorchScript

    out = predictions(worker, [target(b"aa", 3)])

    assert validate_prediction(out[0]) is None and "reasons" not in out[0]
    assert worker.metrics.inference_failures._value.get() == 0
