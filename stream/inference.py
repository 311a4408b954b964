"""The model step of a job: windows -> scores (and reasons) on the inference thread, with retries.

One thread runs the model, off the event loop; the worker awaits it. The worker may `start` a
batch's call while the one before it still runs, so the thread goes from call to call with no wait
for the event loop in between. A batch whose every attempt fails gives None, and the worker
dead-letters its events instead (reason `inference_failed`).
Reasons for the windows the explain policy picks run in one batch after the scores; a failure
costs only the reasons.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from stream.clock import now_ms
from stream.intake import Job, Target, model_inputs
from stream.metrics import Metrics
from stream.outputs import OutRecord, prediction_records, should_explain
from stream.settings import Settings

log = logging.getLogger("bstream.worker")
INFERENCE_RETRIES = 2
RETRY_BACKOFF_S = 0.2
Scores = list[dict[str, float]]  # one {label: probability} per window


class Model(Protocol):
    """What the worker needs from model.runtime.Runtime."""

    version: str

    def predict(self, windows: Sequence[Sequence[Any]]) -> Scores: ...


class Explaining(Protocol):
    """What the worker needs from model.explain.Explainer."""

    label: str

    def explain(
        self, windows: Sequence[Any], scores: Sequence[Any] | None = None, top_k: int = 3
    ) -> list[list[dict[str, Any]]]: ...


def timed(predict: Callable[[Any], Scores], inputs: Any) -> tuple[Scores, float]:
    """`predict(inputs)` and its seconds, timed on the thread that runs it (not its wait)."""
    started = time.perf_counter()
    scores = predict(inputs)
    return scores, time.perf_counter() - started


@dataclass
class Call:
    """A batch's model call on the inference thread: it runs once the calls before it are done."""

    inputs: list[list[dict[str, Any]]]
    model: Model
    result: asyncio.Future[tuple[Scores, float]]


@dataclass
class Queued:
    """A job waiting for the worker's job runner, with its model call if already started."""

    job: Job
    call: Call | None = None


def _retrieve(result: asyncio.Future[Any]) -> None:
    if not result.cancelled():
        result.exception()  # a call left behind by a stopping worker logs nothing at exit


class Inference:
    """The served model (swapped between batches by stream.modelswap) on its one thread."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        model: Model,
        key_id: str | None,
        explainer: Explaining | None = None,
    ) -> None:
        self.settings, self.metrics, self.model, self.key_id = settings, metrics, model, key_id
        self.explainer = explainer if settings.explain != "off" else None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bstream-infer")
        self.rng = random.Random()  # the sample-rate explain policy

    def start(self, targets: list[Target]) -> Call:
        """Queue the model call for these targets behind the calls already on the thread."""
        inputs = model_inputs(targets)
        model = self.model  # one model per batch: a hot swap takes effect from the next batch
        return Call(inputs, model, self._submit(model, inputs))

    def _submit(self, model: Model, inputs: list[list[dict[str, Any]]]) -> asyncio.Future[Any]:
        result = asyncio.get_running_loop().run_in_executor(
            self.executor, timed, model.predict, inputs
        )
        result.add_done_callback(_retrieve)
        return result

    async def predict(
        self, targets: list[Target], call: Call | None = None
    ) -> list[OutRecord] | None:
        """Prediction records for the targets (`call`: already started), or None if all failed."""
        call = call or self.start(targets)
        for attempt in range(INFERENCE_RETRIES + 1):
            try:
                if attempt:
                    call.result = self._submit(call.model, call.inputs)
                scores, seconds = await call.result
                self.metrics.inference_seconds.observe(seconds)
                reasons = await self.reasons(call.inputs, scores)
                return prediction_records(
                    targets,
                    scores,
                    call.model.version,
                    self.key_id,
                    now_ms=now_ms(),
                    now_mono=time.monotonic(),
                    reasons=reasons,
                )
            except Exception as exc:  # noqa: BLE001 - any model failure takes the retry/DLQ path
                self.metrics.inference_failures.inc()
                log.warning(
                    "inference failed for a batch of %d windows (attempt %d/%d): %s: %s",
                    len(targets),
                    attempt + 1,
                    INFERENCE_RETRIES + 1,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                if attempt < INFERENCE_RETRIES:
                    await asyncio.sleep(RETRY_BACKOFF_S * 2**attempt)
        return None

    async def reasons(
        self, inputs: list[list[dict[str, Any]]], scores: list[dict[str, float]]
    ) -> dict[int, list[dict[str, Any]]]:
        """Reasons for the windows the explain policy picks (by index), computed in one batch."""
        s, explainer = self.settings, self.explainer
        if explainer is None:
            return {}
        picked = [
            i
            for i, score in enumerate(scores)
            if should_explain(
                s.explain,
                score.get(explainer.label, 0.0),
                s.explain_min_score,
                s.explain_sample_rate,
                self.rng,
            )
        ]
        if not picked or len(scores) != len(inputs):
            return {}
        windows, picked_scores = [inputs[i] for i in picked], [scores[i] for i in picked]
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self.executor, explainer.explain, windows, picked_scores, s.explain_top_k
            )
        except Exception as exc:  # noqa: BLE001 - predictions still go out, without reasons
            log.warning(
                "explanations failed for %d windows: %s: %s",
                len(picked),
                type(exc).__name__,
                str(exc)[:200],
            )
            return {}
        return dict(zip(picked, found, strict=True))
